// The embedded toy model is a positive control with a known answer (docs/toy-model.md): its
// register was planted in the KV cache of the later layers. The pipeline must find the transfer
// (significant), find nothing with the shuffled-source control, and find the late layers, not the
// early ones, in the sweep. These numbers come from a real run of dec7_demo (sampled
// generations, keyword scores): a broken splice, alignment or scorer makes them fail.

#include <catch2/catch.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;

namespace {
const nlohmann::json& contrast(const nlohmann::json& summary, const std::string& name) {
  for (const auto& c : summary["contrasts"])
    if (c["name"] == name) return c;
  FAIL("no contrast " << name);
  static nlohmann::json none;
  return none;
}
double p_of(const nlohmann::json& c) { return c["t_test"]["p"].is_null() ? 1.0 : c["t_test"]["p"].get<double>(); }
}  // namespace

TEST_CASE("On the embedded model the KV transfer is significant and the shuffled-source control is not",
          "[experiments][positive-control]") {
  const auto s = test::read_json(test::demo_run() + "/phase1/summary.json");
  const auto& gap = contrast(s, "natural gap");
  CHECK(gap["delta"].get<double>() > 5.0);  // the two registers differ in keyword rate
  CHECK(p_of(gap) < 1e-6);

  const auto& suff = contrast(s, "sufficiency");
  CHECK(p_of(suff) < 1e-6);
  CHECK(suff["transfer_efficiency"]["value"].get<double>() > 0.8);
  CHECK(suff["d_study"]["value"].get<double>() > 1.0);

  const auto& nec = contrast(s, "necessity");
  CHECK(nec["delta"].get<double>() < -5.0);
  CHECK(p_of(nec) < 1e-6);

  const auto& ctrl = contrast(s, "shuffled source");
  CHECK(p_of(ctrl) > 0.05);
  CHECK(std::abs(ctrl["transfer_efficiency"]["value"].get<double>()) < 0.1);
}

TEST_CASE("On the embedded model the layer sweep finds the late half, not the early half", "[experiments][positive-control]") {
  const auto s = test::read_json(test::demo_run() + "/phase2/summary.json");
  const auto& late = contrast(s, "4:8");
  const auto& early = contrast(s, "0:4");
  CHECK(late["transfer_efficiency"]["value"].get<double>() > 0.8);
  CHECK(late["p_adjusted"].get<double>() < 1e-6);
  CHECK(std::abs(early["transfer_efficiency"]["value"].get<double>()) < 0.1);
  CHECK((early["p_adjusted"].is_null() || early["p_adjusted"].get<double>() > 0.05));
}

TEST_CASE("On the embedded model the KV-cache attribution puts a planted layer first, and its real splice transfers",
          "[experiments][positive-control]") {
  const std::string out = test::temp_dir("attribution");
  const auto r = test::run_program("dec7_attribution", {"--out", out, "--n", "20"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto s = test::read_json(out + "/attribution/summary.json");
  // The contrasts of the layer-range family are the top estimates, best first.
  std::vector<nlohmann::json> ranges;
  for (const auto& c : s["contrasts"])
    if (c["family"] == "layer ranges") ranges.push_back(c);
  REQUIRE(ranges.size() == 3);
  const std::string best = ranges[0]["name"];
  const auto colon = best.find(':');
  const int lo = std::stoi(best.substr(0, colon)), hi = std::stoi(best.substr(colon + 1));
  CHECK(lo <= 5);  // the model put the mode in layer 5 (docs/toy-model.md)
  CHECK(hi > 5);
  CHECK(ranges[0]["transfer_efficiency"]["value"].get<double>() > 0.5);
  CHECK(ranges[0]["p_adjusted"].get<double>() < 0.05);
  CHECK(test::fs::exists(out + "/attribution/heatmap.svg"));
}
