// dec7_study runs every part of the study with one model load, as the separate programs do:
// its records, summaries and blind-rating files are theirs (run on the embedded toy model with
// the same settings); --phases picks parts; --resume completes a cut-off partial run.

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <mechlens/io/csv.hpp>

#include "experiments_test_support.hpp"

using namespace mechlens;

namespace {

/// The settings of every run here: 4 pairs of the embedded model, 12 new tokens.
std::vector<std::string> settings(const std::string& out) { return {"--out", out, "--n", "4", "--max-new-tokens", "12"}; }

void run_ok(const std::string& program, std::vector<std::string> args, std::vector<std::string> extra = {}) {
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = test::run_program(program, args);
  INFO(program << " output:\n" << r.output);
  REQUIRE(r.exit_code == 0);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// generations.jsonl's records in file order.
std::vector<nlohmann::json> records_of(const std::string& out) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(out + "/generations.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

/// Records by "condition|pair_id".
std::map<std::string, nlohmann::json> by_id(const std::vector<nlohmann::json>& rows) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& r : rows) out[r.at("condition").get<std::string>() + "|" + r.at("pair_id").get<std::string>()] = r;
  return out;
}

const std::vector<std::string> kPhaseFolders = {"phase1", "phase2", "single_pass", "rv", "positions"};

/// Each phase folder's files of `a` equal those of `b`.
void check_phases_equal(const std::string& a, const std::string& b, const std::vector<std::string>& phases) {
  for (const auto& phase : phases) {
    CAPTURE(phase);
    REQUIRE(test::fs::exists(a + "/" + phase + "/summary.json"));
    REQUIRE(test::fs::exists(b + "/" + phase + "/summary.json"));
    CHECK(test::read_json(a + "/" + phase + "/summary.json") == test::read_json(b + "/" + phase + "/summary.json"));
    for (const char* file : {"summary.csv", "table.txt", "figure.svg"})
      CHECK(read_all(a + "/" + phase + "/" + file) == read_all(b + "/" + phase + "/" + file));
  }
}

/// One dec7_study run with every part, made once per test process.
const std::string& full_study() {
  static const std::string dir = [] {
    const std::string d = test::temp_dir("study");
    run_ok("dec7_study", settings(d));
    return d;
  }();
  return dir;
}

}  // namespace

TEST_CASE("dec7_study's records and outputs equal those of the separate programs with the same settings",
          "[experiments][study]") {
  const std::string separate = test::temp_dir("study_separate");
  const auto args = settings(separate);
  run_ok("dec7_kv_transfer", args);
  run_ok("dec7_layer_sweep", args, {"--resume"});
  run_ok("dec7_single_pass", args, {"--resume"});
  run_ok("dec7_rv", args, {"--resume"});
  run_ok("dec7_positions", args, {"--resume"});
  run_ok("dec7_blind_rating", {"export", "--run", separate});

  const std::string study = full_study();
  const auto mine = records_of(study), theirs = records_of(separate);
  REQUIRE(mine.size() == theirs.size());
  CHECK(mine.size() > 4 * 20);  // every part ran: 4 pairs × (6 + 5 + 6 + 4 + windows) conditions
  for (size_t i = 0; i < mine.size(); ++i) {
    CAPTURE(i, theirs[i]["condition"], theirs[i]["pair_id"]);
    CHECK(mine[i] == theirs[i]);  // the same records in the same order, every field
  }
  size_t read = 0;  // R_V readings compared as numbers, not as nulls of rows too short to read
  for (const auto& r : mine)
    if (r["condition"].get<std::string>().rfind("rv:", 0) == 0)
      read += r["extra"]["rv_patched_pass"]["rv"].is_number() && r["extra"]["rv_clean_pass"]["rv"].is_number();
  CHECK(read >= 8);
  check_phases_equal(study, separate, kPhaseFolders);
  for (const char* file : {"sheet.csv", "key.csv"})
    CHECK(read_all(study + "/blind/" + file) == read_all(separate + "/blind/" + file));
  // run.json: the same settings; only the programs that ran differ.
  auto a = test::read_json(study + "/run.json"), b = test::read_json(separate + "/run.json");
  CHECK(a["programs"] == nlohmann::json::array({"dec7_study"}));
  a.erase("programs");
  b.erase("programs");
  CHECK(a == b);
}

TEST_CASE("dec7_study --phases runs the parts named, and --resume completes a cut-off partial run",
          "[experiments][study]") {
  const std::string dir = test::temp_dir("study_partial");
  run_ok("dec7_study", settings(dir), {"--phases", "1,rv"});
  const auto full = by_id(records_of(full_study()));
  const auto partial = records_of(dir);
  std::set<std::string> conditions;
  for (const auto& r : partial) conditions.insert(r["condition"]);
  CHECK(conditions.size() == 10);  // phase 1's six and R_V's four
  for (const auto& c : conditions) CHECK((c.rfind("rv:", 0) == 0 || c.find("[") == std::string::npos));
  for (const auto& [id, r] : by_id(partial)) {
    CAPTURE(id);
    REQUIRE(full.count(id) == 1);
    CHECK(r == full.at(id));
  }
  CHECK(test::fs::exists(dir + "/phase1/summary.json"));
  CHECK(test::fs::exists(dir + "/rv/summary.json"));
  for (const char* absent : {"phase2", "single_pass", "positions", "blind"}) CHECK_FALSE(test::fs::exists(dir + "/" + absent));

  // A kill in the middle of writing: the last 5 records are gone and a line is cut off.
  std::string text;
  for (size_t i = 0; i + 5 < partial.size(); ++i) text += partial[i].dump() + "\n";
  text += partial[partial.size() - 5].dump().substr(0, 40);
  std::ofstream(dir + "/generations.jsonl", std::ios::binary | std::ios::trunc) << text;

  const auto r = test::run_program("dec7_study", [&] {
    auto a = settings(dir);
    a.push_back("--resume");
    return a;
  }());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains(std::to_string(partial.size() - 5) + " generations already recorded") &&
                           Catch::Contains("cut-off last line was dropped"));
  const auto resumed = by_id(records_of(dir));
  CHECK(resumed.size() == full.size());
  for (const auto& [id, rec] : full) {
    CAPTURE(id);
    REQUIRE(resumed.count(id) == 1);
    CHECK(resumed.at(id) == rec);
  }
  check_phases_equal(dir, full_study(), kPhaseFolders);
  // The blind export holds every generation (in another order: the resumed run appended them so).
  std::vector<size_t> lines;
  const auto key = io::read_csv_file(dir + "/blind/key.csv", "key", lines);
  REQUIRE(key.size() == full.size() + 1);
  std::set<std::string> keyed;
  for (size_t i = 1; i < key.size(); ++i) keyed.insert(key[i].at(1));  // item,record_id,condition,pair_id
  std::set<std::string> ids;
  for (const auto& [id, rec] : full) ids.insert(id);
  CHECK(keyed == ids);
}

TEST_CASE("dec7_study refuses an unknown part by its flag before it loads anything", "[experiments][study]") {
  const std::string dir = test::temp_dir("study_bad_phase");
  const auto r = test::run_program("dec7_study", {"--out", dir + "/x", "--phases", "1,3"});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Catch::Contains("--phases") && Catch::Contains("'3'") && Catch::Contains("single-pass"));
  CHECK_FALSE(test::fs::exists(dir + "/x/generations.jsonl"));
}
