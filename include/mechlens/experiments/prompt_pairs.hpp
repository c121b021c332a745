#pragma once
/// \file
/// Prompt pairs: a treatment prompt (the one that carries what a study looks for) and a baseline
/// prompt matched to it in length and form, read from JSON Lines, one pair per line. The files
/// name the treatment prompt "recursive", the DEC7 study's word (see Role):
///
///     {"id": "p001", "recursive": "Observe the observer ...", "baseline": "Describe the harbour ..."}
///
/// A line may instead (or also) give token ids, `"recursive_ids": [..], "baseline_ids": [..]`,
/// which are used as they are (no tokenizer, no chat template): the way to run a model that has
/// no tokenizer.json, or to pin the exact tokens. Other fields are kept in `extra`. Blank lines
/// are skipped; anything else that is not a pair is a FormatError naming the file and line.

#include <cstdint>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/io/atomic_file.hpp"

namespace mechlens::experiments {

/// Which prompt of a pair: the treatment prompt or its baseline. Role::Recursive is the DEC7
/// study's name for the treatment prompt (the same value), and "recursive" is the word the files
/// use for it — pair files ("recursive", "recursive_ids"), records ("prompt_role", "source.role")
/// and summaries — so that they stay readable for the study they were made for. parse_role also
/// takes "treatment".
enum class Role { Treatment, Baseline, Recursive = Treatment };

/// The role's word in files: "recursive" or "baseline".
inline const char* role_name(Role r) { return r == Role::Treatment ? "recursive" : "baseline"; }

inline Role parse_role(const std::string& s) {
  if (s == "recursive" || s == "treatment") return Role::Treatment;
  if (s == "baseline") return Role::Baseline;
  ::mechlens::detail::raise<ArgumentError>("prompt role '{}' is unknown (expected recursive (treatment) or baseline)",
                                           s.substr(0, 100));
}

struct PromptPair {
  std::string id;
  /// Texts (may be empty when ids are given), named as the file's keys: `recursive` is the
  /// treatment prompt.
  std::string recursive, baseline;
  std::vector<int64_t> recursive_ids, baseline_ids;  ///< pre-tokenized prompts (optional)
  nlohmann::json extra = nlohmann::json::object();   ///< any other fields of the line

  const std::string& text(Role r) const { return r == Role::Treatment ? recursive : baseline; }
  const std::vector<int64_t>& ids(Role r) const { return r == Role::Treatment ? recursive_ids : baseline_ids; }
  bool pre_tokenized() const { return !recursive_ids.empty() && !baseline_ids.empty(); }
};

namespace detail {
inline std::vector<int64_t> read_ids(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto& v = j.at(key);
  MECHLENS_CHECK(v.is_array() && !v.empty(), FormatError, "{}: '{}' must be a non-empty array of token ids", where, key);
  std::vector<int64_t> out;
  for (const auto& x : v) {
    MECHLENS_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0, FormatError,
                   "{}: '{}' holds {}, not a token id (a non-negative integer)", where, key, x.dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}
}  // namespace detail

/// Parses one JSONL line; `where` is "file:line" for messages.
inline PromptPair parse_prompt_pair(const std::string& line, const std::string& where) {
  const nlohmann::json j = io::parse_json(line, where);
  MECHLENS_CHECK(j.is_object(), FormatError, "{}: expected an object {{\"id\", \"recursive\", \"baseline\"}}, got {}",
                 where, j.type_name());
  PromptPair p;
  MECHLENS_CHECK(j.contains("id") && (j["id"].is_string() || j["id"].is_number_integer()), FormatError,
                 "{}: missing 'id' (a string)", where);
  p.id = j["id"].is_string() ? j["id"].get<std::string>() : std::to_string(j["id"].get<int64_t>());
  MECHLENS_CHECK(!p.id.empty(), FormatError, "{}: 'id' is empty", where);
  for (const char* key : {"recursive", "baseline"}) {
    if (!j.contains(key)) continue;
    MECHLENS_CHECK(j[key].is_string(), FormatError, "{}: '{}' must be a string", where, key);
  }
  if (j.contains("recursive")) p.recursive = j["recursive"].get<std::string>();
  if (j.contains("baseline")) p.baseline = j["baseline"].get<std::string>();
  const bool has_ids = j.contains("recursive_ids") || j.contains("baseline_ids");
  if (has_ids) {
    MECHLENS_CHECK(j.contains("recursive_ids") && j.contains("baseline_ids"), FormatError,
                   "{}: give both 'recursive_ids' and 'baseline_ids', or neither", where);
    p.recursive_ids = detail::read_ids(j, "recursive_ids", where);
    p.baseline_ids = detail::read_ids(j, "baseline_ids", where);
  } else {
    MECHLENS_CHECK(!p.recursive.empty() && !p.baseline.empty(), FormatError,
                   "{}: pair '{}' needs non-empty 'recursive' and 'baseline' texts (or *_ids)", where, p.id);
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& k = it.key();
    if (k != "id" && k != "recursive" && k != "baseline" && k != "recursive_ids" && k != "baseline_ids")
      p.extra[k] = it.value();
  }
  return p;
}

/// Reads a JSONL file of pairs. Ids must be unique.
inline std::vector<PromptPair> load_prompt_pairs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MECHLENS_CHECK(in.good(), IoError, "cannot open prompt pairs '{}'", path);
  std::vector<PromptPair> pairs;
  std::set<std::string> seen;
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    PromptPair p = parse_prompt_pair(line, where);
    MECHLENS_CHECK(seen.insert(p.id).second, FormatError, "{}: pair id '{}' appears twice", where, p.id);
    pairs.push_back(std::move(p));
  }
  MECHLENS_CHECK(!pairs.empty(), FormatError, "prompt pairs '{}' holds no pairs", path);
  return pairs;
}

inline nlohmann::json to_json(const PromptPair& p) {
  nlohmann::json j = {{"id", p.id}};
  if (!p.recursive.empty() || p.recursive_ids.empty()) j["recursive"] = p.recursive;
  if (!p.baseline.empty() || p.baseline_ids.empty()) j["baseline"] = p.baseline;
  if (!p.recursive_ids.empty()) j["recursive_ids"] = p.recursive_ids;
  if (!p.baseline_ids.empty()) j["baseline_ids"] = p.baseline_ids;
  for (auto it = p.extra.begin(); it != p.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

/// Writes pairs as JSONL (atomically).
inline void save_prompt_pairs(const std::string& path, const std::vector<PromptPair>& pairs) {
  std::string text;
  for (const auto& p : pairs) text += to_json(p).dump() + "\n";
  io::write_file_atomically(path, text);
}

/// The first n pairs (all when n <= 0); ArgumentError when the file has fewer.
inline std::vector<PromptPair> first_pairs(const std::vector<PromptPair>& pairs, int64_t n) {
  if (n <= 0) return pairs;
  MECHLENS_CHECK(static_cast<size_t>(n) <= pairs.size(), ArgumentError,
                 "asked for {} pairs, but the pair file holds only {}", n, pairs.size());
  return {pairs.begin(), pairs.begin() + n};
}

}  // namespace mechlens::experiments
