// The shipped prompt pairs and the embedded model's tokenizer: the Instruct pairs (>= 100,
// matched in length and form), the toy pairs (same token count per pair), and a tokenizer.json
// that is what the recipe makes and round-trips the corpus with one token per grammar word.

#include <fstream>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

#include <mechlens/experiments/prompt_encoding.hpp>
#include <mechlens/experiments/prompt_pairs.hpp>
#include <mechlens/tokenizer/tokenizer.hpp>

#include "../../examples/toy/corpus.hpp"
#include "../../examples/toy/tokenizer_json.hpp"
#include "experiments_test_support.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {
size_t words(const std::string& s) {
  std::istringstream in(s);
  size_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}
}  // namespace

TEST_CASE("The Instruct pairs are at least 100, distinct, and matched in length", "[experiments][pairs]") {
  const auto pairs = ex::load_prompt_pairs(test::instruct_pairs());
  CHECK(pairs.size() >= 100);
  std::set<std::string> texts;
  for (const auto& p : pairs) {
    CAPTURE(p.id);
    CHECK(texts.insert(p.recursive).second);
    CHECK(texts.insert(p.baseline).second);
    const long d = static_cast<long>(words(p.recursive)) - static_cast<long>(words(p.baseline));
    CHECK(std::abs(d) <= 2);
  }
}

TEST_CASE("Prompt pair files are checked line by line", "[experiments][pairs]") {
  const std::string dir = test::temp_dir("pairs");
  std::ofstream(dir + "/a.jsonl") << "{\"id\": \"1\", \"recursive\": \"x\", \"baseline\": \"y\"}\n\n{\"id\": \"1\", \"recursive\": \"x\", \"baseline\": \"y\"}\n";
  CHECK_THROWS_WITH(ex::load_prompt_pairs(dir + "/a.jsonl"), Catch::Contains("a.jsonl:3") && Catch::Contains("twice"));
  std::ofstream(dir + "/b.jsonl") << "{\"id\": \"1\", \"recursive\": \"x\"}\n";
  CHECK_THROWS_WITH(ex::load_prompt_pairs(dir + "/b.jsonl"), Catch::Contains("b.jsonl:1") && Catch::Contains("baseline"));
  std::ofstream(dir + "/c.jsonl") << "{\"id\": \"1\", \"recursive_ids\": [1, 2]}\n";
  CHECK_THROWS_WITH(ex::load_prompt_pairs(dir + "/c.jsonl"), Catch::Contains("both"));
  // Nested 10^6 deep (a stack overflow before the depth limit) and a number beyond double range.
  std::ofstream(dir + "/d.jsonl") << "{\"id\": \"1\", \"recursive\": " << std::string(1000000, '[')
                                  << std::string(1000000, ']') << ", \"baseline\": \"y\"}\n";
  CHECK_THROWS_WITH(ex::load_prompt_pairs(dir + "/d.jsonl"),
                    Catch::Contains("d.jsonl:1") && Catch::Contains("nested deeper than 256"));
  std::ofstream(dir + "/e.jsonl") << "{\"id\": \"1\", \"recursive_ids\": [1e400], \"baseline_ids\": [1]}\n";
  CHECK_THROWS_WITH(ex::load_prompt_pairs(dir + "/e.jsonl"),
                    Catch::Contains("e.jsonl:1") && Catch::Contains("not valid JSON"));
}

TEST_CASE("The embedded model's tokenizer.json is the recipe's and round-trips the corpus", "[experiments][toy]") {
  const std::string path = test::embedded_model() + "/tokenizer.json";
  std::ifstream in(path);
  const auto shipped = nlohmann::json::parse(in);
  CHECK(shipped == nlohmann::json::parse(toy::make_tokenizer_json(toy::vocabulary_words()).dump()));
  const auto tok = Tokenizer::from_file(test::embedded_model());
  const auto config = test::read_json(test::embedded_model() + "/config.json");
  CHECK(tok.vocab_size() == config["vocab_size"].get<int64_t>());
  toy::Rng rng(99);
  for (int i = 0; i < 300; ++i) {
    const auto d = toy::make_document(rng);
    const std::string text = d.prompt + d.continuation;
    const auto ids = tok.encode(text, false);
    CHECK(tok.decode(ids) == text);
    // One token per grammar word and punctuation mark, plus the newline.
    CHECK(ids.size() == words(text) + 1);
    const auto with_bos = tok.encode(text, true);
    CHECK(with_bos.front() == tok.require_token_id(toy::kBos));
  }
}

TEST_CASE("Each toy pair's prompts have the same number of tokens", "[experiments][toy]") {
  const auto tok = Tokenizer::from_file(test::embedded_model());
  const auto pairs = ex::load_prompt_pairs(test::toy_pairs());
  CHECK(pairs.size() == 100);
  for (const auto& e : ex::encode_pairs(pairs, &tok, ex::PromptFormat::Auto)) {
    CHECK(e.recursive.size() == e.baseline.size());
    CHECK(e.recursive.back() == e.baseline.back());  // both end in the newline
    CHECK(e.recursive.size() >= 16);                  // R_V's window fits in the prompt
  }
}

TEST_CASE("Role::Recursive is the DEC7 name of Role::Treatment, written \"recursive\" in files", "[experiments][pairs]") {
  STATIC_REQUIRE(ex::Role::Recursive == ex::Role::Treatment);
  CHECK(std::string(ex::role_name(ex::Role::Treatment)) == "recursive");
  CHECK(std::string(ex::role_name(ex::Role::Baseline)) == "baseline");
  CHECK(ex::parse_role("recursive") == ex::Role::Treatment);
  CHECK(ex::parse_role("treatment") == ex::Role::Treatment);
  CHECK(ex::parse_role("baseline") == ex::Role::Baseline);
  CHECK_THROWS_WITH(ex::parse_role("control"), Catch::Contains("'control' is unknown"));
  const ex::PromptPair p{"x", "treated", "plain", {1, 2}, {3, 4}, nlohmann::json::object()};
  CHECK(p.text(ex::Role::Treatment) == "treated");
  CHECK(p.ids(ex::Role::Recursive) == std::vector<int64_t>{1, 2});
}
