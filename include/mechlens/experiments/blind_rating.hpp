#pragma once
/// \file
/// Blind rating of generations (the study's open step 3). Export writes two CSV files:
///
///   * the sheet for raters — `item,text,rating` — with the generated texts only (no prompt, no
///     condition), rows shuffled with a seed, items numbered in the shuffled order ("g0001", ...)
///     and the rating column empty;
///   * the key, kept apart from raters — `item,record_id,condition,pair_id`.
///
/// Import reads a filled sheet (any CSV with `item` and `rating` columns, other columns ignored)
/// and the key, and returns the run's records with `score` replaced by the rating and `scorer`
/// by "rating:<column>", so the same statistics (summary.hpp) run on human ratings. Both files
/// are CSV as io/csv.hpp writes and reads it (RFC 4180 quoting; a spreadsheet's byte-order mark
/// is skipped when reading).

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/records.hpp"
#include "mechlens/io/csv.hpp"
#include "mechlens/metrics/behaviour.hpp"

namespace mechlens::experiments {

struct BlindExport {
  std::string sheet_csv;  ///< for raters
  std::string key_csv;    ///< kept apart
  size_t items = 0;
};

/// The sheet and key of `records` (see the file comment), shuffled with `seed`.
inline BlindExport blind_export(const std::vector<GenerationRecord>& records, uint64_t seed) {
  std::vector<size_t> order(records.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(seed);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);  // Fisher–Yates
  BlindExport out;
  out.sheet_csv = io::csv_row({"item", "text", "rating"});
  out.key_csv = io::csv_row({"item", "record_id", "condition", "pair_id"});
  for (size_t k = 0; k < order.size(); ++k) {
    const auto& r = records[order[k]];
    const std::string item = fmt::format("g{:04d}", k + 1);
    out.sheet_csv += io::csv_row({item, r.text, ""});
    out.key_csv += io::csv_row({item, r.id(), r.condition, r.pair_id});
  }
  out.items = order.size();
  return out;
}

/// Item -> record id, from a key CSV.
inline std::map<std::string, std::string> read_blind_key(const std::string& path) {
  std::vector<size_t> lines;
  const auto rows = io::read_csv_file(path, "blind-rating key", lines);
  MECHLENS_CHECK(!rows.empty() && rows[0].size() >= 2 && rows[0][0] == "item" && rows[0][1] == "record_id",
                 FormatError, "{}: expected the header 'item,record_id,...' of a key written by blind export", path);
  std::map<std::string, std::string> key;
  for (size_t i = 1; i < rows.size(); ++i) {
    MECHLENS_CHECK(rows[i].size() >= 2, FormatError, "{}: line {} has {} fields", path, lines[i], rows[i].size());
    MECHLENS_CHECK(key.emplace(rows[i][0], rows[i][1]).second, FormatError, "{}: line {}: item '{}' appears twice",
                   path, lines[i], rows[i][0]);
  }
  return key;
}

struct BlindImport {
  std::vector<GenerationRecord> rated;  ///< records with score = rating
  std::vector<std::string> unrated;     ///< record ids the sheet gives no rating for
};

/// Joins ratings (sheet `ratings_path`, columns `item` and `rating_column`) through the key to
/// `records`. An item of the sheet that the key lacks, or a key entry naming no record, is a
/// FormatError; unrated records are listed (the caller decides whether that is acceptable).
inline BlindImport blind_import(const std::vector<GenerationRecord>& records, const std::string& key_path,
                                const std::string& ratings_path, const std::string& rating_column = "rating") {
  const auto key = read_blind_key(key_path);
  // An empty rating cell means "not rated".
  std::vector<size_t> lines;
  const auto rows = io::read_csv_file(ratings_path, "ratings", lines);
  MECHLENS_CHECK(!rows.empty(), FormatError, "{}: the file is empty", ratings_path);
  size_t item_col = SIZE_MAX, rating_col = SIZE_MAX;
  for (size_t c = 0; c < rows[0].size(); ++c) {
    if (rows[0][c] == "item") item_col = c;
    if (rows[0][c] == rating_column) rating_col = c;
  }
  MECHLENS_CHECK(item_col != SIZE_MAX && rating_col != SIZE_MAX, FormatError,
                 "{}: the header needs columns 'item' and '{}'", ratings_path, rating_column);
  std::map<std::string, double> ratings;  // by record id
  for (size_t i = 1; i < rows.size(); ++i) {
    MECHLENS_CHECK(rows[i].size() == rows[0].size(), FormatError, "{}: line {} has {} fields; the header has {}",
                   ratings_path, lines[i], rows[i].size(), rows[0].size());
    const std::string& item = rows[i][item_col];
    MECHLENS_CHECK(key.count(item), FormatError, "{}: line {}: item '{}' is not in the key '{}'", ratings_path, lines[i],
                   item, key_path);
    std::string v = rows[i][rating_col];
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
    if (v.empty()) continue;  // not rated
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    MECHLENS_CHECK(end == v.c_str() + v.size() && std::isfinite(x), FormatError,
                   "{}: line {}: rating '{}' of item '{}' is not a finite number", ratings_path, lines[i], v, item);
    MECHLENS_CHECK(ratings.emplace(key.at(item), x).second, FormatError, "{}: line {}: item '{}' is rated twice",
                   ratings_path, lines[i], item);
  }
  const metrics::TableScorer table("rating:" + rating_column, ratings, ratings_path);
  std::map<std::string, const GenerationRecord*> by_id;
  for (const auto& r : records) by_id[r.id()] = &r;
  for (const auto& [item, id] : key)
    MECHLENS_CHECK(by_id.count(id), FormatError, "key '{}': item '{}' names record '{}', which the run does not hold",
                   key_path, item, id);
  BlindImport out;
  for (const auto& r : records) {
    if (!table.contains(r.id())) {
      out.unrated.push_back(r.id());
      continue;
    }
    GenerationRecord g = r;
    g.score = table.score_item({r.id(), r.text});
    g.scorer = table.name();
    out.rated.push_back(std::move(g));
  }
  return out;
}

}  // namespace mechlens::experiments
