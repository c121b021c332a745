// Open step 3: blind rating (blind_rating.hpp). `export` writes the generations of a run for
// raters — texts only, rows shuffled, condition hidden — and a key kept apart; `import` reads the
// filled sheet back and computes the same statistics as the phase whose summary.json it names, on
// the ratings.
//
//   dec7_blind_rating export --run dec7-runs/demo                    # -> dec7-runs/demo/blind/
//   (raters fill the 'rating' column of sheet.csv)
//   dec7_blind_rating import --run dec7-runs/demo --ratings rated.csv --phase phase1

#include "blind_rating.hpp"
#include "common.hpp"

namespace ex = dec7::ex;

int main(int argc, char** argv) {
  std::string run = "dec7-runs/demo", out_dir, conditions;
  uint64_t seed = 0;
  dec7::BlindImportOptions in;
  CLI::App app{"DEC7 blind rating: export generations for raters (condition hidden), import the ratings"};
  app.require_subcommand(1);
  auto* exp = app.add_subcommand("export", "write sheet.csv (item,text,rating; shuffled) and key.csv (kept apart)");
  exp->add_option("--run", run, "run folder holding generations.jsonl")->capture_default_str();
  exp->add_option("--out", out_dir, "where sheet.csv and key.csv go (default: <run>/blind)");
  bool overwrite = false;
  exp->add_flag("--overwrite", overwrite, "replace a key.csv of another export there (default: refuse; its sheet may "
                                          "be with raters, and that key is then lost)");
  exp->add_option("--conditions", conditions, "comma-separated conditions to export (default: every generation)");
  exp->add_option("--seed", seed, "seed of the shuffle")->capture_default_str();
  auto* imp = app.add_subcommand("import", "join ratings through the key and recompute a phase's statistics on them");
  imp->add_option("--run", in.run, "run folder holding generations.jsonl")->default_str(run);
  imp->add_option("--ratings", in.ratings, "the filled sheet (CSV with 'item' and the rating column)")->required();
  imp->add_option("--key", in.key, "the key written by export (default: <run>/blind/key.csv)");
  imp->add_option("--phase", in.phase, "phase folder whose summary.json gives the conditions and contrasts")->capture_default_str();
  imp->add_option("--column", in.column, "rating column of the sheet")->capture_default_str();
  imp->add_flag("--allow-missing", in.allow_missing, "compute on the rated generations when some are unrated");
  CLI11_PARSE(app, argc, argv);

  return dec7::guarded([&] {
    if (exp->parsed()) {
      const auto chosen = dec7::records_of(ex::load_records(run + "/generations.jsonl"), conditions);
      MECHLENS_CHECK(!chosen.empty(), mechlens::ArgumentError, "no generation of {} in '{}'",
                     conditions.empty() ? "any condition" : conditions, run);
      const std::string dir = out_dir.empty() ? run + "/blind" : out_dir;
      const size_t items =
          dec7::export_blind(chosen, seed, dir, overwrite ? dec7::OtherKey::Overwrite : dec7::OtherKey::Refuse);
      std::printf("wrote %zu items: %s/sheet.csv for raters, %s/key.csv to keep apart\n", items, dir.c_str(), dir.c_str());
      return 0;
    }
    if (in.run.empty()) in.run = run;
    const auto r = dec7::run_blind_import(in);
    std::printf("%s\nwrote %s/%s/rated/\n", r.table.c_str(), in.run.c_str(), in.phase.c_str());
    return 0;
  });
}
