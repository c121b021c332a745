// Studies over several processes (distributed/world.hpp; experiments/run_folder.hpp's shards):
// dec7_kv_transfer on the toy model, started 2 and 3 times with the variables a launcher such as
// torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT; c10d's TCPStore
// over loopback), writes the records, summary and table one process writes, byte for byte. A rank
// killed with SIGKILL mid-run, the others then stopped (as torchrun stops them), and a rerun with
// --resume: only the killed rank's missing units are redone, and the result is identical again.
// Every run uses one CPU thread, so that matrix products sum in the same order in every process.

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <mechlens/distributed/world.hpp>

#include "experiments_test_support.hpp"

extern char** environ;

using namespace mechlens;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t line_count(const std::string& path) {
  const std::string text = read_all(path);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

/// A TCP port the kernel says is free now (for the store's server; the test's only socket).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// Starts `program` with `args`, the environment plus `env`, stdout and stderr into `log`.
pid_t start(const std::string& program, const std::vector<std::string>& args, const std::vector<std::string>& env,
            const std::string& log) {
  std::vector<std::string> argv_s = {program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    bool replaced = false;
    for (const auto& mine : env) replaced = replaced || kv.substr(0, kv.find('=')) == mine.substr(0, mine.find('='));
    if (!replaced) env_s.push_back(kv);
  }
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// dec7_kv_transfer's flags for these runs: 12 toy pairs, one pair per batch (72 units over the
/// 6 conditions), one thread.
std::vector<std::string> flags(const std::string& out, bool resume = false) {
  std::vector<std::string> a = {"--out",        out, "--n", "12", "--max-new-tokens", "8", "--batch-size", "1",
                                "--threads",    "1", "--progress", "off"};
  if (resume) a.push_back("--resume");
  return a;
}

/// Starts `world` ranks of `program` (default dec7_kv_transfer with flags()) on `out`.
std::vector<pid_t> start_ranks(const std::string& out, int world, bool resume, const std::string& program = "dec7_kv_transfer",
                               std::vector<std::string> args = {}) {
  const int port = free_port();
  if (args.empty()) args = flags(out, resume);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r)
    pids.push_back(start(test::program_path(program), args,
                         {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world),
                          "LOCAL_RANK=" + std::to_string(r), "MASTER_ADDR=127.0.0.1",
                          "MASTER_PORT=" + std::to_string(port)},
                         out + "/rank-" + std::to_string(r) + (resume ? "-resume" : "") + ".log"));
  return pids;
}

void expect_same_run(const std::string& single, const std::string& dist) {
  CHECK(read_all(dist + "/generations.jsonl") == read_all(single + "/generations.jsonl"));
  CHECK(read_all(dist + "/phase1/summary.json") == read_all(single + "/phase1/summary.json"));
  CHECK(read_all(dist + "/phase1/table.txt") == read_all(single + "/phase1/table.txt"));
}

}  // namespace

TEST_CASE("A world of one without launcher variables; missing or wrong ones are named", "[experiments][distributed]") {
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  mechlens::distributed::World one = mechlens::distributed::World::from_environment();
  CHECK(one.rank() == 0);
  CHECK(one.size() == 1);
  CHECK_FALSE(one.distributed());
  CHECK(one.units(5) == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(one.all_gather("x", "bytes") == std::vector<std::string>{"bytes"});
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  ::unsetenv("MASTER_ADDR");
  CHECK_THROWS_WITH(mechlens::distributed::World::from_environment(), Catch::Contains("MASTER_ADDR is not set"));
  ::setenv("RANK", "2", 1);
  CHECK_THROWS_WITH(mechlens::distributed::World::from_environment(), Catch::Contains("RANK='2'") &&
                                                                          Catch::Contains("[0, 1]"));
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
}

TEST_CASE("dec7_kv_transfer over 2 and 3 processes writes what one process writes, byte for byte",
          "[experiments][distributed]") {
  const std::string single = test::temp_dir("dist_single");
  const auto one = test::run_program("dec7_kv_transfer", flags(single));
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  REQUIRE(line_count(single + "/generations.jsonl") == 72);
  for (int world : {2, 3}) {
    const std::string out = test::temp_dir("dist_" + std::to_string(world));
    auto pids = start_ranks(out, world, false);
    for (int r = 0; r < world; ++r) {
      INFO("rank " << r << " of " << world << ": " << read_all(out + "/rank-" + std::to_string(r) + ".log"));
      CHECK(wait_exit(pids[r]) == 0);
    }
    INFO(world << " processes");
    expect_same_run(single, out);
    // Each rank wrote its own share of the 72 units (u % world == rank), none twice.
    size_t total = 0;
    for (int r = 0; r < world; ++r) total += line_count(out + "/generations.rank-" + std::to_string(r) + ".jsonl");
    CHECK(total == 72);
    CHECK(line_count(out + "/generations.rank-0.jsonl") == static_cast<size_t>(72 / world));
    // Rank 0 alone printed the table.
    CHECK_THAT(read_all(out + "/rank-0.log"), Catch::Contains("wrote"));
    CHECK(read_all(out + "/rank-1.log").find("wrote") == std::string::npos);
  }
}

TEST_CASE("A rank killed mid-run: --resume redoes only its missing units, and the run is whole again",
          "[experiments][distributed]") {
  const std::string single = test::temp_dir("dist_kill_single");
  REQUIRE(test::run_program("dec7_kv_transfer", flags(single)).exit_code == 0);
  const std::string out = test::temp_dir("dist_kill");
  auto pids = start_ranks(out, 3, false);
  const std::string shard1 = out + "/generations.rank-1.jsonl";
  // Rank 1 is killed once it has written its first record.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (line_count(shard1) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(::kill(pids[1], SIGKILL) == 0);
  CHECK(wait_exit(pids[1]) == 128 + SIGKILL);
  const size_t kept = line_count(shard1);
  INFO("rank 1 had written " << kept << " of its 24 records");
  REQUIRE(kept >= 1);
  REQUIRE(kept < 24);
  // Ranks 0 and 2 finish their shares, then wait for rank 1 at the merge; the launcher stops them.
  for (int r : {0, 2}) {
    const std::string shard = out + "/generations.rank-" + std::to_string(r) + ".jsonl";
    while (line_count(shard) < 24 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(line_count(shard) == 24);
    REQUIRE(::kill(pids[r], SIGKILL) == 0);
    wait_exit(pids[r]);
  }
  CHECK_FALSE(test::fs::exists(out + "/phase1/summary.json"));
  const std::string before0 = read_all(out + "/generations.rank-0.jsonl");
  const std::string before2 = read_all(out + "/generations.rank-2.jsonl");

  // Without --resume the folder is refused; with it, only rank 1's missing units run.
  auto refused = start_ranks(out, 3, false);
  for (auto pid : refused) CHECK(wait_exit(pid) != 0);
  CHECK_THAT(read_all(out + "/rank-0.log"), Catch::Contains("pass --resume"));
  auto resumed = start_ranks(out, 3, true);
  for (int r = 0; r < 3; ++r) {
    INFO("rank " << r << ": " << read_all(out + "/rank-" + std::to_string(r) + "-resume.log"));
    CHECK(wait_exit(resumed[r]) == 0);
  }
  CHECK(read_all(out + "/generations.rank-0.jsonl") == before0);
  CHECK(read_all(out + "/generations.rank-2.jsonl") == before2);
  CHECK(line_count(shard1) == 24);
  expect_same_run(single, out);
  // A single process resuming the finished folder has nothing to do and changes nothing.
  const std::string merged = read_all(out + "/generations.jsonl");
  const auto again = test::run_program("dec7_kv_transfer", flags(out, true));
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK(read_all(out + "/generations.jsonl") == merged);
}

TEST_CASE("dec7_study, every part, over 2 processes writes every file one process writes",
          "[experiments][distributed]") {
  // Shared conditions between parts, R_V of the prompts, the blind-rating export: rank 0's, from
  // the merged records.
  auto args = [](const std::string& out) {
    return std::vector<std::string>{"--out", out, "--n", "6", "--max-new-tokens", "6", "--batch-size", "2",
                                    "--threads", "1", "--progress", "off"};
  };
  const std::string single = test::temp_dir("dist_study_single");
  const auto one = test::run_program("dec7_study", args(single));
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  const std::string out = test::temp_dir("dist_study");
  auto pids = start_ranks(out, 2, false, "dec7_study", args(out));
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r << ": " << read_all(out + "/rank-" + std::to_string(r) + ".log"));
    CHECK(wait_exit(pids[r]) == 0);
  }
  size_t files = 0;
  for (const auto& e : test::fs::recursive_directory_iterator(single)) {
    if (!e.is_regular_file() || e.path().filename() == ".lock") continue;
    const std::string rel = test::fs::relative(e.path(), single).string();
    INFO(rel);
    CHECK(read_all(out + "/" + rel) == read_all(e.path().string()));
    ++files;
  }
  CHECK(files >= 20);  // run.json, generations.jsonl, five phases' four files, blind/
}

TEST_CASE("dec7_kv_transfer on each test checkpoint over 2 processes writes what one process writes",
          "[experiments][distributed]") {
  // The four reference checkpoints (GQA, tied embeddings, a sliding window, q/k/v bias), prompts
  // given as token ids inside their 256-token vocabulary; the toy tokenizer decodes the generated
  // ids for the score.
  const std::string pairs_path = test::temp_dir("dist_ckpt_pairs") + "/pairs.jsonl";
  {
    std::ofstream pairs(pairs_path);
    for (int i = 0; i < 6; ++i) {
      nlohmann::json rec = nlohmann::json::array(), base = nlohmann::json::array();
      for (int k = 0; k < 7 + i % 3; ++k) rec.push_back((11 * i + 7 * k + 3) % 250 + 1);
      for (int k = 0; k < 6 + i % 2; ++k) base.push_back((13 * i + 5 * k + 2) % 250 + 1);
      pairs << nlohmann::json{{"id", "p" + std::to_string(i)}, {"recursive_ids", rec}, {"baseline_ids", base}}.dump()
            << "\n";
    }
  }
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"}) {
    auto args = [&](const std::string& out) {
      return std::vector<std::string>{"--out", out, "--model", test::reference_model(name), "--tokenizer",
                                      test::embedded_model(), "--pairs", pairs_path,
                                      "--max-new-tokens", "6", "--batch-size", "2", "--threads", "1", "--progress", "off"};
    };
    INFO(name);
    const std::string single = test::temp_dir(std::string("dist_ckpt_single_") + name);
    const auto one = test::run_program("dec7_kv_transfer", args(single));
    INFO(one.output);
    REQUIRE(one.exit_code == 0);
    REQUIRE(line_count(single + "/generations.jsonl") == 36);  // 6 conditions x 6 pairs
    const std::string out = test::temp_dir(std::string("dist_ckpt_") + name);
    auto pids = start_ranks(out, 2, false, "dec7_kv_transfer", args(out));
    for (int r = 0; r < 2; ++r) {
      INFO("rank " << r << ": " << read_all(out + "/rank-" + std::to_string(r) + ".log"));
      CHECK(wait_exit(pids[r]) == 0);
    }
    expect_same_run(single, out);
  }
}
