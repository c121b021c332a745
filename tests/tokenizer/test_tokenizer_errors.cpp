// Malformed tokenizer files, unsupported components and bad input give clear errors that name
// the file, the component or key, and what was expected; nothing crashes.

#include <mechlens/tokenizer/tokenizer.hpp>

#include <filesystem>
#include <fstream>
#include <random>

#include "tokenizer_test_support.hpp"

using mechlens::Tokenizer;
using mechlens_test::thrown;
using Catch::Matchers::Contains;

namespace {

// A small byte-level tokenizer: enough to load, encode and decode.
nlohmann::json small_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  // "\xc4\xa0" and "\xc4\x80" are the byte-level stand-ins of ' ' and NUL.
  for (const char* t : {"h", "e", "l", "o", "he", "ll", "hell", "hello", "\xc4\xa0", "\xc4\x80"}) {
    vocab[t] = vocab.size();
  }
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", 10}, {"content", "<eos>"}, {"special", true}, {"normalized", false}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"h e", "l l", "he ll", "hell o"}}, {"unk_token", nullptr}}}};
}

std::string write_temp(const std::string& name, const std::string& content) {
  const auto dir = std::filesystem::path(MECHLENS_BINARY_DIR) / "tokenizer_error_tests";
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

std::string load_error_json(const nlohmann::json& j) {
  return thrown<mechlens::Error>([&] { Tokenizer::from_json(j, nlohmann::json::object(), "test.json"); });
}

}  // namespace

TEST_CASE("The small test tokenizer loads and round-trips, so the error cases below test one fault each", "[tokenizer]") {
  const auto tok = Tokenizer::from_json(small_tokenizer(), nlohmann::json::object());
  // Merges h+e, l+l, he+ll, hell+o in rank order give one token for "hello".
  CHECK(tok.encode("hello", false) == std::vector<int64_t>{7});
  CHECK(tok.encode("hello<eos>", false) == std::vector<int64_t>{7, 10});
  CHECK(tok.decode({7, 10}, true) == "hello");
  CHECK(tok.vocab_size() == 11);
}

TEST_CASE("Files that are missing or not JSON give IoError or FormatError naming the path", "[tokenizer]") {
  CHECK_THAT(thrown<mechlens::IoError>([] { Tokenizer::from_file("/nonexistent/dir/tokenizer.json"); }),
             Contains("/nonexistent/dir/tokenizer.json"));
  const auto empty_dir = std::filesystem::path(MECHLENS_BINARY_DIR) / "tokenizer_error_tests" / "empty_dir";
  std::filesystem::create_directories(empty_dir);
  CHECK_THAT(thrown<mechlens::IoError>([&] { Tokenizer::from_file(empty_dir.string()); }),
             Contains("no tokenizer.json"));
  const auto bad = write_temp("bad.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0");
  CHECK_THAT(thrown<mechlens::FormatError>([&] { Tokenizer::from_file(bad); }),
             Contains("bad.json") && Contains("not valid JSON"));
  const auto not_object = write_temp("array.json", "[1, 2, 3]");
  CHECK_THAT(thrown<mechlens::FormatError>([&] { Tokenizer::from_file(not_object); }), Contains("JSON object"));
  // A Sequence normalizer nested 10^5 deep overflowed the stack before the depth limit.
  std::string deep = "{\"normalizer\": ";
  for (int i = 0; i < 100000; ++i) deep += "{\"type\": \"Sequence\", \"normalizers\": [";
  for (int i = 0; i < 100000; ++i) deep += "]}";
  deep += ", \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}";
  const auto nested = write_temp("nested.json", deep);
  CHECK_THAT(thrown<mechlens::FormatError>([&] { Tokenizer::from_file(nested); }),
             Contains("nested.json") && Contains("nested deeper than 256"));
}

TEST_CASE("A Strip decoder with a negative count or an empty content is refused (they hung before)", "[tokenizer]") {
  auto j = small_tokenizer();
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}};
  CHECK_THAT(load_error_json(j), Contains("'start' must be a non-negative integer, got -1"));
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", 1.5}, {"stop", 0}};
  CHECK_THAT(load_error_json(j), Contains("'start' must be an integer"));
  j["decoder"] = {{"type", "Strip"}, {"content", ""}, {"start", 1000000000000LL}, {"stop", 0}};
  CHECK_THAT(load_error_json(j), Contains("Strip decoder with an empty 'content'"));
  // A huge count with a real character is bounded by the token's length: it loads and decodes.
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", 1000000000000LL}, {"stop", 1000000000000LL}};
  const auto path = write_temp("strip_ok.json", j.dump());
  Tokenizer tok = Tokenizer::from_file(path);
  CHECK(tok.decode(tok.encode("hello")) == "hello");
}

TEST_CASE("Unknown component types are ConfigErrors that name the type and list what is supported", "[tokenizer]") {
  auto j = small_tokenizer();
  j["normalizer"] = {{"type", "NFKC"}};
  CHECK_THAT(load_error_json(j), Contains("normalizer type 'NFKC' is not supported") && Contains("Prepend"));
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  CHECK_THAT(load_error_json(j), Contains("pre_tokenizer type 'BertPreTokenizer'") && Contains("Metaspace"));
  j = small_tokenizer();
  j["decoder"] = {{"type", "WordPiece"}};
  CHECK_THAT(load_error_json(j), Contains("decoder type 'WordPiece'"));
  j = small_tokenizer();
  j["post_processor"] = {{"type", "Mystery"}};
  CHECK_THAT(load_error_json(j), Contains("post_processor type 'Mystery'"));
  j = small_tokenizer();
  j["model"]["type"] = "Unigram";
  CHECK_THAT(load_error_json(j), Contains("model type 'Unigram' is not supported"));
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}};
  CHECK_THAT(load_error_json(j), Contains("split behavior 'Sideways'"));
  // Nested inside a Sequence, the message still names the inner type.
  j = small_tokenizer();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "x"}}, {{"type", "Lowercase"}}}}};
  CHECK_THAT(load_error_json(j), Contains("'Lowercase'"));
  CHECK_THROWS_AS(Tokenizer::from_json(j, nlohmann::json::object()), mechlens::ConfigError);
}

TEST_CASE("Malformed models are FormatErrors that say which entry is wrong", "[tokenizer]") {
  auto j = small_tokenizer();
  j["model"]["merges"].push_back("he zz");
  CHECK_THAT(load_error_json(j), Contains("merge 4") && Contains("not in the vocabulary"));
  j = small_tokenizer();
  j["model"]["merges"].push_back("h e l");
  CHECK_THAT(load_error_json(j), Contains("merge 4") && Contains("two tokens"));
  j = small_tokenizer();
  j["model"]["merges"].push_back(42);
  CHECK_THAT(load_error_json(j), Contains("merge 4"));
  j = small_tokenizer();
  j["model"]["vocab"]["x"] = -3;
  CHECK_THAT(load_error_json(j), Contains("'x'") && Contains("-3"));
  j = small_tokenizer();
  j["model"]["vocab"]["x"] = 0;
  CHECK_THAT(load_error_json(j), Contains("two tokens"));
  j = small_tokenizer();
  j["model"]["unk_token"] = "<unk>";
  CHECK_THAT(load_error_json(j), Contains("unk_token '<unk>' is not in the vocabulary"));
  j = small_tokenizer();
  j["model"].erase("vocab");
  CHECK_THAT(load_error_json(j), Contains("'vocab'"));
  j = small_tokenizer();
  j.erase("model");
  CHECK_THAT(load_error_json(j), Contains("'model'"));
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  CHECK_THAT(load_error_json(j), Contains("(unclosed") && Contains("does not compile"));
  j = small_tokenizer();
  j["added_tokens"][0].erase("content");
  CHECK_THAT(load_error_json(j), Contains("'content'"));
  j = small_tokenizer();
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {{{"SpecialToken", {{"id", "<bos>"}}}}}}};
  CHECK_THAT(load_error_json(j), Contains("'<bos>'"));
}

TEST_CASE("Truncated tokenizer.json files of the real Llama-3 vocabulary are refused, never crash", "[tokenizer]") {
  std::ifstream in(mechlens_test::vocabulary_dir("llama3") + "/tokenizer.json", std::ios::binary);
  const std::string full((std::istreambuf_iterator<char>(in)), {});
  REQUIRE(full.size() > 1000000);
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{100}, full.size() / 3, full.size() - 2}) {
    const auto path = write_temp("truncated.json", full.substr(0, cut));
    INFO("cut at byte " << cut);
    CHECK_THROWS_AS(Tokenizer::from_file(path), mechlens::FormatError);
  }
}

TEST_CASE("Invalid UTF-8 input is an ArgumentError naming the byte offset", "[tokenizer]") {
  const auto tok = Tokenizer::from_json(small_tokenizer(), nlohmann::json::object());
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.encode("hel\xffo"); }), Contains("byte 3"));
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.encode("ab\xe2\x82"); }), Contains("byte 2"));  // cut short
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.encode("\xed\xa0\x80"); }), Contains("byte 0"));  // surrogate
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.encode("\xc0\xaf"); }), Contains("byte 0"));      // overlong
  CHECK(tok.encode(std::string("h\0e", 3), false) == std::vector<int64_t>{0, 9, 1});  // NUL is valid UTF-8
}

TEST_CASE("Random bytes either encode or give ArgumentError, and valid results decode", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(mechlens_test::vocabulary_dir("llama3"));
  std::mt19937 rng(7);
  int encoded = 0, refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(i % 2 ? rng() % 128 : rng() % 256);
    try {
      const auto ids = tok.encode(s);
      CHECK(tok.decode(ids) == s);  // byte-level BPE is lossless on valid UTF-8
      ++encoded;
    } catch (const mechlens::ArgumentError&) {
      ++refused;
    }
  }
  CHECK(encoded > 100);
  CHECK(refused > 50);
}

TEST_CASE("Ids outside the vocabulary are ArgumentErrors naming the id; unknown tokens have no id", "[tokenizer]") {
  const auto tok = Tokenizer::from_json(small_tokenizer(), nlohmann::json::object());
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.decode({7, 11}); }), Contains("id 11") && Contains("position 1"));
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.decode({-1}); }), Contains("id -1"));
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.tokens({12345}); }), Contains("12345"));
  CHECK_FALSE(tok.token_to_id("nope").has_value());
  CHECK_THAT(thrown<mechlens::NotFoundError>([&] { tok.require_token_id("nope"); }), Contains("'nope'"));
  CHECK(tok.token_to_id("<eos>") == std::optional<int64_t>(10));
  CHECK_FALSE(tok.bos_id().has_value());  // no tokenizer_config.json
}

TEST_CASE("A character missing from a vocabulary without unk_token or byte fallback is an ArgumentError", "[tokenizer]") {
  const auto tok = Tokenizer::from_json(small_tokenizer(), nlohmann::json::object());
  CHECK_THAT(thrown<mechlens::ArgumentError>([&] { tok.encode("hex"); }), Contains("not in the vocabulary"));
}

TEST_CASE("tokenizer_config.json fields of the wrong type are errors naming the key", "[tokenizer]") {
  CHECK_THAT(thrown<mechlens::FormatError>(
                 [] { Tokenizer::from_json(small_tokenizer(), {{"bos_token", 5}}); }),
             Contains("'bos_token'"));
  CHECK_THAT(thrown<mechlens::FormatError>([] { Tokenizer::from_json(small_tokenizer(), {{"chat_template", 5}}); }),
             Contains("'chat_template'"));
  const auto tok = Tokenizer::from_json(
      small_tokenizer(), {{"bos_token", {{"content", "<eos>"}, {"__type", "AddedToken"}}},
                          {"chat_template", {{{"name", "tool_use"}, {"template", "x"}},
                                             {{"name", "default"}, {"template", "y"}}}}});
  CHECK(tok.bos_id() == std::optional<int64_t>(10));
  CHECK(tok.chat_template() == std::optional<std::string>("y"));
}

TEST_CASE("Hand-read tokenizer.json fields of the wrong type are errors naming the component, not parser errors",
          "[tokenizer]") {
  // Each of these escaped as a raw nlohmann exception (exit 1, no file named).
  auto j = small_tokenizer();
  j["normalizer"] = {{"type", "Sequence"}};  // no "normalizers"
  CHECK_THAT(load_error_json(j), Contains("test.json: normalizer Sequence") && Contains("'normalizers' must be an array"));

  auto with_template = [](nlohmann::json special) {
    auto t = small_tokenizer();
    t["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", "<eos>:0 $A:0"},
                           {"pair", "$A $B"},
                           {"special_tokens", {{"<eos>", std::move(special)}}}};
    return t;
  };
  CHECK_THAT(load_error_json(with_template({{"id", "<eos>"}, {"ids", {"x"}}, {"tokens", {"<eos>"}}})),
             Contains("special_tokens['<eos>'].ids[0]' must be an integer, got string"));
  CHECK_THAT(load_error_json(with_template({{"id", "<eos>"}, {"ids", {2.5}}, {"tokens", {"<eos>"}}})),
             Contains("special_tokens['<eos>'].ids[0]' must be an integer"));
  CHECK_THAT(load_error_json(with_template({{"id", "<eos>"}, {"ids", {-3}}, {"tokens", {"<eos>"}}})),
             Contains("ids[0] is -3, not a token id"));
  CHECK_THAT(load_error_json(with_template("ids")), Contains("special_tokens['<eos>'] has no 'ids' array"));
  // The working form, for contrast.
  const auto ok = Tokenizer::from_json(with_template({{"id", "<eos>"}, {"ids", {10}}, {"tokens", {"<eos>"}}}),
                                       nlohmann::json::object());
  CHECK(ok.encode("hello", true) == std::vector<int64_t>{10, 7});

  auto list_form = small_tokenizer();
  list_form["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {7, 8}}, {"special_tokens", nlohmann::json::object()}};
  CHECK_THAT(load_error_json(list_form), Contains("template piece 7 is not an object"));
}

TEST_CASE("Error messages quote at most a short excerpt of a huge or non-UTF-8 value", "[tokenizer]") {
  auto j = small_tokenizer();
  j["normalizer"] = {{"type", "Replace"}, {"pattern", std::vector<int>(100000, 7)}, {"content", "x"}};
  const std::string message = load_error_json(j);
  CHECK_THAT(message, Contains("characters)"));
  CHECK(message.size() < 400);
  // A string that is not UTF-8 cannot be dumped by nlohmann's default handler (it throws).
  CHECK(mechlens::io::json_excerpt(nlohmann::json(std::string("a\xff" "b"))).find('a') != std::string::npos);
}
