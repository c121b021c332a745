// Open step 3: blind rating. `export` writes the generations of a run for raters — texts only,
// rows shuffled, condition hidden — and a key kept apart; `import` reads the filled sheet back
// and computes the same statistics as the phase whose summary.json it names, on the ratings.
//
//   dec7_blind_rating export --run dec7-runs/demo                    # -> dec7-runs/demo/blind/
//   (raters fill the 'rating' column of sheet.csv)
//   dec7_blind_rating import --run dec7-runs/demo --ratings rated.csv --phase phase1

#include "common.hpp"
#include "mechlens/experiments/blind_rating.hpp"

namespace ex = dec7::ex;

int main(int argc, char** argv) {
  std::string run = "dec7-runs/demo", out_dir, ratings, key, phase = "phase1", column = "rating", conditions;
  uint64_t seed = 0;
  bool allow_missing = false;
  CLI::App app{"DEC7 blind rating: export generations for raters (condition hidden), import the ratings"};
  app.require_subcommand(1);
  auto* exp = app.add_subcommand("export", "write sheet.csv (item,text,rating; shuffled) and key.csv (kept apart)");
  exp->add_option("--run", run, "run folder holding generations.jsonl")->capture_default_str();
  exp->add_option("--out", out_dir, "where sheet.csv and key.csv go (default: <run>/blind)");
  exp->add_option("--conditions", conditions, "comma-separated conditions to export (default: every generation)");
  exp->add_option("--seed", seed, "seed of the shuffle")->capture_default_str();
  auto* imp = app.add_subcommand("import", "join ratings through the key and recompute a phase's statistics on them");
  imp->add_option("--run", run, "run folder holding generations.jsonl")->capture_default_str();
  imp->add_option("--ratings", ratings, "the filled sheet (CSV with 'item' and the rating column)")->required();
  imp->add_option("--key", key, "the key written by export (default: <run>/blind/key.csv)");
  imp->add_option("--phase", phase, "phase folder whose summary.json gives the conditions and contrasts")->capture_default_str();
  imp->add_option("--column", column, "rating column of the sheet")->capture_default_str();
  imp->add_flag("--allow-missing", allow_missing, "compute on the rated generations when some are unrated");
  CLI11_PARSE(app, argc, argv);

  return dec7::guarded([&] {
    const auto records = ex::load_records(run + "/generations.jsonl");
    if (exp->parsed()) {
      std::vector<ex::GenerationRecord> chosen;
      std::set<std::string> wanted;
      std::stringstream ss(conditions);
      for (std::string c; std::getline(ss, c, ',');)
        if (!c.empty()) wanted.insert(c);
      for (const auto& r : records)
        if (wanted.empty() || wanted.count(r.condition)) chosen.push_back(r);
      MECHLENS_CHECK(!chosen.empty(), mechlens::ArgumentError, "no generation of {} in '{}'",
                     conditions.empty() ? "any condition" : conditions, run);
      const auto e = ex::blind_export(chosen, seed);
      const std::string dir = out_dir.empty() ? run + "/blind" : out_dir;
      dec7::fs::create_directories(dir);
      mechlens::io::write_file_atomically(dir + "/sheet.csv", e.sheet_csv);
      mechlens::io::write_file_atomically(dir + "/key.csv", e.key_csv);
      std::printf("wrote %zu items: %s/sheet.csv for raters, %s/key.csv to keep apart\n", e.items, dir.c_str(), dir.c_str());
      return 0;
    }
    const std::string key_path = key.empty() ? run + "/blind/key.csv" : key;
    const auto imported = ex::blind_import(records, key_path, ratings, column);
    // The phase's conditions and contrasts, as its summary.json recorded them.
    const auto summary_json = mechlens::io::read_json_file(run + "/" + phase + "/summary.json");
    std::vector<std::string> names;
    for (const auto& c : summary_json.at("conditions")) names.push_back(c.at("name").get<std::string>());
    std::set<std::string> needed(names.begin(), names.end());
    size_t unrated_needed = 0;
    for (const auto& id : imported.unrated)
      if (needed.count(id.substr(0, id.find('|')))) ++unrated_needed;  // condition names hold no '|'
    MECHLENS_CHECK(unrated_needed == 0 || allow_missing, mechlens::ArgumentError,
                   "{} generation(s) of the phase's conditions have no rating in '{}' (e.g. '{}'); rate them or pass "
                   "--allow-missing",
                   unrated_needed, ratings, imported.unrated.empty() ? "" : imported.unrated.front());
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
    const auto summary = ex::summarize_records(imported.rated, names, contrasts, so);
    const std::string table = fmt::format("Blind ratings ('{}' of {}) for {}: {} rated generations{}\n\n{}\n{}", column,
                                          ratings, phase, imported.rated.size(),
                                          unrated_needed ? fmt::format(", {} unrated left out", unrated_needed) : "",
                                          ex::condition_table(summary), ex::contrast_table(summary));
    const std::string dir = run + "/" + phase + "/rated";
    dec7::fs::create_directories(dir);
    nlohmann::json meta = {{"ratings", ratings}, {"key", key_path}, {"column", column}, {"unrated", imported.unrated}};
    ex::write_summary_json(dir + "/summary.json", summary, meta);
    mechlens::io::write_file_atomically(dir + "/summary.csv", ex::summary_csv(summary));
    mechlens::io::write_file_atomically(dir + "/table.txt", table);
    std::printf("%s\nwrote %s/\n", table.c_str(), dir.c_str());
    return 0;
  });
}
