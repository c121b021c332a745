// summary.json is what the metrics functions give on the scores in generations.jsonl, and each
// score is what the study's keyword scorer gives on the recorded text.

#include <cmath>
#include <map>

#include <catch2/catch.hpp>
#include <xtensor/xadapt.hpp>

#include <mechlens/experiments/records.hpp>
#include <mechlens/experiments/summary.hpp>
#include <mechlens/experiments/svg_figure.hpp>
#include <mechlens/experiments/table.hpp>
#include <mechlens/metrics/statistics.hpp>
#include <mechlens/metrics/behaviour.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

metrics::Sample sample(const std::vector<double>& v) { return xt::adapt(v, {v.size()}); }

/// Scores of a condition in pair order (pair ids sorted, as the summary pairs them).
std::map<std::string, double> scores(const std::vector<ex::GenerationRecord>& records, const std::string& condition) {
  std::map<std::string, double> out;
  for (const auto& r : records)
    if (r.condition == condition) out[r.pair_id] = r.score;
  return out;
}

void check_close(const nlohmann::json& j, double expected, double tol = 1e-10) {
  INFO("summary.json value " << j.dump() << ", recomputed " << expected);
  if (!std::isfinite(expected)) {
    CHECK(j.is_null());
    return;
  }
  REQUIRE(j.is_number());
  CHECK(std::abs(j.get<double>() - expected) <= tol * std::max(1.0, std::abs(expected)));
}

}  // namespace

TEST_CASE("Every recorded score is the keyword score of the recorded text", "[experiments][summary]") {
  const auto records = ex::load_records(test::demo_run() + "/generations.jsonl");
  REQUIRE(records.size() == 1200);  // 6 phase-1 conditions + 6 more of phase 2, 100 pairs each
  const metrics::KeywordScorer scorer(metrics::Lexicon::recursive_default(), metrics::EmptyTextPolicy::Zero);
  for (const auto& r : records) {
    CHECK(r.scorer == scorer.name());
    CHECK(r.score == scorer.score(r.text));
  }
}

TEST_CASE("summary.json equals the metrics functions applied to generations.jsonl", "[experiments][summary]") {
  const auto records = ex::load_records(test::demo_run() + "/generations.jsonl");
  for (const std::string phase : {"phase1", "phase2"}) {
    CAPTURE(phase);
    const auto summary = test::read_json(test::demo_run() + "/" + phase + "/summary.json");
    for (const auto& c : summary["conditions"]) {
      std::vector<double> v;
      for (auto& [pair, s] : scores(records, c["name"])) v.push_back(s);
      CHECK(c["n"] == v.size());
      check_close(c["mean"], metrics::mean(sample(v)));
      check_close(c["sd"], metrics::sd(sample(v)));
    }
    std::vector<double> raw_p;
    std::vector<const nlohmann::json*> family;
    for (const auto& k : summary["contrasts"]) {
      CAPTURE(k["name"]);
      const auto a = scores(records, k["a"]), b = scores(records, k["b"]);
      std::vector<double> va, vb;
      for (auto& [pair, s] : a) va.push_back(s), vb.push_back(b.at(pair));
      CHECK(k["n_pairs"] == va.size());
      check_close(k["delta"], metrics::mean(sample(va)) - metrics::mean(sample(vb)));
      check_close(k["d_study"]["value"], metrics::cohen_d_average(sample(va), sample(vb)).value);
      check_close(k["d_pooled"]["value"], metrics::cohen_d_pooled(sample(va), sample(vb)).value);
      const auto t = metrics::paired_t_test(sample(va), sample(vb));
      check_close(k["t_test"]["p"], t.p_value);
      check_close(k["t_test"]["statistic"], t.statistic);
      check_close(k["wilcoxon"]["p"], metrics::wilcoxon_signed_rank(sample(va), sample(vb)).p_value);
      if (k.contains("transfer_efficiency")) {
        const auto base = scores(records, k["transfer_efficiency"]["reference"]["baseline"]);
        const auto rec = scores(records, k["transfer_efficiency"]["reference"]["recursive"]);
        std::vector<double> vbase, vrec;
        for (auto& [pair, s] : a) vbase.push_back(base.at(pair)), vrec.push_back(rec.at(pair));
        const auto te = metrics::transfer_efficiency_from_means(metrics::mean(sample(vbase)), metrics::mean(sample(vrec)),
                                                                metrics::mean(sample(va)));
        check_close(k["transfer_efficiency"]["value"], te.value);
        metrics::BootstrapOptions bo;
        bo.seed = 0;  // the run's --seed
        const auto full = metrics::transfer_efficiency(sample(vbase), sample(vrec), sample(va), bo);
        check_close(k["transfer_efficiency"]["ci"]["low"], full.ci.low);
        check_close(k["transfer_efficiency"]["ci"]["high"], full.ci.high);
      }
      if (k["family"] == "layer sweep" && t.defined) {
        raw_p.push_back(t.p_value);
        family.push_back(&k);
      }
    }
    if (phase == "phase2") {
      REQUIRE(!raw_p.empty());
      const auto holm = metrics::holm(sample(raw_p));
      for (size_t i = 0; i < family.size(); ++i) {
        CHECK((*family[i])["correction"] == "holm");
        check_close((*family[i])["p_adjusted"], holm(i));
      }
    }
  }
}

TEST_CASE("summary.csv and the SVG figure are written beside summary.json", "[experiments][summary]") {
  for (const std::string phase : {"phase1", "phase2"}) {
    std::ifstream csv(test::demo_run() + "/" + phase + "/summary.csv");
    std::string header;
    std::getline(csv, header);
    CHECK_THAT(header, Catch::StartsWith("kind,name,a,b,n,mean,sd"));
    std::ifstream svg(test::demo_run() + "/" + phase + "/figure.svg");
    const std::string text((std::istreambuf_iterator<char>(svg)), {});
    CHECK_THAT(text, Catch::StartsWith("<?xml") && Catch::Contains("<svg xmlns=\"http://www.w3.org/2000/svg\"") &&
                         Catch::EndsWith("</svg>\n"));
    CHECK_THAT(text, Catch::Contains("<rect"));
  }
}

TEST_CASE("Contrasts whose conditions score every pair alike are marked identical, not given p = 0 or 1",
          "[experiments][summary]") {
  std::vector<ex::GenerationRecord> records;
  for (int i = 0; i < 5; ++i)
    for (const char* c : {"a", "b"}) {
      ex::GenerationRecord r;
      r.condition = c;
      r.pair_id = "p" + std::to_string(i);
      r.score = i;
      records.push_back(r);
    }
  const auto s = ex::summarize_records(records, {"a", "b"}, {{"a-b", "a", "b", "", "", "", ""}});
  REQUIRE(s.contrasts.size() == 1);
  CHECK(s.contrasts[0].identical);
  CHECK_FALSE(s.contrasts[0].t_test.defined);
  CHECK(ex::to_json(s)["contrasts"][0]["t_test"]["p"].is_null());
  CHECK_THAT(ex::contrast_table(s), Catch::Contains("identical"));
}
