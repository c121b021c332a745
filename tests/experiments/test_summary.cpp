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
        metrics::BootstrapOptions bo;
        bo.seed = 0;  // the run's --seed
        const auto full = metrics::transfer_efficiency(sample(vbase), sample(vrec), sample(va), bo);
        CHECK(k["transfer_efficiency"]["no_natural_gap"] == full.no_natural_gap);
        check_close(k["transfer_efficiency"]["value"], full.no_natural_gap ? NAN : te.value);
        check_close(k["transfer_efficiency"]["ci"]["low"], full.ci.low);
        check_close(k["transfer_efficiency"]["ci"]["high"], full.ci.high);
        check_close(k["transfer_efficiency"]["natural_gap"]["delta"], metrics::mean(sample(vrec)) - metrics::mean(sample(vbase)));
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

namespace {

/// Records of conditions baseline, recursive and patched for pairs p0..p{n-1}.
std::vector<ex::GenerationRecord> three_conditions(const std::vector<double>& baseline, const std::vector<double>& recursive,
                                                   const std::vector<double>& patched) {
  std::vector<ex::GenerationRecord> records;
  const std::vector<std::pair<const char*, const std::vector<double>*>> conditions = {
      {"baseline", &baseline}, {"recursive", &recursive}, {"patched", &patched}};
  for (size_t i = 0; i < baseline.size(); ++i)
    for (const auto& [c, v] : conditions) {
      ex::GenerationRecord r;
      r.condition = c;
      r.pair_id = "p" + std::to_string(100 + i);  // sorted as given
      r.score = (*v)[i];
      records.push_back(r);
    }
  return records;
}

ex::Summary summarize_transfer(const std::vector<ex::GenerationRecord>& records) {
  return ex::summarize_records(records, {"baseline", "recursive", "patched"},
                               {{"natural gap", "recursive", "baseline", "", "", "", ""},
                                {"transfer", "patched", "baseline", "patched vs baseline", "sweep", "baseline", "recursive"}});
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

}  // namespace

TEST_CASE("A transfer whose natural gap has a CI including 0 is n/a, with the reason in summary.json",
          "[experiments][summary]") {
  // recursive − baseline alternates +3 / −3: mean +0.05 against a spread of 3, a CI far across 0
  // (the t interval is about ±1.4), so "+X % of the gap" would be a ratio of noise.
  std::vector<double> baseline, recursive, patched;
  for (int i = 0; i < 20; ++i) {
    baseline.push_back(2.0 + i % 4);
    recursive.push_back(baseline.back() + (i == 19 ? 1.0 : i == 18 ? 0.0 : i % 2 ? -3.0 : 3.0));
    patched.push_back(baseline.back() + 1.0);
  }
  const auto s = summarize_transfer(three_conditions(baseline, recursive, patched));
  const auto& c = *s.contrast("transfer");
  REQUIRE(c.te);
  CHECK(c.te->no_natural_gap);
  CHECK_FALSE(c.te->value.defined);
  CHECK_FALSE(c.te->ci.defined);
  CHECK(c.te->gap.delta == Approx(0.05).margin(1e-12));
  // The gap's interval is the natural-gap contrast's Δ interval (same pairs, same resamples).
  const auto& gap = *s.contrast("natural gap");
  CHECK(c.te->gap.ci.low == gap.delta_ci.low);
  CHECK(c.te->gap.ci.high == gap.delta_ci.high);
  CHECK(gap.delta_ci.low < 0.0);
  CHECK(gap.delta_ci.high > 0.0);

  const auto j = ex::to_json(s)["contrasts"][1]["transfer_efficiency"];
  CHECK(j["value"].is_null());
  CHECK(j["no_natural_gap"] == true);
  CHECK_THAT(j["reason"].get<std::string>(), Catch::Contains("no natural gap") && Catch::Contains("includes 0"));
  CHECK(j["natural_gap"]["evident"] == false);
  CHECK(j["natural_gap"]["delta"].get<double>() == Approx(0.05).margin(1e-12));
  CHECK(j["natural_gap"]["ci"]["low"].get<double>() < 0.0);
  CHECK(j["natural_gap"]["ci"]["high"].get<double>() > 0.0);

  const std::string contrasts = ex::contrast_table(s), sweep = ex::sweep_table(s, "sweep");
  CHECK_THAT(contrasts, Catch::Contains("n/a (no natural gap)") && Catch::Contains("includes 0"));
  CHECK_THAT(sweep, Catch::Contains("n/a (no natural gap)") && Catch::Contains("recursive vs baseline"));
  CHECK_THAT(contrasts + sweep, !Catch::Contains("2000.0"));  // 1 / 0.05 = +2000 %: not printed
}

TEST_CASE("A transfer with a clear natural gap still gives its number", "[experiments][summary]") {
  std::vector<double> baseline, recursive, patched;
  for (int i = 0; i < 20; ++i) {
    baseline.push_back(0.5 * (i % 3));
    recursive.push_back(baseline.back() + 4.0 + 0.5 * (i % 5));  // +4 to +6 in every pair
    patched.push_back(baseline.back() + 2.0 + 0.25 * (i % 2));
  }
  const auto s = summarize_transfer(three_conditions(baseline, recursive, patched));
  const auto& c = *s.contrast("transfer");
  REQUIRE(c.te);
  CHECK_FALSE(c.te->no_natural_gap);
  CHECK(c.te->gap.evident);
  const double want = (mean_of(patched) - mean_of(baseline)) / (mean_of(recursive) - mean_of(baseline));
  REQUIRE(c.te->value.defined);
  CHECK(c.te->value.value == Approx(want).epsilon(1e-12));
  CHECK(c.te->ci.defined);
  const auto j = ex::to_json(s)["contrasts"][1]["transfer_efficiency"];
  CHECK(j["value"].get<double>() == Approx(want).epsilon(1e-12));
  CHECK(j["no_natural_gap"] == false);
  CHECK_FALSE(j.contains("reason"));
  CHECK(j["natural_gap"]["evident"] == true);
  CHECK(j["natural_gap"]["ci"]["low"].get<double>() > 0.0);
  const std::string pct = ex::format_num(100.0 * want, 1);
  CHECK_THAT(ex::contrast_table(s), Catch::Contains(pct + " %") && !Catch::Contains("no natural gap"));
  CHECK_THAT(ex::sweep_table(s, "sweep"), Catch::Contains(pct) && !Catch::Contains("no natural gap"));

  // Every pair the same distance apart: the gap's BCa interval is undefined (no spread), but
  // every difference has one sign, so the gap is there and the transfer is given.
  for (size_t i = 0; i < recursive.size(); ++i) recursive[i] = baseline[i] + 5.0;
  const auto same = summarize_transfer(three_conditions(baseline, recursive, patched));
  const auto& k = *same.contrast("transfer");
  CHECK_FALSE(k.te->gap.ci.defined);
  CHECK(k.te->gap.evident);
  REQUIRE(k.te->value.defined);
  CHECK(k.te->value.value == Approx((mean_of(patched) - mean_of(baseline)) / 5.0).epsilon(1e-12));
}

TEST_CASE("A table header says which contrasts a correction covered: only those with a test", "[experiments][summary]") {
  // Three ranges: "same" scores like baseline on every pair (identical: no test), "up" and
  // "noisy" differ, so the Holm family holds two.
  std::vector<ex::GenerationRecord> records;
  const std::map<std::string, std::vector<double>> scores = {{"baseline", {0, 1, 0, 2, 1}},
                                                              {"same", {0, 1, 0, 2, 1}},
                                                              {"up", {5, 6, 4, 7, 6}},
                                                              {"noisy", {1, 0, 2, 2, 0}}};
  for (const auto& [c, v] : scores)
    for (size_t i = 0; i < v.size(); ++i) {
      ex::GenerationRecord r;
      r.condition = c;
      r.pair_id = "p" + std::to_string(i);
      r.score = v[i];
      records.push_back(r);
    }
  std::vector<ex::Contrast> contrasts;
  for (const char* c : {"same", "up", "noisy"}) contrasts.push_back({c, c, "baseline", c, "sweep", "", ""});
  auto s = ex::summarize_records(records, {"baseline", "same", "up", "noisy"}, contrasts);
  CHECK(ex::correction_note(s, "sweep", "ranges") ==
        "holm correction across the 2 ranges with a test (1 of 3 scored identically to their baseline: no test)");
  ex::SummaryOptions none;
  none.correction = ex::Correction::None;
  s = ex::summarize_records(records, {"baseline", "same", "up", "noisy"}, contrasts, none);
  CHECK_THAT(ex::correction_note(s, "sweep", "ranges"), Catch::StartsWith("no correction across the 2 ranges"));
  CHECK(ex::correction_note(s, "other", "ranges") == "no test to correct among the ranges");
}
