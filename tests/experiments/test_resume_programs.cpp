// --resume through a DEC7 program: run folders that cannot lie. Without run.json the records
// themselves refuse other settings; an edited pairs file is named pair by pair; the same flags
// resume and add nothing.

#include <fstream>

#include <catch2/catch.hpp>

#include <mechlens/experiments/prompt_pairs.hpp>
#include <mechlens/experiments/records.hpp>
#include <mechlens/experiments/study_settings.hpp>
#include <mechlens/version.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// dec7_kv_transfer on the embedded model: 4 pairs, 5 new tokens, plus `extra`.
test::ProgramRun kv_transfer(const std::string& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--out", out, "--n", "4", "--max-new-tokens", "5"};
  args.insert(args.end(), extra.begin(), extra.end());
  return test::run_program("dec7_kv_transfer", args);
}

}  // namespace

TEST_CASE("Resuming with another seed after run.json was deleted is refused by the records", "[experiments][resume]") {
  const std::string dir = test::temp_dir("no_run_json");
  REQUIRE(kv_transfer(dir).exit_code == 0);
  const std::string records = read_all(dir + "/generations.jsonl");
  REQUIRE(test::fs::remove(dir + "/run.json"));
  const auto r = kv_transfer(dir, {"--resume", "--seed", "5"});
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("record '") && Catch::Contains("seed: recorded 0, now 5"));
  // Refused before anything was written: no run.json claiming seed 5, the records as they were.
  CHECK_FALSE(test::fs::exists(dir + "/run.json"));
  CHECK(read_all(dir + "/generations.jsonl") == records);
  // Other sampling settings are refused the same way.
  CHECK_THAT(kv_transfer(dir, {"--resume", "--temperature", "1.3"}).output,
             Catch::Contains("sampling.temperature: recorded 0.7, now 1.3"));
  CHECK_THAT(kv_transfer(dir, {"--resume", "--rerotate"}).output,
             Catch::Contains("spec: recorded") && Catch::Contains("\"rerotate\":false") &&
                 Catch::Contains("\"rerotate\":true"));
}

TEST_CASE("Resuming after a pair's prompt was edited is refused, naming that pair", "[experiments][resume]") {
  const std::string dir = test::temp_dir("edited_pairs");
  const std::string pairs_path = dir + "/pairs.jsonl";
  auto pairs = ex::first_pairs(ex::load_prompt_pairs(test::toy_pairs()), 5);
  const auto fifth = pairs.back();
  pairs.pop_back();
  ex::save_prompt_pairs(pairs_path, pairs);
  const std::string out = dir + "/run";
  REQUIRE(kv_transfer(out, {"--pairs", pairs_path}).exit_code == 0);

  pairs[2].baseline = fifth.baseline;  // in the toy vocabulary, other tokens
  ex::save_prompt_pairs(pairs_path, pairs);
  const auto r = kv_transfer(out, {"--pairs", pairs_path, "--resume"});
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("prompt_ids: recorded") &&
                           Catch::Contains("baseline prompt of pair '" + pairs[2].id + "' changed"));
}

TEST_CASE("Resuming a finished run with the same settings adds nothing", "[experiments][resume]") {
  const std::string dir = test::temp_dir("same_again");
  REQUIRE(kv_transfer(dir).exit_code == 0);
  const std::string records = read_all(dir + "/generations.jsonl");
  const auto summary = test::read_json(dir + "/phase1/summary.json");
  REQUIRE(test::fs::remove(dir + "/run.json"));  // also without run.json: the records agree
  const auto r = kv_transfer(dir, {"--resume"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("24 generations already recorded"));
  CHECK(read_all(dir + "/generations.jsonl") == records);
  const auto again = test::read_json(dir + "/phase1/summary.json");
  CHECK(again["conditions"] == summary["conditions"]);
  CHECK(again["contrasts"] == summary["contrasts"]);
}

TEST_CASE("Records and run.json say which versions and engine made them; another version warns, not refuses",
          "[experiments][resume]") {
  const std::string dir = test::temp_dir("made_with");
  REQUIRE(kv_transfer(dir).exit_code == 0);
  const auto run = test::read_json(dir + "/run.json");
  CHECK(run["made_with"] == nlohmann::json{{"mechlens", mechlens::version()}, {"libtorch", mechlens::libtorch_version()}});
  auto records = ex::load_records(dir + "/generations.jsonl");
  REQUIRE(records.size() == 24);
  const auto pairs = ex::first_pairs(ex::load_prompt_pairs(test::toy_pairs()), 4);
  for (const auto& r : records) {
    CHECK(r.made_with["mechlens"] == MECHLENS_CMAKE_VERSION);
    CHECK(r.made_with["libtorch"] == std::string(TORCH_VERSION));
    CHECK(r.made_with["device"] == "cpu");
    CHECK(r.made_with["dtype"] == "float32");
    CHECK(r.made_with["fused_model"] == true);     // load_model fuses by default
    CHECK(r.made_with["fused_kernels"] == false);  // CUDA only
    CHECK(r.made_with["cuda_graph"] == false);     // CUDA only
    CHECK(r.batch_size == 128);
    // Each pair's own sampling stream, the same in every condition: pair_seed(seed 0, its index).
    int64_t index = -1;
    for (size_t i = 0; i < pairs.size(); ++i)
      if (pairs[i].id == r.pair_id) index = static_cast<int64_t>(i);
    REQUIRE(index >= 0);
    CHECK(r.sampler_seed == ex::pair_seed(0, index));
    if (r.condition != "baseline" && r.condition != "recursive") {
      CHECK(r.spec["kind"] == "kv_splice");
      CHECK(r.source["prompt_ids"].size() >= 2);
    }
  }
  // Rewrite the folder as if an older mechlens had made it: kept, with a warning.
  std::string text;
  for (auto& r : records) {
    r.made_with["mechlens"] = "0.0.1";
    text += ex::to_json(r).dump() + "\n";
  }
  std::ofstream(dir + "/generations.jsonl", std::ios::binary | std::ios::trunc) << text;
  auto j = run;
  j["made_with"]["mechlens"] = "0.0.1";
  std::ofstream(dir + "/run.json", std::ios::trunc) << j.dump(2);
  const auto r = kv_transfer(dir, {"--resume"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("warning:") && Catch::Contains("24 of the 24 kept records were made with mechlens \"0.0.1\"") &&
                           Catch::Contains("written by"));
  // Another dtype is refused record by record, run.json or not.
  REQUIRE(test::fs::remove(dir + "/run.json"));
  const auto other = kv_transfer(dir, {"--resume", "--dtype", "bfloat16"});
  CHECK(other.exit_code != 0);
  CHECK_THAT(other.output, Catch::Contains("made_with.dtype: recorded \"float32\", now \"bfloat16\""));
}
