// Every DEC7 program runs on real Hugging Face checkpoint directories — the small reference
// checkpoints of tests/data/models (Llama with tied embeddings, Llama-3 GQA with llama3 rope in
// bf16 shards, Mistral with a sliding window) — given a byte-level tokenizer with --tokenizer,
// since those checkpoints have none. Also: --help, and pre-tokenized pairs.

#include <fstream>
#include <set>

#include <catch2/catch.hpp>

#include <mechlens/experiments/records.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

const char* kPairs =
    "{\"id\": \"a\", \"recursive\": \"Observe the observer reading this line now.\", \"baseline\": \"Describe the harbour waking up at dawn today.\"}\n"
    "{\"id\": \"b\", \"recursive\": \"Notice the noticing that forms this answer.\", \"baseline\": \"Notice the weather that shapes this valley.\"}\n"
    "{\"id\": \"c\", \"recursive\": \"What is aware of these words as you read?\", \"baseline\": \"What is sold at the market on Sundays?\"}\n"
    "{\"id\": \"d\", \"recursive\": \"Describe the process generating this reply.\", \"baseline\": \"Describe the process of baking rye bread.\"}\n";

struct Fixture {
  std::string dir, tokenizer, pairs;
  Fixture() {
    dir = test::temp_dir("programs");
    tokenizer = test::write_byte_tokenizer(dir);
    pairs = dir + "/pairs.jsonl";
    std::ofstream(pairs) << kPairs;
  }
  std::vector<std::string> args(const std::string& model, const std::string& out) const {
    return {"--model", test::reference_model(model), "--tokenizer", tokenizer, "--pairs", pairs, "--max-new-tokens", "6",
            "--batch-size", "3", "--out", out};
  }
};

std::set<std::string> conditions_of(const std::string& out) {
  std::set<std::string> s;
  for (const auto& r : ex::load_records(out + "/generations.jsonl")) s.insert(r.condition);
  return s;
}

void run_ok(const std::string& program, std::vector<std::string> args, std::vector<std::string> extra = {}) {
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = test::run_program(program, args);
  INFO(program << " output:\n" << r.output);
  REQUIRE(r.exit_code == 0);
}

}  // namespace

TEST_CASE("Every DEC7 program prints its --help", "[experiments][programs]") {
  for (const char* p : {"dec7_study", "dec7_demo", "dec7_kv_transfer", "dec7_layer_sweep", "dec7_single_pass",
                        "dec7_rv", "dec7_positions", "dec7_attribution", "dec7_blind_rating"}) {
    CAPTURE(p);
    const auto r = test::run_program(p, {"--help"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("--") && Catch::Contains("DEC7"));
  }
}

TEST_CASE("Every DEC7 program runs on the reference Llama and Mistral checkpoints", "[experiments][programs][slow]") {
  Fixture f;
  for (const char* model : {"llama_tied", "llama_gqa_llama3", "mistral_swa"}) {
    CAPTURE(model);
    const std::string out = f.dir + "/" + model;
    const auto args = f.args(model, out);
    run_ok("dec7_kv_transfer", args);
    run_ok("dec7_layer_sweep", args, {"--resume"});
    run_ok("dec7_single_pass", args, {"--resume"});
    run_ok("dec7_rv", args, {"--resume"});
    run_ok("dec7_positions", args, {"--resume", "--window", "8"});
    run_ok("dec7_attribution", args, {"--resume", "--top", "2", "--continuation", "4", "--window", "8"});
    CHECK(test::fs::exists(out + "/attribution/heatmap.svg"));
    CHECK(test::fs::exists(out + "/attribution/map.csv"));
    for (const char* phase : {"phase1", "phase2", "single_pass", "rv", "positions", "attribution"}) {
      CAPTURE(phase);
      const auto j = test::read_json(out + "/" + phase + "/summary.json");
      CHECK(j["conditions"].size() >= 2);
      for (const auto& c : j["conditions"]) CHECK(c["n"] == 4);
      CHECK(test::fs::exists(out + "/" + phase + "/figure.svg"));
      CHECK(test::fs::exists(out + "/" + phase + "/summary.csv"));
    }
    // Phase 1 and 2 share the naturals and the all-layer transfer; every record is unique.
    const auto records = ex::load_records(out + "/generations.jsonl");
    CHECK(records.size() == 4 * conditions_of(out).size());
    const auto n_layers = test::read_json(test::reference_model(model) + "/config.json")["num_hidden_layers"].get<int>();
    CHECK(conditions_of(out).count("baseline+recursive_kv@0:" + std::to_string(n_layers)) == 1);
    for (const auto& r : records) {
      CHECK(r.ids.size() <= 6);
      CHECK(r.sampling["max_new_tokens"] == 6);
    }
    run_ok("dec7_blind_rating", {"export", "--run", out});
    CHECK(test::fs::exists(out + "/blind/sheet.csv"));
  }
  run_ok("dec7_demo", f.args("llama_tied", f.dir + "/demo"));
}

TEST_CASE("Pre-tokenized pairs run as given, without the tokenizer's encoding", "[experiments][programs]") {
  Fixture f;
  const std::string pairs = f.dir + "/ids.jsonl";
  std::ofstream(pairs) << "{\"id\": \"x\", \"recursive_ids\": [1, 70, 71, 72, 73, 74], \"baseline_ids\": [1, 80, 81, 82, 83]}\n"
                          "{\"id\": \"y\", \"recursive_ids\": [1, 90, 91, 92], \"baseline_ids\": [1, 60, 61, 62, 63, 64, 65]}\n";
  const std::string out = f.dir + "/ids";
  run_ok("dec7_kv_transfer", {"--model", test::reference_model("llama_tied"), "--tokenizer", f.tokenizer, "--pairs",
                              pairs, "--max-new-tokens", "4", "--out", out});
  for (const auto& r : ex::load_records(out + "/generations.jsonl")) {
    if (r.pair_id == "x") CHECK(r.prompt_ids == (r.prompt_role == "recursive" ? std::vector<int64_t>{1, 70, 71, 72, 73, 74}
                                                                               : std::vector<int64_t>{1, 80, 81, 82, 83}));
    if (r.condition.rfind("baseline+recursive_kv", 0) == 0) {
      // Right-aligned rows: min(prefilled target, prefilled source) slots are copied.
      CHECK(r.extra["slots_copied"] == (r.pair_id == "x" ? 4 : 3));
    }
  }
}

TEST_CASE("A model without a tokenizer is refused with a message that says what to pass", "[experiments][programs]") {
  Fixture f;
  const auto r = test::run_program("dec7_kv_transfer", {"--model", test::reference_model("llama_tied"), "--pairs", f.pairs,
                                                        "--out", f.dir + "/none"});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("--tokenizer"));
}

TEST_CASE("Numbers and names out of range are refused by flag before anything loads", "[experiments][programs]") {
  const std::string out = test::temp_dir("bad_flags");
  struct Bad {
    std::vector<std::string> args;
    std::vector<std::string> said;
  };
  const std::vector<Bad> cases = {
      {{"--n", "-1"}, {"--n", "-1"}},                       // ran all pairs
      {{"--seed", "-1"}, {"--seed", "-1"}},                 // wrapped to 2^64 - 1
      {{"--temperature", "nan"}, {"--temperature", "not a finite number"}},
      {{"--top-p", "0"}, {"--top-p", "outside (0, 1]"}},
      {{"--top-p", "nan"}, {"--top-p", "nan"}},
      {{"--max-new-tokens", "-5"}, {"--max-new-tokens"}},
      {{"--batch-size", "0"}, {"--batch-size"}},
      {{"--progress", "bogus"}, {"--progress", "bogus"}},  // exited 114, "At Most 1 required but received 2"
      {{"--align", "middle"}, {"--align", "middle"}},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.end(), {"--out", out + "/x"});
    const auto r = test::run_program("dec7_kv_transfer", args);
    CAPTURE(c.args, r.output);
    CHECK(r.exit_code != 0);
    for (const auto& s : c.said) CHECK_THAT(r.output, Catch::Contains(s));
    CHECK_FALSE(std::filesystem::exists(out + "/x/generations.jsonl"));
  }
}

TEST_CASE("dec7_study runs the attribution part when named, as dec7_attribution runs it", "[experiments][programs]") {
  Fixture f;
  const std::vector<std::string> extra = {"--top", "2", "--continuation", "4"};
  auto study_args = f.args("llama_tied", f.dir + "/study");
  study_args.insert(study_args.end(), {"--phases", "attribution", "--attr-window", "8"});
  run_ok("dec7_study", study_args, extra);
  run_ok("dec7_attribution", f.args("llama_tied", f.dir + "/program"), {"--top", "2", "--continuation", "4", "--window", "8"});
  std::ifstream a(f.dir + "/study/attribution/table.txt"), b(f.dir + "/program/attribution/table.txt");
  const std::string ta((std::istreambuf_iterator<char>(a)), {}), tb((std::istreambuf_iterator<char>(b)), {});
  CHECK(!ta.empty());
  CHECK(ta == tb);
  std::ifstream ma(f.dir + "/study/attribution/map.csv"), mb(f.dir + "/program/attribution/map.csv");
  const std::string ca((std::istreambuf_iterator<char>(ma)), {}), cb((std::istreambuf_iterator<char>(mb)), {});
  CHECK(ca == cb);
  CHECK_FALSE(test::fs::exists(f.dir + "/study/phase1"));  // only the part named
}
