// experiments::RunFolder: run.json (settings, programs), the resume check, the records check
// before run.json is rewritten, and a phase's outputs.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <catch2/catch.hpp>

#include <mechlens/experiments/run_folder.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

ex::GenerationRecord some_record(const std::string& pair) {
  ex::GenerationRecord r;
  r.condition = "baseline";
  r.pair_id = pair;
  r.prompt_role = "baseline";
  r.text = "words";
  r.score = 1.0;
  return r;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("A run folder writes run.json with the settings and the programs that ran", "[experiments][run_folder]") {
  const std::string dir = test::temp_dir("run_folder") + "/out";  // created by open()
  const nlohmann::json settings = {{"seed", 3}, {"model", "m"}};
  {
    auto folder = ex::RunFolder::open(dir, settings, "first", false);
    CHECK(folder.path() == dir);
    CHECK(folder.log().resumed() == 0);
    folder.log().append(some_record("p1"));
  }
  auto j = test::read_json(dir + "/run.json");
  CHECK(j["seed"] == 3);
  CHECK(j["model"] == "m");
  CHECK(j["programs"] == nlohmann::json::array({"first"}));
  {
    auto folder = ex::RunFolder::open(dir, settings, "second", true);
    CHECK(folder.log().resumed() == 1);
  }
  CHECK(test::read_json(dir + "/run.json")["programs"] == nlohmann::json::array({"first", "second"}));
}

TEST_CASE("A run folder refuses a resume with other settings and a fresh run over records", "[experiments][run_folder]") {
  const std::string dir = test::temp_dir("run_folder_refuse");
  {
    auto folder = ex::RunFolder::open(dir, {{"seed", 3}, {"top_p", 1.0}}, "p", false);
    folder.log().append(some_record("p1"));
  }
  CHECK_THROWS_WITH(ex::RunFolder::open(dir, {{"seed", 4}, {"top_p", 1.0}, {"extra", "x"}}, "p", true),
                    Catch::Contains("seed: recorded 3, now 4") && Catch::Contains("extra: recorded (absent), now \"x\"") &&
                        !Catch::Contains("top_p"));
  CHECK_THROWS_WITH(ex::RunFolder::open(dir, {{"seed", 3}, {"top_p", 1.0}}, "p", false), Catch::Contains("--resume"));
  CHECK_THROWS_WITH(ex::RunFolder::open("", {{"seed", 3}}, "p", false), Catch::Contains("path is empty"));
}

TEST_CASE("A records check that refuses leaves run.json as it was", "[experiments][run_folder]") {
  const std::string dir = test::temp_dir("run_folder_check");
  {
    auto folder = ex::RunFolder::open(dir, {{"seed", 3}}, "p", false);
    folder.log().append(some_record("p1"));
  }
  const std::string before = read_all(dir + "/run.json");
  size_t seen = 0;
  auto refuse = [&](const ex::RecordLog& log) {
    seen = log.records().size();
    throw ArgumentError("no");
  };
  CHECK_THROWS_WITH(ex::RunFolder::open(dir, {{"seed", 3}}, "q", true, refuse), "no");
  CHECK(seen == 1);
  CHECK(read_all(dir + "/run.json") == before);
  // Without run.json the settings cannot be compared; the check still runs.
  test::fs::remove(dir + "/run.json");
  CHECK_THROWS_WITH(ex::RunFolder::open(dir, {{"seed", 5}}, "q", true, refuse), "no");
  CHECK_FALSE(test::fs::exists(dir + "/run.json"));
}

TEST_CASE("A run folder writes a phase's summary.json, summary.csv, table.txt and figure.svg", "[experiments][run_folder]") {
  const std::string dir = test::temp_dir("run_folder_phase");
  auto folder = ex::RunFolder::open(dir, {{"seed", 1}}, "p", false);
  ex::Summary summary;
  summary.scorer = "s";
  ex::BarPanel panel;
  panel.title = "panel";
  panel.bars.push_back({"a", 1.0, 0.5, 1.5, ""});
  folder.write_phase("phase1", summary, "the table\n", "The figure", {panel}, {{"layers", "0:2"}});
  const auto j = test::read_json(dir + "/phase1/summary.json");
  CHECK(j["run"]["settings"] == nlohmann::json{{"seed", 1}});
  CHECK(j["run"]["phase"] == "phase1");
  CHECK(j["run"]["generations"] == "generations.jsonl");
  CHECK(j["run"]["layers"] == "0:2");
  CHECK(read_all(dir + "/phase1/table.txt") == "the table\n");
  CHECK_THAT(read_all(dir + "/phase1/figure.svg"), Catch::Contains("The figure") && Catch::Contains("<svg"));
  CHECK_THAT(read_all(dir + "/phase1/summary.csv"), Catch::StartsWith("kind,"));
  CHECK_THROWS_WITH(folder.phase_dir("../x"), Catch::Contains("plain folder name"));
}

TEST_CASE("A run folder is locked while open: a second writer, here or in a DEC7 program, stops naming the holder's pid",
          "[experiments][run_folder][lock]") {
  const std::string dir = test::temp_dir("run_folder_lock");
  const std::string me = "pid " + std::to_string(::getpid());
  const std::vector<std::string> program = {"--out", dir, "--n", "2", "--max-new-tokens", "2"};
  {
    auto folder = ex::RunFolder::open(dir, {{"seed", 0}}, "holder", false);
    CHECK(folder.lock_path() == dir + "/.lock");
    CHECK(read_all(dir + "/.lock") == std::to_string(::getpid()) + "\n");
    CHECK_THROWS_WITH(ex::RunFolder::open(dir, {{"seed", 0}}, "second", false),
                      Catch::Contains("run folder '" + dir + "' is in use") && Catch::Contains(me));
    const auto r = test::run_program("dec7_kv_transfer", program);
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("run folder '" + dir + "' is in use") && Catch::Contains(me) &&
                             Catch::Contains(dir + "/.lock"));
    CHECK(read_all(dir + "/generations.jsonl").empty());  // the second writer wrote nothing
    // ... and stopped before it loaded anything: a model folder that does not exist is not reached.
    const auto early = test::run_program("dec7_kv_transfer", {"--out", dir, "--model", dir + "/no-such-model"});
    CHECK(early.exit_code != 0);
    CHECK_THAT(early.output, Catch::Contains("is in use") && !Catch::Contains("no-such-model"));
  }
  // Released when the holder goes: the program runs (its run.json replaces the holder's).
  const auto r = test::run_program("dec7_kv_transfer", program);
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("A run folder's lock goes with its holder when that is killed with SIGKILL", "[experiments][run_folder][lock]") {
  const std::string dir = test::temp_dir("run_folder_kill");
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t holder = ::fork();
  REQUIRE(holder >= 0);
  if (holder == 0) {  // the child: open the folder, say so, and wait to be killed
    ::close(ready[0]);
    char ok = 'n';
    try {
      auto folder = ex::RunFolder::open(dir, {{"seed", 0}}, "holder", false);
      ok = 'y';
      (void)!::write(ready[1], &ok, 1);
      for (;;) ::pause();
    } catch (...) {
      (void)!::write(ready[1], &ok, 1);
    }
    ::_exit(1);
  }
  ::close(ready[1]);
  char ok = 0;
  REQUIRE(::read(ready[0], &ok, 1) == 1);
  ::close(ready[0]);
  REQUIRE(ok == 'y');
  const std::string them = "pid " + std::to_string(holder);
  CHECK_THROWS_WITH(ex::RunFolder::open(dir, {{"seed", 0}}, "second", false), Catch::Contains(them));
  const auto refused = test::run_program("dec7_kv_transfer", {"--out", dir, "--n", "2", "--max-new-tokens", "2"});
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.output, Catch::Contains("is in use") && Catch::Contains(them));

  ::kill(holder, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(holder, &status, 0) == holder);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  // Nobody holds it now: this process can open the folder, and after it a DEC7 program can.
  { auto folder = ex::RunFolder::open(dir, {{"seed", 0}}, "after", true); }
  {  // the two-step form: lock, then open with the lock
    auto held = ex::RunFolder::lock(dir);
    CHECK_THROWS_WITH(ex::RunFolder::lock(dir), Catch::Contains("is in use"));
    auto folder = ex::RunFolder::open(dir, std::move(held), {{"seed", 0}}, "two-step", true);
    CHECK(folder.lock_path() == dir + "/.lock");
    CHECK_THROWS_WITH(ex::RunFolder::open(dir + "/x", io::FileLock(), {{"seed", 0}}, "p", false),
                      Catch::Contains("needs the folder's own lock"));
  }
  const auto r = test::run_program("dec7_kv_transfer", {"--out", dir, "--n", "2", "--max-new-tokens", "2"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("Resumed into records without run.json, a run folder writes run.json only once told the records agree",
          "[experiments][run_folder]") {
  const std::string dir = test::temp_dir("run_folder_deferred");
  {
    auto folder = ex::RunFolder::open(dir, {{"seed", 3}}, "p", false);
    folder.log().append(some_record("p1"));
  }
  REQUIRE(test::fs::remove(dir + "/run.json"));
  auto folder = ex::RunFolder::open(dir, {{"seed", 3}}, "q", true);
  CHECK_FALSE(test::fs::exists(dir + "/run.json"));
  folder.save_settings();
  const auto j = test::read_json(dir + "/run.json");
  CHECK(j["seed"] == 3);
  CHECK(j["programs"] == nlohmann::json::array({"q"}));
}
