#pragma once
/// \file
/// Behaviour scorers: a number per generated text. `Scorer` is the interface; `KeywordScorer`
/// counts lexicon hits per 100 words (the DEC7 study's score; words as metrics/words.hpp splits
/// them, entries as metrics/lexicon.hpp matches them); `TableScorer` serves ratings imported
/// from a CSV file (io/csv.hpp; blind human ratings keyed by the generation's id).
///
/// Each word is counted once, for the first lexicon entry (in file order) that matches it, so
/// the per-entry counts add up to the hits. Score = 100 · hits / words.

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mechlens/core/error.hpp"
#include "mechlens/io/csv.hpp"
#include "mechlens/metrics/lexicon.hpp"
#include "mechlens/metrics/words.hpp"

namespace mechlens::metrics {

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

/// Lexicon hits per 100 words (the DEC7 behaviour score with Lexicon::recursive_default()). The
/// lexicon is always named by the caller: a generic scorer never falls back to one study's words.
class KeywordScorer : public Scorer {
 public:
  explicit KeywordScorer(Lexicon lexicon, EmptyTextPolicy empty = EmptyTextPolicy::Error)
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
    std::vector<std::size_t> lines;
    const auto rows = io::read_csv_file(path, "ratings CSV", lines);
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
