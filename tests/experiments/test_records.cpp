// generations.jsonl: append and flush per record, resume after a kill (a cut-off last line is
// dropped), and a real kill of a running program followed by --resume, which must lose nothing
// and redo nothing.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include <catch2/catch.hpp>

#include <mechlens/experiments/records.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

ex::GenerationRecord record(const std::string& condition, const std::string& pair, double score) {
  ex::GenerationRecord r;
  r.condition = condition;
  r.pair_id = pair;
  r.prompt_role = "baseline";
  r.text = "text of " + pair;
  r.ids = {1, 2, 3};
  r.score = score;
  return r;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t count_lines(const std::string& path) {
  const std::string s = read_all(path);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

TEST_CASE("A record log appends whole lines and reads them back on resume", "[experiments][records]") {
  const std::string dir = test::temp_dir("log");
  const std::string path = dir + "/generations.jsonl";
  {
    auto log = ex::RecordLog::open(path, false);
    log.append(record("baseline", "p1", 1.5));
    log.append(record("baseline", "p2", 0.0));
    CHECK_THROWS_AS(log.append(record("baseline", "p1", 9.0)), ArgumentError);
  }
  CHECK(count_lines(path) == 2);
  CHECK_THROWS_WITH(ex::RecordLog::open(path, false), Catch::Contains("--resume"));
  auto log = ex::RecordLog::open(path, true);
  CHECK(log.resumed() == 2);
  CHECK(log.contains("baseline|p1"));
  REQUIRE(log.find("baseline|p1").has_value());
  CHECK(log.find("baseline|p1")->score == 1.5);
  CHECK(log.find("baseline|p1")->ids == std::vector<int64_t>{1, 2, 3});
}

TEST_CASE("A resumed record nested a million levels deep is a clear error naming the line", "[experiments][records]") {
  const std::string dir = test::temp_dir("deep_record");
  const std::string path = dir + "/generations.jsonl";
  {
    auto log = ex::RecordLog::open(path, false);
    log.append(record("baseline", "p1", 1.5));
  }
  std::ofstream(path, std::ios::app) << "{\"condition\": \"baseline\", \"pair_id\": \"p2\", \"extra\": "
                                     << std::string(200000, '[') << std::string(200000, ']') << "}\n";
  CHECK_THROWS_WITH(ex::RecordLog::open(path, true),
                    Catch::Contains("generations.jsonl:2") && Catch::Contains("nested deeper than 256"));
}

TEST_CASE("Record ids cannot collide, and a found record survives later appends", "[experiments][records]") {
  // "a|b" + "c" and "a" + "b|c" would both be "a|b|c": a condition name may not hold '|'.
  CHECK_THROWS_WITH(ex::GenerationRecord::record_id("a|b", "c"), Catch::Contains("condition name 'a|b'"));
  CHECK(ex::GenerationRecord::record_id("a", "b|c") == "a|b|c");
  const std::string dir = test::temp_dir("find_append");
  auto log = ex::RecordLog::open(dir + "/generations.jsonl", false);
  log.append(record("baseline", "p0", 2.5));
  auto found = log.find("baseline|p0");
  REQUIRE(found.has_value());
  // Enough appends to move the stored records (a pointer into them would dangle).
  for (int i = 1; i < 200; ++i) log.append(record("baseline", "p" + std::to_string(i), 0.0));
  CHECK(found->score == 2.5);
  CHECK(found->pair_id == "p0");
  CHECK_FALSE(log.find("baseline|none").has_value());
}

TEST_CASE("Resuming a log whose last line was cut off mid-write drops that line and truncates the file",
          "[experiments][records]") {
  const std::string dir = test::temp_dir("cut");
  const std::string path = dir + "/generations.jsonl";
  {
    auto log = ex::RecordLog::open(path, false);
    log.append(record("recursive", "p1", 3.0));
    log.append(record("recursive", "p2", 4.0));
  }
  const std::string whole = read_all(path);
  const std::string first_line = whole.substr(0, whole.find('\n') + 1);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << first_line << whole.substr(first_line.size(), 20);
  auto log = ex::RecordLog::open(path, true);
  CHECK(log.dropped_cut_line());
  CHECK(log.resumed() == 1);
  CHECK(read_all(path) == first_line);
  log.append(record("recursive", "p2", 4.0));
  CHECK(ex::load_records(path).size() == 2);
}

TEST_CASE("A malformed whole line is an error naming the file and line", "[experiments][records]") {
  const std::string dir = test::temp_dir("bad");
  const std::string path = dir + "/generations.jsonl";
  std::ofstream(path) << "{\"condition\": \"a\"}\n";
  CHECK_THROWS_WITH(ex::load_records(path), Catch::Contains("generations.jsonl:1") && Catch::Contains("'pair_id'"));
}

TEST_CASE("Killed mid-run and rerun with --resume, a run loses nothing and redoes nothing", "[experiments][records][slow]") {
  // Batches of one pair, so the kill lands between many flushes; resumed in batches of 7 and
  // compared with an uninterrupted run in one batch of 20: each pair samples from its own stream,
  // so the batch size changes nothing.
  const std::vector<std::string> args = {"--n", "20", "--max-new-tokens", "30"};
  const std::string killed = test::temp_dir("killed"), whole = test::temp_dir("whole");
  const std::string log_path = killed + "/generations.jsonl";

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<std::string> argv_s = {test::program_path("dec7_kv_transfer"), "--out", killed, "--batch-size", "1"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  // Kill it once some records are on disk (but far from all 120).
  // (Up to two minutes: a loaded machine starts it slowly.)
  size_t seen = 0;
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 24000 && seen < 25 && !exited; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (test::fs::exists(log_path)) seen = count_lines(log_path);
    exited = ::waitpid(pid, &status, WNOHANG) == pid;
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  INFO("the program's exit status: " << status);
  REQUIRE(WIFSIGNALED(status));  // it was killed, not finished
  const std::string before = read_all(log_path);
  const size_t kept = static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
  INFO("records on disk when killed: " << kept);
  REQUIRE(kept >= 25);
  REQUIRE(kept < 120);

  std::vector<std::string> resume = {"--out", killed, "--resume", "--batch-size", "7"};
  resume.insert(resume.end(), args.begin(), args.end());
  auto r = test::run_program("dec7_kv_transfer", resume);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("generations already recorded"));
  std::vector<std::string> fresh = {"--out", whole};
  fresh.insert(fresh.end(), args.begin(), args.end());
  REQUIRE(test::run_program("dec7_kv_transfer", fresh).exit_code == 0);

  // Nothing lost: the whole lines written before the kill are still the file's beginning.
  const std::string after = read_all(log_path);
  const std::string whole_lines = before.substr(0, before.rfind('\n') + 1);
  CHECK(after.compare(0, whole_lines.size(), whole_lines) == 0);
  // Nothing redone: every record once, and the resumed run equals an uninterrupted one.
  const auto resumed = ex::load_records(log_path), reference = ex::load_records(whole + "/generations.jsonl");
  REQUIRE(resumed.size() == 120);
  REQUIRE(reference.size() == 120);
  std::map<std::string, const ex::GenerationRecord*> by_id;
  for (const auto& x : reference) by_id[x.id()] = &x;
  for (const auto& x : resumed) {
    REQUIRE(by_id.count(x.id()));
    CHECK(x.ids == by_id[x.id()]->ids);
    CHECK(x.text == by_id[x.id()]->text);
    CHECK(x.score == by_id[x.id()]->score);
  }
  CHECK(read_all(killed + "/phase1/summary.json").size() > 0);
  auto a = test::read_json(killed + "/phase1/summary.json"), b = test::read_json(whole + "/phase1/summary.json");
  CHECK(a["contrasts"] == b["contrasts"]);
  CHECK(a["conditions"] == b["conditions"]);
}

TEST_CASE("Resuming with other settings is refused, naming what differs", "[experiments][records]") {
  const std::string dir = test::temp_dir("settings");
  REQUIRE(test::run_program("dec7_kv_transfer", {"--out", dir, "--n", "4", "--max-new-tokens", "5"}).exit_code == 0);
  auto r = test::run_program("dec7_kv_transfer", {"--out", dir, "--n", "4", "--max-new-tokens", "6", "--resume"});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("max_new_tokens: recorded 5, now 6"));
  r = test::run_program("dec7_kv_transfer", {"--out", dir, "--n", "4", "--max-new-tokens", "5"});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("pass --resume"));
}
