#pragma once
// Helpers of the experiments tests: temporary folders, running the DEC7 programs (built with the
// examples; the test executable depends on them), a byte-level tokenizer for the reference
// checkpoints (vocabulary 256, no tokenizer of their own), and one shared demo run on the
// embedded toy model.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <mechlens/core/filesystem.hpp>

#include "../../examples/toy/tokenizer_json.hpp"

namespace mechlens::test {

namespace fs = std::filesystem;

inline std::string embedded_model() { return std::string(MECHLENS_SOURCE_DIR) + "/examples/models/dec7-toy"; }
inline std::string toy_pairs() { return std::string(MECHLENS_SOURCE_DIR) + "/examples/prompts/toy_pairs.jsonl"; }
inline std::string instruct_pairs() { return std::string(MECHLENS_SOURCE_DIR) + "/examples/prompts/instruct_pairs.jsonl"; }
inline std::string reference_model(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

/// A fresh empty folder under the build tree.
inline std::string temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  const fs::path p = fs::path(MECHLENS_BINARY_DIR) / "tests" / "experiments-tmp" /
                     (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  // NOTE: POSIX removal, not fs::remove_all (see core/filesystem.hpp: PyTorch wheels' copy crashes).
  mechlens::detail::remove_tree(p.string());
  fs::create_directories(p);
  return p.string();
}

inline std::string program_path(const std::string& name) {
  return std::string(MECHLENS_BINARY_DIR) + "/examples/dec7/" + name;
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct ProgramRun {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr
};

/// Runs a DEC7 program with arguments; fails the test when the program was not built.
inline ProgramRun run_program(const std::string& name, const std::vector<std::string>& args) {
  const std::string path = program_path(name);
  if (!fs::exists(path))
    FAIL("program " << path << " does not exist: build the examples (MECHLENS_BUILD_EXAMPLES) with the tests");
  std::string cmd = shell_quote(path);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " 2>&1";  // stderr is no terminal here, so the progress bar stays quiet
  ProgramRun r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// tokenizer.json of a byte-level BPE with exactly the 256 byte tokens (id = byte value): what a
/// vocabulary-256 reference checkpoint can be driven with.
inline std::string write_byte_tokenizer(const std::string& dir) {
  const auto bytes = toy::byte_symbols();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[bytes[static_cast<size_t>(b)]] = b;
  nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::ordered_json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                 {"ignore_merges", false}, {"vocab", vocab}, {"merges", nlohmann::ordered_json::array()}}}};
  const std::string path = dir + "/tokenizer.json";
  std::ofstream(path) << j.dump(1);
  return path;
}

/// The output folder of one dec7_demo run on the embedded model with default settings, made
/// once per test process.
inline const std::string& demo_run() {
  static const std::string dir = [] {
    const std::string d = temp_dir("demo");
    const auto r = run_program("dec7_demo", {"--out", d});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return d;
  }();
  return dir;
}

/// Copies one file (plain streams: no std::filesystem copy machinery).
inline void copy_file(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  REQUIRE(in.good());
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  REQUIRE(out.good());
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

}  // namespace mechlens::test
