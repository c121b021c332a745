#pragma once
// Open step 3: blind rating. Export writes the generations of a run for raters — texts only, rows
// shuffled, condition hidden — and a key kept apart (experiments/blind_rating.hpp); import reads
// the filled sheet back and computes the same statistics as the phase whose summary.json it names,
// on the ratings. Both work on a run folder's records; no model is loaded.

#include <set>

#include "common.hpp"
#include "mechlens/experiments/blind_rating.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/io/read_file.hpp"

namespace dec7 {

/// The records of the comma-separated `conditions` (empty: every record).
inline std::vector<ex::GenerationRecord> records_of(const std::vector<ex::GenerationRecord>& records,
                                                    const std::string& conditions) {
  std::set<std::string> wanted;
  std::stringstream ss(conditions);
  for (std::string c; std::getline(ss, c, ',');)
    if (!c.empty()) wanted.insert(c);
  std::vector<ex::GenerationRecord> chosen;
  for (const auto& r : records)
    if (wanted.empty() || wanted.count(r.condition)) chosen.push_back(r);
  return chosen;
}

/// What an export does when <dir>/key.csv exists and differs from it (made from other records or
/// another seed, and perhaps handed out with its sheet: a sheet with raters needs the key that
/// decodes it).
enum class OtherKey {
  Keep,       ///< leave both files, skip the export with a warning on stderr (dec7_study)
  Refuse,     ///< an error naming the file (dec7_blind_rating export)
  Overwrite,  ///< replace them (dec7_blind_rating export --overwrite)
};

/// Writes <dir>/sheet.csv and <dir>/key.csv for `records` shuffled with `seed`; returns the items
/// (0 when an existing key is kept). The same export again changes nothing.
inline size_t export_blind(const std::vector<ex::GenerationRecord>& records, uint64_t seed, const std::string& dir,
                           OtherKey other = OtherKey::Refuse) {
  const auto e = ex::blind_export(records, seed);
  const std::string key = dir + "/key.csv";
  if (other != OtherKey::Overwrite && fs::exists(key)) {
    if (mechlens::io::read_file(key, "blind-rating key") == e.key_csv) return e.items;
    MECHLENS_CHECK(other == OtherKey::Keep, mechlens::ArgumentError,
                   "'{}' holds the key of another export (other records or another seed; its sheet may be with "
                   "raters, and this key is the only way to read their ratings): export to another --out folder, or "
                   "pass --overwrite to replace it",
                   key);
    std::fprintf(stderr,
                 "warning: %s was exported from other records; kept as it is, with its sheet (export again with "
                 "dec7_blind_rating export --out <folder>, or delete %s first)\n",
                 key.c_str(), dir.c_str());
    return 0;
  }
  fs::create_directories(dir);
  mechlens::io::write_file_atomically(dir + "/sheet.csv", e.sheet_csv);
  mechlens::io::write_file_atomically(key, e.key_csv);
  return e.items;
}

/// The export of a study's run folder: every generation recorded in it, into <out>/blind/.
inline size_t run_blind_export(Setup& s, uint64_t seed) {
  return export_blind(s.log().records(), seed, s.flags.out + "/blind", OtherKey::Keep);
}

struct BlindImportOptions {
  std::string run;            ///< run folder holding generations.jsonl
  std::string ratings;        ///< the filled sheet
  std::string key;            ///< the key (default: <run>/blind/key.csv)
  std::string phase = "phase1";
  std::string column = "rating";
  bool allow_missing = false;
};

/// Joins the ratings through the key and recomputes the phase's statistics (its summary.json's
/// conditions and contrasts) on them; writes <run>/<phase>/rated/.
inline PhaseResult run_blind_import(const BlindImportOptions& o) {
  const auto records = ex::load_records(o.run + "/generations.jsonl");
  const std::string key_path = o.key.empty() ? o.run + "/blind/key.csv" : o.key;
  const auto imported = ex::blind_import(records, key_path, o.ratings, o.column);
  // The phase's conditions and contrasts, as its summary.json recorded them.
  const auto summary_json = mechlens::io::read_json_file(o.run + "/" + o.phase + "/summary.json");
  std::vector<std::string> names;
  for (const auto& c : summary_json.at("conditions")) names.push_back(c.at("name").get<std::string>());
  std::set<std::string> needed(names.begin(), names.end());
  size_t unrated_needed = 0;
  for (const auto& id : imported.unrated)
    if (needed.count(id.substr(0, id.find('|')))) ++unrated_needed;  // condition names hold no '|'
  MECHLENS_CHECK(unrated_needed == 0 || o.allow_missing, mechlens::ArgumentError,
                 "{} generation(s) of the phase's conditions have no rating in '{}' (e.g. '{}'); rate them or pass "
                 "--allow-missing",
                 unrated_needed, o.ratings, imported.unrated.empty() ? "" : imported.unrated.front());
  std::vector<ex::Contrast> contrasts;
  ex::Correction correction = ex::Correction::None;
  for (const auto& c : summary_json.at("contrasts")) {
    ex::Contrast k{c.at("name"), c.at("a"), c.at("b"), c.value("label", ""), c.value("family", ""), "", ""};
    if (c.contains("transfer_efficiency")) {
      k.te_baseline = c["transfer_efficiency"]["reference"]["baseline"];
      k.te_treatment = c["transfer_efficiency"]["reference"]["recursive"];
    }
    const std::string corr = c.value("correction", "none");
    if (corr == "holm") correction = ex::Correction::Holm;
    if (corr == "benjamini-hochberg") correction = ex::Correction::BenjaminiHochberg;
    contrasts.push_back(k);
  }
  ex::SummaryOptions so;
  so.correction = correction;
  PhaseResult r;
  r.summary = ex::summarize_records(imported.rated, names, contrasts, so);
  r.table = fmt::format("Blind ratings ('{}' of {}) for {}: {} rated generations{}\n\n{}\n{}", o.column, o.ratings,
                        o.phase, imported.rated.size(),
                        unrated_needed ? fmt::format(", {} unrated left out", unrated_needed) : "",
                        ex::condition_table(r.summary), ex::contrast_table(r.summary));
  const std::string dir = o.run + "/" + o.phase + "/rated";
  fs::create_directories(dir);
  nlohmann::json meta = {{"ratings", o.ratings}, {"key", key_path}, {"column", o.column}, {"unrated", imported.unrated}};
  ex::write_summary_json(dir + "/summary.json", r.summary, meta);
  mechlens::io::write_file_atomically(dir + "/summary.csv", ex::summary_csv(r.summary));
  mechlens::io::write_file_atomically(dir + "/table.txt", r.table);
  return r;
}

}  // namespace dec7
