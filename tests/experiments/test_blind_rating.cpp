// Blind rating: the sheet hides the condition and shuffles the rows, the key maps them back, and
// imported ratings give the same statistics as the scores they carry.

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

#include <mechlens/experiments/blind_rating.hpp>
#include <mechlens/experiments/records.hpp>
#include <mechlens/experiments/summary.hpp>
#include <mechlens/io/csv.hpp>
#include <mechlens/io/read_file.hpp>
#include <mechlens/metrics/behaviour.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

TEST_CASE("The blind sheet hides conditions and shuffles rows; the key maps every item back", "[experiments][blind]") {
  const auto records = ex::load_records(test::demo_run() + "/generations.jsonl");
  const auto e = ex::blind_export(records, 7);
  CHECK(e.items == records.size());
  CHECK_THAT(e.sheet_csv, Catch::StartsWith("item,text,rating\n"));
  CHECK(e.sheet_csv.find("_kv@") == std::string::npos);  // no condition name
  CHECK(e.sheet_csv.find("toy-0") == std::string::npos);  // no pair id
  std::vector<size_t> lines;
  const auto rows = mechlens::io::parse_csv(e.sheet_csv, "sheet", lines);
  for (const auto& row : rows) CHECK(row.size() == 3);
  const std::string dir = test::temp_dir("blind");
  std::ofstream(dir + "/key.csv") << e.key_csv;
  const auto key = ex::read_blind_key(dir + "/key.csv");
  CHECK(key.size() == records.size());
  // Shuffled: the first items are not the first records.
  std::set<std::string> ids;
  size_t same_place = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string item = fmt::format("g{:04d}", i + 1);
    ids.insert(key.at(item));
    same_place += key.at(item) == records[i].id();
  }
  CHECK(ids.size() == records.size());
  CHECK(same_place < records.size() / 10);
}

TEST_CASE("An export does not replace the key of another export unless told to", "[experiments][blind]") {
  const std::string dir = test::temp_dir("rekey");
  auto exported = [&](const std::string& seed, bool overwrite) {
    std::vector<std::string> args = {"export", "--run", test::demo_run(), "--out", dir, "--seed", seed};
    if (overwrite) args.push_back("--overwrite");
    return test::run_program("dec7_blind_rating", args);
  };
  REQUIRE(exported("3", false).exit_code == 0);
  const std::string key = mechlens::io::read_file(dir + "/key.csv", "key");
  REQUIRE(exported("3", false).exit_code == 0);  // the same export again: nothing changes
  const auto other = exported("4", false);
  CHECK(other.exit_code != 0);
  CHECK_THAT(other.output, Catch::Contains(dir + "/key.csv") && Catch::Contains("--overwrite"));
  CHECK(mechlens::io::read_file(dir + "/key.csv", "key") == key);  // the raters' key is still there
  REQUIRE(exported("4", true).exit_code == 0);
  CHECK(mechlens::io::read_file(dir + "/key.csv", "key") != key);
}

TEST_CASE("Imported ratings give the statistics of the scores they carry", "[experiments][blind]") {
  const auto records = ex::load_records(test::demo_run() + "/generations.jsonl");
  const std::string dir = test::temp_dir("rated");
  REQUIRE(test::run_program("dec7_blind_rating", {"export", "--run", test::demo_run(), "--out", dir, "--seed", "3"}).exit_code == 0);
  // A "rater" who gives each text its keyword score (read from the sheet, not from the records).
  std::ifstream sheet(dir + "/sheet.csv");
  std::stringstream buf;
  buf << sheet.rdbuf();
  std::vector<size_t> lines;
  const auto rows = mechlens::io::parse_csv(buf.str(), "sheet", lines);
  const metrics::KeywordScorer scorer(metrics::Lexicon::recursive_default(), metrics::EmptyTextPolicy::Zero);
  std::string rated = "item,text,rating\n";
  for (size_t i = 1; i < rows.size(); ++i)
    rated += rows[i][0] + "," + mechlens::io::csv_field(rows[i][1]) + "," + fmt::format("{:.17g}", scorer.score(rows[i][1])) + "\n";
  std::ofstream(dir + "/rated.csv") << rated;

  const std::string run = test::temp_dir("rated-run");
  test::fs::create_directories(run + "/phase1");
  test::copy_file(test::demo_run() + "/generations.jsonl", run + "/generations.jsonl");
  test::copy_file(test::demo_run() + "/phase1/summary.json", run + "/phase1/summary.json");
  auto r = test::run_program("dec7_blind_rating", {"import", "--run", run, "--ratings", dir + "/rated.csv", "--key",
                                                   dir + "/key.csv", "--phase", "phase1"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto by_rating = test::read_json(run + "/phase1/rated/summary.json");
  const auto by_score = test::read_json(run + "/phase1/summary.json");
  REQUIRE(by_rating["contrasts"].size() == by_score["contrasts"].size());
  for (size_t i = 0; i < by_score["contrasts"].size(); ++i) {
    CHECK(by_rating["contrasts"][i]["delta"] == by_score["contrasts"][i]["delta"]);
    CHECK(by_rating["contrasts"][i]["t_test"] == by_score["contrasts"][i]["t_test"]);
  }
  CHECK(by_rating["scorer"] == "rating:rating");

  // A sheet with an unrated row of a phase-1 condition is refused unless --allow-missing.
  const auto key = ex::read_blind_key(dir + "/key.csv");
  std::string blank_item;
  for (const auto& [item, id] : key)
    if (id == "baseline|toy-001") blank_item = item;
  REQUIRE(!blank_item.empty());
  std::string partial = "item,text,rating\n";
  for (size_t i = 1; i < rows.size(); ++i)
    partial += rows[i][0] + "," + mechlens::io::csv_field(rows[i][1]) + "," +
               (rows[i][0] == blank_item ? std::string() : fmt::format("{:.17g}", scorer.score(rows[i][1]))) + "\n";
  std::ofstream(dir + "/partial.csv") << partial;
  r = test::run_program("dec7_blind_rating", {"import", "--run", run, "--ratings", dir + "/partial.csv", "--key",
                                              dir + "/key.csv"});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("--allow-missing"));
}
