// The resume check (experiments/resume_check.hpp): every kept record against the run's settings
// and pairs, and a condition's records against its spec, naming record, field, recorded and now.
// Records are written here as a Study writes them; the programs' side is in test_records.cpp.

#include <catch2/catch.hpp>

#include <mechlens/experiments/resume_check.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

struct Run {
  std::vector<ex::PromptPair> pairs;
  std::vector<ex::EncodedPair> encoded;
  ex::StudySettings settings;

  Run() {
    for (int i = 0; i < 3; ++i) {
      const std::string id(1, static_cast<char>('a' + i));
      pairs.push_back({id, "r " + id, "b " + id, {}, {}, nlohmann::json::object()});
      encoded.push_back({{1, 10 + i, 20 + i}, {1, 30 + i, 40 + i, 50 + i}});
    }
    settings.batch_size = 2;
  }
};

/// Pair b (index 1, batch 0 of size 2), baseline prompt; with a source when `source_pair` >= 0.
ex::GenerationRecord made_by(const Run& run, const std::string& condition, int source_pair = -1) {
  ex::GenerationRecord r;
  r.condition = condition;
  r.pair_id = "b";
  r.prompt_role = "baseline";
  r.prompt_ids = {1, 31, 41, 51};
  r.seed = 0;
  r.sampler_seed = ex::pair_seed(0, 1);  // pair b is the run's second pair
  r.batch = 0;
  r.batch_size = 2;
  r.sampling = {{"temperature", 0.7}, {"top_k", 0}, {"top_p", 1.0}, {"max_new_tokens", 50},
                {"stop_tokens", nlohmann::json::array()}};
  if (source_pair >= 0)
    r.source = {{"pair_id", run.pairs[static_cast<size_t>(source_pair)].id},
                {"role", "recursive"},
                {"prompt_ids", run.encoded[static_cast<size_t>(source_pair)].recursive}};
  r.text = "t";
  return r;
}

ex::RecordLog log_with(const std::vector<ex::GenerationRecord>& records) {
  auto log = ex::RecordLog::open(test::temp_dir("resume_check") + "/generations.jsonl", false);
  for (const auto& r : records) log.append(r);
  return log;
}

}  // namespace

TEST_CASE("Kept records made with the run's settings and pairs pass the check", "[experiments][resume]") {
  Run run;
  auto log = log_with({made_by(run, "baseline"), made_by(run, "kv", 0)});
  CHECK_NOTHROW(ex::check_kept_records(log, run.settings, run.pairs, run.encoded));
}

TEST_CASE("A kept record made with other settings is named with the field, what it recorded and what is now",
          "[experiments][resume]") {
  Run run;
  auto log = log_with({made_by(run, "baseline")});
  auto refused = [&](const ex::StudySettings& s) {
    return [&log, s, &run] { ex::check_kept_records(log, s, run.pairs, run.encoded); };
  };
  ex::StudySettings s = run.settings;
  s.sampling.seed = 5;
  CHECK_THROWS_WITH(refused(s)(), Catch::Contains("record 'baseline|b'") && Catch::Contains("seed: recorded 0, now 5") &&
                                      Catch::Contains("generations.jsonl"));
  s = run.settings;
  s.sampling.temperature = 1.3;
  CHECK_THROWS_WITH(refused(s)(), Catch::Contains("sampling.temperature: recorded 0.7, now 1.3"));
  s = run.settings;
  s.max_new_tokens = 6;
  CHECK_THROWS_WITH(refused(s)(), Catch::Contains("sampling.max_new_tokens: recorded 50, now 6"));
  s = run.settings;
  s.stop_tokens = {7};
  CHECK_THROWS_WITH(refused(s)(), Catch::Contains("sampling.stop_tokens: recorded [], now [7]"));
  // The batch size is speed only: each pair samples from its own stream.
  s = run.settings;
  s.batch_size = 1;
  CHECK_NOTHROW(refused(s)());
}

TEST_CASE("A kept record sampled per batch (before mechlens 0.2) is refused", "[experiments][resume]") {
  Run run;
  auto old = made_by(run, "baseline");
  old.sampler_seed = 0x1234;  // a batch sampler's seed
  auto log = log_with({old});
  CHECK_THROWS_WITH(ex::check_kept_records(log, run.settings, run.pairs, run.encoded),
                    Catch::Contains("sampler_seed: recorded 4660, now " + std::to_string(ex::pair_seed(0, 1))) &&
                        Catch::Contains("sampled per batch"));
}

TEST_CASE("A kept record whose pair changed, moved or went is named with its pair", "[experiments][resume]") {
  Run run;
  auto log = log_with({made_by(run, "baseline"), made_by(run, "kv", 0)});
  SECTION("the decoded prompt changed") {
    run.encoded[1].baseline = {1, 31, 41, 52};
    CHECK_THROWS_WITH(ex::check_kept_records(log, run.settings, run.pairs, run.encoded),
                      Catch::Contains("record 'baseline|b'") && Catch::Contains("prompt_ids: recorded [1,31,41,51], now [1,31,41,52]") &&
                          Catch::Contains("baseline prompt of pair 'b' changed"));
  }
  SECTION("the source prompt changed") {
    run.encoded[0].recursive = {1, 11};
    CHECK_THROWS_WITH(ex::check_kept_records(log, run.settings, run.pairs, run.encoded),
                      Catch::Contains("record 'kv|b'") && Catch::Contains("source.prompt_ids: recorded [1,10,20], now [1,11]") &&
                          Catch::Contains("source pair 'a'"));
  }
  SECTION("the pair moved in the list (its sampling stream is its position's)") {
    std::swap(run.pairs[1], run.pairs[2]);
    std::swap(run.encoded[1], run.encoded[2]);
    CHECK_THROWS_WITH(ex::check_kept_records(log, run.settings, run.pairs, run.encoded),
                      Catch::Contains("sampler_seed: recorded") && Catch::Contains("pair 'b' moved"));
  }
  SECTION("the pair is gone") {
    run.pairs.erase(run.pairs.begin() + 1);
    run.encoded.erase(run.encoded.begin() + 1);
    CHECK_THROWS_WITH(ex::check_kept_records(log, run.settings, run.pairs, run.encoded),
                      Catch::Contains("pair_id: recorded \"b\", now (absent)") && Catch::Contains("2 pairs"));
  }
}

TEST_CASE("A record older than the per-record settings cannot be resumed into", "[experiments][resume]") {
  Run run;
  auto old = made_by(run, "baseline");
  old.batch_size = 0;  // what record_from_json gives a line without the field
  old.sampling.erase("stop_tokens");
  auto log = log_with({old});
  CHECK_THROWS_WITH(ex::check_kept_records(log, run.settings, run.pairs, run.encoded),
                    Catch::Contains("sampling.stop_tokens: recorded (absent), now []"));
}

TEST_CASE("A condition's kept records must carry its spec, probe and sources", "[experiments][resume]") {
  Run run;
  ex::Condition c;
  c.name = "kv";
  c.target = ex::Role::Baseline;
  c.spec = {{"kind", "kv_splice"}, {"layers", "0:2"}, {"align", "right"}, {"rerotate", false}};
  auto r = made_by(run, "kv", 1);  // its own pair's source
  r.spec = c.spec;
  auto log = log_with({r});
  CHECK_NOTHROW(ex::check_kept_records(log, c, run.pairs));

  ex::Condition other = c;
  other.spec["rerotate"] = true;
  CHECK_THROWS_WITH(ex::check_kept_records(log, other, run.pairs),
                    Catch::Contains("record 'kv|b'") && Catch::Contains("spec: recorded {") &&
                        Catch::Contains("\"rerotate\":false") && Catch::Contains("now {") &&
                        Catch::Contains("\"rerotate\":true") && Catch::Contains("condition 'kv' is defined otherwise"));
  other = c;
  other.target = ex::Role::Recursive;
  CHECK_THROWS_WITH(ex::check_kept_records(log, other, run.pairs),
                    Catch::Contains("prompt_role: recorded \"baseline\", now \"recursive\""));
  other = c;
  other.probe = {{"rv", {{"window", 8}}}};
  CHECK_THROWS_WITH(ex::check_kept_records(log, other, run.pairs), Catch::Contains("probe: recorded (absent)"));
  other = c;
  other.source_of = {1, 2, 0};  // pair b now takes pair c's prompt
  CHECK_THROWS_WITH(ex::check_kept_records(log, other, run.pairs),
                    Catch::Contains("source.pair_id: recorded \"b\", now \"c\""));
}
