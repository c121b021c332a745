// Behaviour scorers: the word rule, the study's lexicon (built in and shipped as a file),
// custom lexicons, the empty-text policy, and ratings imported from CSV.
#include <mechlens/core/filesystem.hpp>
#include <mechlens/metrics/behaviour.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <unistd.h>

#include "reference.hpp"

using namespace mechlens::metrics;
namespace fs = std::filesystem;

namespace {

/// A scratch folder per test run, removed at exit.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    path = fs::temp_directory_path() / ("mechlens_behaviour_test_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~ScratchDir() {
    mechlens::detail::remove_tree(path.string());
  }
  std::string write(const std::string& name, const std::string& content) const {
    const auto p = path / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
};

}  // namespace

TEST_CASE("Words are runs of letters and digits joined by inner hyphens and apostrophes") {
  using V = std::vector<std::string>;
  CHECK(split_words("Observe the observer\xE2\x80\x94observing itself!") ==
        V{"Observe", "the", "observer", "observing", "itself"});  // em dash separates
  CHECK(split_words("self-referential meta-awareness don't 3.14 -- \xE2\x80\xA6 \xE2\x80\x9Cquoted\xE2\x80\x9D") ==
        V{"self-referential", "meta-awareness", "don't", "3", "14", "quoted"});
  CHECK(split_words("  -leading trailing- it\xE2\x80\x99s na\xC3\xAFve caf\xC3\xA9, \xC2\xABguillemets\xC2\xBB") ==
        V{"leading", "trailing", "it\xE2\x80\x99s", "na\xC3\xAFve", "caf\xC3\xA9", "guillemets"});
  CHECK(split_words("").empty());
  CHECK(split_words(" ... --- !!! ").empty());
  CHECK(split_words("a--b") == V{"a", "b"});  // two joiners in a row join nothing
}

TEST_CASE("Ill-formed UTF-8 counts as word characters, one per maximal subpart, kept as written") {
  // The rule (docs/metrics.md): invalid bytes are word characters. Where the bytes are cut short
  // or overlong, the subparts are those of the Unicode Standard's section 3.9 (as core/utf8.hpp).
  using V = std::vector<std::string>;
  CHECK(split_words("a\xE2\x80 b") == V{"a\xE2\x80", "b"});  // an em dash (E2 80 94) cut short
  CHECK(split_words("x\x80y") == V{"x\x80y"});                 // a stray continuation byte
  CHECK(split_words("\xD7") == V{"\xD7"});                    // a lone lead byte, not the sign U+00D7
  // C0 AD would be an overlong '-' (U+002D): not a joiner, two invalid bytes inside the word.
  CHECK(split_words("a\xC0\xAD b") == V{"a\xC0\xAD", "b"});
  KeywordScorer scorer(Lexicon::recursive_default());
  CHECK(scorer.analyse("observ\xFF").hits == 1);  // "observ*" matches the word's valid prefix
}

TEST_CASE("The keyword scorer counts each word once, for the first matching stem, per 100 words") {
  const KeywordScorer scorer(Lexicon::recursive_default());  // the study's lexicon
  CHECK(scorer.name() == "keywords:recursive_default");
  // 20 words; hits: Observing(observ*), awareness(awar*), processes(process*), itself(itself),
  // noticing(notic(ing)), Self-Referential(self-referent*), meta-cognition(meta-*),
  // recursively(recursiv*), emergent(emerg*), generating(generat*) = 10.
  // Not hits: notice (only 'noticing'), metadata (needs 'meta-'), unobserved (stems match at
  // the start of a word), experiment (not experienc*).
  const std::string text =
      "Observing awareness: the model processes itself, noticing a Self-Referential "
      "meta-cognition that recursively turns emergent, generating notice metadata unobserved "
      "experiment now.";
  const auto s = scorer.analyse(text);
  REQUIRE(s.defined);
  CHECK(s.words == 20);
  CHECK(s.hits == 10);
  CHECK(s.per_100_words == Approx(50.0));
  CHECK(scorer.score(text) == Approx(50.0));
  const auto& entries = scorer.lexicon().entries();
  REQUIRE(s.counts.size() == entries.size());
  REQUIRE(entries.size() == 15);
  std::map<std::string, std::size_t> by_label;
  for (std::size_t k = 0; k < entries.size(); ++k) by_label[entries[k].label] = s.counts[k];
  CHECK(by_label["observ*"] == 1);
  CHECK(by_label["awar*"] == 1);
  CHECK(by_label["process*"] == 1);
  CHECK(by_label["itself"] == 1);
  CHECK(by_label["notic(ing)"] == 1);
  CHECK(by_label["self-referent*"] == 1);
  CHECK(by_label["meta-*"] == 1);
  CHECK(by_label["recursiv*"] == 1);
  CHECK(by_label["emerg*"] == 1);
  CHECK(by_label["generat*"] == 1);
  CHECK(by_label["experienc*"] == 0);
  std::size_t total = 0;
  for (auto c : s.counts) total += c;
  CHECK(total == s.hits);
}

TEST_CASE("The built-in lexicon is the one shipped in examples/lexicons/recursive_default.json") {
  const std::string path = std::string(MECHLENS_SOURCE_DIR) + "/examples/lexicons/recursive_default.json";
  const auto from_file = mechlens::io::read_json_file(path);
  CHECK(from_file == nlohmann::json::parse(kRecursiveDefaultLexiconJson));
  const auto lex = Lexicon::from_file(path);
  const auto builtin = Lexicon::recursive_default();
  REQUIRE(lex.entries().size() == builtin.entries().size());
  for (std::size_t k = 0; k < lex.entries().size(); ++k) CHECK(lex.entries()[k].label == builtin.entries()[k].label);
  // The stems of the DEC7 study (docs/study.md), in its order.
  const std::vector<std::string> stems{"observ*", "awar*", "conscious*", "process*", "experienc*",
                                       "notic(ing)", "myself", "itself", "yourself", "generat*",
                                       "emerg*", "simultaneous*", "recursiv*", "self-referent*", "meta-*"};
  for (std::size_t k = 0; k < stems.size(); ++k) CHECK(builtin.entries()[k].label == stems[k]);
}

TEST_CASE("A lexicon from a file can use regexes, labels and case sensitivity") {
  ScratchDir dir;
  const auto path = dir.write("lex.json", R"({
    "name": "custom", "case_sensitive": true,
    "entries": [{"regex": "[Ll]oop(s|ing)?", "label": "loop"}, {"stem": "Self*"}]
  })");
  const KeywordScorer scorer(Lexicon::from_file(path));
  CHECK(scorer.name() == "keywords:custom");
  const auto s = scorer.analyse("Loops looping loop LOOP self Selfhood");
  CHECK(s.words == 6);
  CHECK(s.counts == std::vector<std::size_t>{3, 1});  // LOOP and self miss: case-sensitive
  CHECK(scorer.score("Loops looping loop LOOP self Selfhood") == Approx(100.0 * 4 / 6));
}

TEST_CASE("Malformed lexicons are refused with errors that name the file and the entry") {
  ScratchDir dir;
  using mechlens::ConfigError;
  CHECK_THROWS_WITH(Lexicon::from_file(dir.write("a.json", R"({"name": "x", "entries": [{"stem": "ob*serv"}]})")),
                    Catch::Contains("entries[0]") && Catch::Contains("ob*serv"));
  CHECK_THROWS_AS(Lexicon::from_file(dir.write("b.json", R"({"name": "x", "entries": [{"stem": "a", "regex": "b"}]})")),
                  ConfigError);
  CHECK_THROWS_WITH(Lexicon::from_file(dir.write("c.json", R"({"name": "x", "entries": [{"regex": "(unclosed"}]})")),
                    Catch::Contains("not a valid"));
  CHECK_THROWS_AS(Lexicon::from_file(dir.write("d.json", R"({"name": "x", "entries": []})")), ConfigError);
  CHECK_THROWS_AS(Lexicon::from_file(dir.write("e.json", R"({"entries": [{"stem": "a"}]})")), ConfigError);
  CHECK_THROWS_AS(Lexicon::from_file((dir.path / "missing.json").string()), mechlens::IoError);
}

TEST_CASE("A text without words is an error by default and scores 0 only when asked") {
  const KeywordScorer strict(Lexicon::recursive_default());
  CHECK_FALSE(strict.analyse(" ... ").defined);
  CHECK_THROWS_WITH(strict.score(""), Catch::Contains("no words"));
  const KeywordScorer lenient(Lexicon::recursive_default(), EmptyTextPolicy::Zero);
  CHECK(lenient.score("") == 0.0);
}

TEST_CASE("A table scorer serves CSV ratings by id and refuses what it cannot rate") {
  ScratchDir dir;
  const auto path = dir.write("ratings.csv",
                              "\xEF\xBB\xBFid,rater,rating\r\n"
                              "pair-1/baseline,\"Smith, J.\", 2\r\n"
                              "\"pair-1/recursive\",\"He said \"\"hi\"\"\",6.5\r\n"
                              "\r\n"
                              "pair-2/baseline,Lee,0\r\n");
  const auto table = TableScorer::from_csv(path);
  CHECK(table.name() == "table:rating");
  CHECK(table.size() == 3);
  CHECK(table.score_item({"pair-1/baseline", "whatever text"}) == 2.0);
  CHECK(table.score_item({"pair-1/recursive", ""}) == 6.5);
  CHECK(table.score_item({"pair-2/baseline", ""}) == 0.0);
  CHECK_THROWS_WITH(table.score_item({"pair-9/baseline", ""}),
                    Catch::Contains("pair-9/baseline") && Catch::Contains("ratings.csv"));
  CHECK_THROWS_AS(table.score("some text"), mechlens::ArgumentError);

  // Scorers are interchangeable behind the interface.
  std::vector<std::unique_ptr<Scorer>> scorers;
  scorers.push_back(std::make_unique<KeywordScorer>(Lexicon::recursive_default()));
  scorers.push_back(std::make_unique<TableScorer>(table));
  const ScoreItem item{"pair-1/recursive", "I observe myself observing."};
  CHECK(scorers[0]->score_item(item) == Approx(100.0 * 3 / 4));
  CHECK(scorers[1]->score_item(item) == 6.5);

  using mechlens::FormatError;
  CHECK_THROWS_WITH(TableScorer::from_csv(dir.write("bad.csv", "id,rating\na,1\nb,high\n")),
                    Catch::Contains("line 3") && Catch::Contains("'high'"));
  CHECK_THROWS_WITH(TableScorer::from_csv(dir.write("dup.csv", "id,rating\na,1\na,2\n")), Catch::Contains("twice"));
  CHECK_THROWS_WITH(TableScorer::from_csv(dir.write("col.csv", "id,score\na,1\n")),
                    Catch::Contains("no column 'rating'") && Catch::Contains("'score'"));
  CHECK_THROWS_AS(TableScorer::from_csv(dir.write("short.csv", "id,rating\na\n")), FormatError);
  CHECK_THROWS_AS(TableScorer::from_csv(dir.write("open.csv", "id,rating\n\"a,1\n")), FormatError);
  CHECK(TableScorer::from_csv(dir.write("named.csv", "item,blind\nx,3\n"), "item", "blind", "human").name() == "human");
}
