#pragma once
// Shared by the tokenizer tests: where the fetched vocabularies and the HF reference files are.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "mechlens/io/json.hpp"

namespace mechlens_test {

/// The cache the ctest fixture `tokenizer_vocabularies` fills (MECHLENS_TOKENIZER_CACHE in the
/// environment overrides the configured one).
inline std::string vocabulary_dir(const std::string& name) {
  const char* env = std::getenv("MECHLENS_TOKENIZER_CACHE");
  const std::filesystem::path dir = std::filesystem::path(env != nullptr ? env : MECHLENS_TOKENIZER_CACHE) / name;
  if (!std::filesystem::exists(dir / "tokenizer.json")) {
    FAIL("the " << name << " vocabulary is missing from " << dir.string()
                << "; run `ctest -R tokenizer_vocabularies` or tests/tokenizer/fetch_vocabularies.sh");
  }
  return dir.string();
}

inline const nlohmann::json& reference(const std::string& file) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(file);
  if (it == cache.end()) {
    it = cache.emplace(file, mechlens::io::read_json_file(std::string(MECHLENS_TEST_DATA) + "/tokenizer/" + file)).first;
  }
  return it->second;
}

/// The message of the E that f() throws, or "<nothing thrown>"; another exception type escapes
/// and fails the test.
template <class E, class F>
std::string thrown(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<nothing thrown>";
}

}  // namespace mechlens_test
