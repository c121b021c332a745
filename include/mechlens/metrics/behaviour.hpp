#pragma once
/// \file
/// Behaviour scorers: a number per generated text. `Scorer` is the interface; `KeywordScorer`
/// counts lexicon hits per 100 words (the DEC7 study's score); `TableScorer` serves ratings
/// imported from a CSV file (blind human ratings keyed by the generation's id).
///
/// Words. A word is a maximal run of word characters — ASCII letters and digits, and every
/// non-ASCII UTF-8 character except punctuation and spaces (U+0080–U+00BF, × ÷, U+2000–U+206F,
/// U+2E00–U+2E7F, U+3000–U+303F, U+FE30–U+FE4F, U+FF00–U+FF0F, U+FF1A–U+FF20) — where a hyphen
/// (-, U+2010, U+2011) or an apostrophe (', U+2019) between two word characters joins them.
/// So "self-referential", "meta-awareness" and "don't" are one word each; "observe," is
/// "observe"; "--" and "…" are no words; "3.14" is two words. Invalid UTF-8 bytes count as word
/// characters. Before matching, joiners are normalised to '-' and '\'' and, unless the lexicon
/// is case-sensitive, ASCII letters are lower-cased.
///
/// Lexicon entries. {"stem": "observ*"} matches every word that begins with "observ" (the word
/// "observ" itself included); a stem without '*' matches that word only. {"regex": "..."} is an
/// ECMAScript regular expression (std::regex) that must match the whole word. Each word is
/// counted once, for the first entry (in file order) that matches it, so the per-entry counts
/// add up to the hits. Score = 100 · hits / words.

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"

namespace mechlens::metrics {

// ---------------------------------------------------------------------------------------------
// Words
// ---------------------------------------------------------------------------------------------

namespace detail {

enum class CharClass { Word, Joiner, Separator };

/// Decodes the UTF-8 character at text[i]; returns its code point and byte length. Invalid or
/// truncated sequences decode as the single byte (a word character by the rule above).
inline std::pair<std::uint32_t, std::size_t> decode_utf8(const std::string& text, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (len == 0 || i + len > text.size()) return {b0, 1};
  std::uint32_t cp = b0 & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return {b0, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len};
}

inline CharClass classify(std::uint32_t cp) {
  if (cp < 0x80) {
    if (std::isalnum(static_cast<int>(cp))) return CharClass::Word;
    if (cp == '-' || cp == '\'') return CharClass::Joiner;
    return CharClass::Separator;
  }
  if (cp == 0x2010 || cp == 0x2011 || cp == 0x2019) return CharClass::Joiner;
  if ((cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x206F) ||
      (cp >= 0x2E00 && cp <= 0x2E7F) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
      (cp >= 0xFF00 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20))
    return CharClass::Separator;
  return CharClass::Word;
}

}  // namespace detail

/// The words of `text` by the rule in this file's comment, as they appear (joiners as written).
inline std::vector<std::string> split_words(const std::string& text) {
  struct Piece {
    std::size_t begin, len;
    detail::CharClass cls;
  };
  std::vector<Piece> pieces;
  for (std::size_t i = 0; i < text.size();) {
    const auto [cp, len] = detail::decode_utf8(text, i);
    pieces.push_back({i, len, detail::classify(cp)});
    i += len;
  }
  std::vector<std::string> words;
  std::size_t k = 0;
  while (k < pieces.size()) {
    if (pieces[k].cls != detail::CharClass::Word) {
      ++k;
      continue;
    }
    const std::size_t start = pieces[k].begin;
    std::size_t end = pieces[k].begin + pieces[k].len;
    ++k;
    while (k < pieces.size()) {
      if (pieces[k].cls == detail::CharClass::Word) {
        end = pieces[k].begin + pieces[k].len;
        ++k;
      } else if (pieces[k].cls == detail::CharClass::Joiner && k + 1 < pieces.size() &&
                 pieces[k + 1].cls == detail::CharClass::Word) {
        end = pieces[k + 1].begin + pieces[k + 1].len;
        k += 2;
      } else {
        break;
      }
    }
    words.push_back(text.substr(start, end - start));
  }
  return words;
}

namespace detail {

/// A word as matched: joiners normalised to '-' / '\'', ASCII lower-cased unless case-sensitive.
inline std::string normalise_word(const std::string& word, bool case_sensitive) {
  std::string out;
  out.reserve(word.size());
  for (std::size_t i = 0; i < word.size();) {
    const auto [cp, len] = decode_utf8(word, i);
    if (cp == 0x2010 || cp == 0x2011)
      out += '-';
    else if (cp == 0x2019)
      out += '\'';
    else if (cp < 0x80 && !case_sensitive)
      out += static_cast<char>(std::tolower(static_cast<int>(cp)));
    else
      out.append(word, i, len);
    i += len;
  }
  return out;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Lexicon
// ---------------------------------------------------------------------------------------------

/// The study's default lexicon; the same text ships as examples/lexicons/recursive_default.json.
inline constexpr const char* kRecursiveDefaultLexiconJson = R"json({
  "name": "recursive_default",
  "description": "The DEC7 study's recursive self-reference stems (shared/research-context.md). A stem ending in '*' matches every word that begins with it; 'notic(ing)' is read as the word 'noticing' only.",
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

// ---------------------------------------------------------------------------------------------
// Scorers
// ---------------------------------------------------------------------------------------------

/// One item to score: its id (the generation record's id) and its text.
struct ScoreItem {
  std::string id;
  std::string text;
};

/// Interface of every behaviour scorer.
class Scorer {
 public:
  virtual ~Scorer() = default;
  /// A short name for tables and result records, e.g. "keywords:recursive_default".
  virtual std::string name() const = 0;
  /// Score of one text. Scorers that rate by id (TableScorer) throw here; use score_item.
  virtual double score(const std::string& text) const = 0;
  /// Score of an item; by default the score of its text.
  virtual double score_item(const ScoreItem& item) const { return score(item.text); }
};

/// Keyword counts of one text.
struct KeywordScore {
  std::size_t words = 0;
  std::size_t hits = 0;                ///< words matching some entry
  std::vector<std::size_t> counts;     ///< per lexicon entry (lexicon order), summing to hits
  double per_100_words = std::numeric_limits<double>::quiet_NaN();  ///< 100 hits / words
  bool defined = false;                ///< false for a text with no words
  std::string reason;
};

/// What a KeywordScorer's score() does with a text that has no words (hits per 100 words is
/// 0/0 there).
enum class EmptyTextPolicy {
  Error,  ///< throw ArgumentError (default: an empty generation is worth noticing)
  Zero,   ///< score 0
};

/// Lexicon hits per 100 words (the DEC7 behaviour score).
class KeywordScorer : public Scorer {
 public:
  explicit KeywordScorer(Lexicon lexicon = Lexicon::recursive_default(),
                         EmptyTextPolicy empty = EmptyTextPolicy::Error)
      : lexicon_(std::move(lexicon)), empty_(empty) {}

  std::string name() const override { return "keywords:" + lexicon_.name(); }

  /// Words, hits, per-entry counts and hits per 100 words of `text`.
  KeywordScore analyse(const std::string& text) const {
    KeywordScore s;
    s.counts.assign(lexicon_.entries().size(), 0);
    for (const auto& w : split_words(text)) {
      ++s.words;
      const long k = lexicon_.match(w);
      if (k >= 0) {
        ++s.hits;
        ++s.counts[static_cast<std::size_t>(k)];
      }
    }
    if (s.words == 0) {
      s.reason = "the text has no words";
      return s;
    }
    s.per_100_words = 100.0 * static_cast<double>(s.hits) / static_cast<double>(s.words);
    s.defined = true;
    return s;
  }

  double score(const std::string& text) const override {
    const auto s = analyse(text);
    if (!s.defined) {
      MECHLENS_CHECK(empty_ == EmptyTextPolicy::Zero, ArgumentError,
                     "{}: the text has no words, so hits per 100 words is undefined "
                     "(construct the scorer with EmptyTextPolicy::Zero to score such texts 0); text: '{}'",
                     name(), text.substr(0, 80));
      return 0.0;
    }
    return s.per_100_words;
  }

  const Lexicon& lexicon() const { return lexicon_; }

 private:
  Lexicon lexicon_;
  EmptyTextPolicy empty_;
};

namespace detail {

/// Splits CSV text into records of fields (RFC 4180: commas, double quotes with "" escapes,
/// LF or CRLF line ends, quoted fields may span lines). Records of one empty field (blank
/// lines) are dropped. `line_of` receives each record's 1-based starting line.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& where,
                                                       std::vector<std::size_t>& line_of) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, field_started_quoted = false;
  std::size_t line = 1, row_line = 1;
  auto end_row = [&] {
    row.push_back(field);
    field.clear();
    if (!(row.size() == 1 && row[0].empty() && !field_started_quoted)) {
      rows.push_back(row);
      line_of.push_back(row_line);
    }
    row.clear();
    field_started_quoted = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"' && field.empty()) {
      quoted = field_started_quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
      ++line;
      row_line = line;
    } else {
      field += c;
    }
  }
  MECHLENS_CHECK(!quoted, FormatError, "{}: a quoted field starting on line {} is never closed", where, row_line);
  if (!field.empty() || !row.empty()) end_row();
  return rows;
}

}  // namespace detail

/// Ratings imported from a table, looked up by item id (e.g. blind human ratings of
/// generations exported by id). score(text) throws: a table rates items, not texts.
class TableScorer : public Scorer {
 public:
  TableScorer(std::string name, std::map<std::string, double> ratings, std::string source = "")
      : name_(std::move(name)), ratings_(std::move(ratings)), source_(std::move(source)) {}

  /// Reads a CSV file with a header row; `id_column` and `rating_column` name the columns used
  /// (others are ignored). Ids are taken as written; ratings, trimmed of spaces, must be finite
  /// numbers; ids must be unique. A UTF-8 byte-order mark is skipped. The scorer's name is
  /// `name`, or "table:<rating_column>" when empty.
  static TableScorer from_csv(const std::string& path, const std::string& id_column = "id",
                              const std::string& rating_column = "rating", const std::string& name = "") {
    std::ifstream in(path, std::ios::binary);
    MECHLENS_CHECK(in.good(), IoError, "cannot open ratings CSV '{}'", path);
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::string text = buffer.str();
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // a spreadsheet's UTF-8 byte-order mark
    std::vector<std::size_t> lines;
    const auto rows = detail::parse_csv(text, path, lines);
    MECHLENS_CHECK(!rows.empty(), FormatError, "{}: the file is empty; expected a header row with '{}' and '{}'",
                   path, id_column, rating_column);
    const auto& header = rows[0];
    auto column = [&](const std::string& wanted) {
      for (std::size_t c = 0; c < header.size(); ++c)
        if (header[c] == wanted) return c;
      std::string have;
      for (const auto& h : header) have += (have.empty() ? "'" : ", '") + h + "'";
      ::mechlens::detail::raise<FormatError>("{}: the header has no column '{}'; columns are {}", path, wanted, have);
    };
    const std::size_t id_col = column(id_column), rating_col = column(rating_column);
    std::map<std::string, double> ratings;
    for (std::size_t r = 1; r < rows.size(); ++r) {
      const auto& row = rows[r];
      MECHLENS_CHECK(row.size() == header.size(), FormatError, "{}: line {} has {} fields; the header has {}", path,
                     lines[r], row.size(), header.size());
      const std::string& id = row[id_col];
      std::string value = row[rating_col];
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
      char* end = nullptr;
      const double v = value.empty() ? std::nan("") : std::strtod(value.c_str(), &end);
      MECHLENS_CHECK(!value.empty() && end == value.c_str() + value.size() && std::isfinite(v), FormatError,
                     "{}: line {}: rating '{}' of id '{}' is not a finite number", path, lines[r], row[rating_col], id);
      MECHLENS_CHECK(ratings.emplace(id, v).second, FormatError, "{}: line {}: id '{}' appears twice", path, lines[r],
                     id);
    }
    return TableScorer(name.empty() ? "table:" + rating_column : name, std::move(ratings), path);
  }

  std::string name() const override { return name_; }

  double score(const std::string&) const override {
    ::mechlens::detail::raise<ArgumentError>(
        "{}: a table scorer rates items by id; call score_item({{id, text}}) instead of score(text)", name_);
  }

  /// The rating of item.id; NotFoundError naming the id (and the file) when the table lacks it.
  double score_item(const ScoreItem& item) const override {
    const auto it = ratings_.find(item.id);
    MECHLENS_CHECK(it != ratings_.end(), NotFoundError, "{}: no rating for id '{}'{}", name_, item.id,
                   source_.empty() ? "" : " in " + source_);
    return it->second;
  }

  bool contains(const std::string& id) const { return ratings_.count(id) != 0; }
  std::size_t size() const { return ratings_.size(); }
  const std::map<std::string, double>& ratings() const { return ratings_; }

 private:
  std::string name_;
  std::map<std::string, double> ratings_;
  std::string source_;
};

}  // namespace mechlens::metrics
