#pragma once
/// \file
/// Keyword lexicons: named entries that each match whole words (words as metrics/words.hpp
/// splits and normalises them), read from JSON, and the DEC7 study's lexicon built in.
///
/// Entries. {"stem": "observ*"} matches every word that begins with "observ" (the word "observ"
/// itself included); a stem without '*' matches that word only. {"regex": "..."} is an
/// ECMAScript regular expression (std::regex) that must match the whole word. A word matches the
/// first entry (in file order) that matches it (Lexicon::match), so the scorers count each word
/// once and their per-entry counts add up to the hits.

#include <cstddef>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/metrics/words.hpp"

namespace mechlens::metrics {

/// The study's default lexicon; the same text ships as examples/lexicons/recursive_default.json.
inline constexpr const char* kRecursiveDefaultLexiconJson = R"json({
  "name": "recursive_default",
  "description": "The DEC7 study's recursive self-reference stems. A stem ending in '*' matches every word that begins with it; 'notic(ing)' is read as the word 'noticing' only.",
  "case_sensitive": false,
  "entries": [
    {"stem": "observ*"},
    {"stem": "awar*"},
    {"stem": "conscious*"},
    {"stem": "process*"},
    {"stem": "experienc*"},
    {"label": "notic(ing)", "regex": "noticing"},
    {"stem": "myself"},
    {"stem": "itself"},
    {"stem": "yourself"},
    {"stem": "generat*"},
    {"stem": "emerg*"},
    {"stem": "simultaneous*"},
    {"stem": "recursiv*"},
    {"stem": "self-referent*"},
    {"stem": "meta-*"}
  ]
})json";

/// Keyword lexicon: named entries that each match whole words (see the file comment).
class Lexicon {
 public:
  struct Entry {
    std::string label;     ///< as reported in counts (default: the stem or regex text)
    bool is_regex = false;
    std::string pattern;   ///< the stem without '*' (normalised) or the regex text
    bool prefix = false;   ///< stem ended in '*'
  };

  /// Parses a lexicon object: {"name", "description"?, "case_sensitive"? (false),
  /// "entries": [{"stem" | "regex", "label"?}, ...]}. `where` names the source in errors.
  static Lexicon from_json(const nlohmann::json& j, const std::string& where) {
    MECHLENS_CHECK(j.is_object(), ConfigError, "{}: a lexicon must be a JSON object; got {}", where, j.type_name());
    Lexicon lex;
    lex.name_ = io::json_required<std::string>(j, "name", where);
    lex.description_ = io::json_optional<std::string>(j, "description", "", where);
    lex.case_sensitive_ = io::json_optional<bool>(j, "case_sensitive", false, where);
    const auto it = j.find("entries");
    MECHLENS_CHECK(it != j.end() && it->is_array() && !it->empty(), ConfigError,
                   "{}: 'entries' must be a non-empty array of {{\"stem\": ...}} or {{\"regex\": ...}} objects", where);
    for (std::size_t k = 0; k < it->size(); ++k) {
      const auto& e = (*it)[k];
      const std::string at = fmt::format("{}: entries[{}]", where, k);
      MECHLENS_CHECK(e.is_object(), ConfigError, "{} must be an object; got {}", at, e.type_name());
      const bool has_stem = e.contains("stem"), has_regex = e.contains("regex");
      MECHLENS_CHECK(has_stem != has_regex, ConfigError, "{} must have exactly one of 'stem' and 'regex'", at);
      Entry entry;
      if (has_stem) {
        std::string stem = io::json_required<std::string>(e, "stem", at);
        entry.label = stem;
        entry.prefix = !stem.empty() && stem.back() == '*';
        if (entry.prefix) stem.pop_back();
        MECHLENS_CHECK(!stem.empty() && stem.find('*') == std::string::npos, ConfigError,
                       "{}: stem '{}' must be a word, optionally ending in a single '*'", at, entry.label);
        entry.pattern = detail::normalise_word(stem, lex.case_sensitive_);
      } else {
        entry.is_regex = true;
        entry.pattern = io::json_required<std::string>(e, "regex", at);
        entry.label = entry.pattern;
        try {
          lex.regexes_.emplace_back(entry.pattern, lex.regex_flags());
        } catch (const std::regex_error& err) {
          ::mechlens::detail::raise<ConfigError>("{}: regex '{}' is not a valid ECMAScript regex: {}", at,
                                                 entry.pattern, err.what());
        }
      }
      entry.label = io::json_optional<std::string>(e, "label", entry.label, at);
      if (!entry.is_regex) lex.regexes_.emplace_back();  // keep regexes_ parallel to entries_
      lex.entries_.push_back(std::move(entry));
    }
    return lex;
  }

  /// Reads a lexicon JSON file (IoError / FormatError / ConfigError naming the file).
  static Lexicon from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

  /// The study's lexicon (compiled in; identical to examples/lexicons/recursive_default.json).
  static Lexicon recursive_default() {
    return from_json(nlohmann::json::parse(kRecursiveDefaultLexiconJson), "<built-in recursive_default lexicon>");
  }

  const std::string& name() const { return name_; }
  const std::string& description() const { return description_; }
  bool case_sensitive() const { return case_sensitive_; }
  const std::vector<Entry>& entries() const { return entries_; }

  /// Index of the first entry matching `word` (as split_words returns it), or -1.
  long match(const std::string& word) const {
    const std::string w = detail::normalise_word(word, case_sensitive_);
    for (std::size_t k = 0; k < entries_.size(); ++k) {
      const auto& e = entries_[k];
      bool hit;
      if (e.is_regex)
        hit = std::regex_match(w, regexes_[k]);
      else if (e.prefix)
        hit = w.size() >= e.pattern.size() && w.compare(0, e.pattern.size(), e.pattern) == 0;
      else
        hit = w == e.pattern;
      if (hit) return static_cast<long>(k);
    }
    return -1;
  }

 private:
  std::regex::flag_type regex_flags() const {
    return case_sensitive_ ? std::regex::ECMAScript : (std::regex::ECMAScript | std::regex::icase);
  }

  std::string name_, description_;
  bool case_sensitive_ = false;
  std::vector<Entry> entries_;
  std::vector<std::regex> regexes_;  // parallel to entries_ (default-constructed for stems)
};

}  // namespace mechlens::metrics
