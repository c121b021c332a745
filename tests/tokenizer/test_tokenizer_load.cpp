// Tokenizer::from_file reads tokenizer.json through from_json_text, whose fast path reads the
// model's "vocab" and "merges" straight from the text. It must give exactly what from_json on
// nlohmann's DOM gives: the same tokenizer for every file it takes, and for everything else
// (unusual or malformed files) the same result or the same error, by handing the file to from_json.

#include <mechlens/tokenizer/tokenizer.hpp>

#include <fstream>
#include <functional>
#include <typeinfo>

#include "tokenizer_test_support.hpp"

using mechlens::Tokenizer;
using mechlens_test::vocabulary_dir;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

const char* const kProbes[] = {"hello", "hell o he", "hello<eos>hello", "h\xc3\xa9llo", "x", "", " \xf0\x9f\x98\x80 !"};

// Everything a loaded tokenizer shows: its size, every id's token, every token's id, and the ids
// and decodes of a few texts (or the error they give).
std::string fingerprint(const Tokenizer& t) {
  std::string out = "size " + std::to_string(t.vocab_size()) + "\n";
  for (int64_t id = 0; id < t.vocab_size() + 3; ++id) {
    try {
      const std::string token = t.id_to_token(id);
      out += std::to_string(id) + " " + token + " -> " + std::to_string(t.token_to_id(token).value_or(-1)) + "\n";
    } catch (const mechlens::ArgumentError&) {
      out += std::to_string(id) + " none\n";
    }
  }
  for (const char* text : kProbes) {
    try {
      const auto ids = t.encode(text, true);
      for (const auto id : ids) out += std::to_string(id) + ",";
      out += " | " + t.decode(ids, true) + "\n";
    } catch (const mechlens::Error& e) {
      out += std::string("refused: ") + e.what() + "\n";
    }
  }
  return out;
}

std::string outcome(const std::function<Tokenizer()>& load) {
  try {
    return fingerprint(load());
  } catch (const mechlens::Error& e) {
    return std::string("error ") + typeid(e).name() + ": " + e.what();
  }
}

// from_json_text and from_json on nlohmann's DOM agree about `text`; returns whether the fast
// path took it.
bool agrees(const std::string& text) {
  const nlohmann::json config = nlohmann::json::object();
  const std::string fast = outcome([&] { return Tokenizer::from_json_text(text, config, "t.json"); });
  const std::string slow = outcome([&] {
    return Tokenizer::from_json(mechlens::io::parse_json(text, "'t.json'"), config, "t.json");
  });
  CHECK(fast == slow);
  return Tokenizer::try_from_json_text(text, config, "t.json").has_value();
}

// The small byte-level tokenizer of test_tokenizer_errors.cpp, with a few tokens that are written
// with escapes.
nlohmann::json small_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (const char* t : {"h", "e", "l", "o", "he", "ll", "hell", "hello", "\xc4\xa0", "\xc4\x80", "\"", "\\", "q", "q\"",
                        "\xc3\x83", "\xc2\xa9", "\xc3\x83\xc2\xa9", "\xf0\x9f\x98\x80", "/"}) {
    vocab[t] = vocab.size();
  }
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", 19}, {"content", "<eos>"}, {"special", true}, {"normalized", false}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", {"h e", "l l", "he ll", "hell o", "q \"", "\xc3\x83 \xc2\xa9"}},
            {"unk_token", nullptr}}}};
}

std::string replaced_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("from_json_text reads the real Llama-3 and Llama-2 files on the fast path, as from_json does",
          "[tokenizer]") {
  for (const std::string name : {"llama3", "llama2"}) {
    INFO(name);
    const std::string dir = vocabulary_dir(name);
    const std::string text = read_text(dir + "/tokenizer.json");
    const auto config = mechlens::io::read_json_file(dir + "/tokenizer_config.json");
    const auto fast = Tokenizer::try_from_json_text(text, config, "t.json");
    REQUIRE(fast.has_value());
    const Tokenizer slow = Tokenizer::from_json(mechlens::io::parse_json(text, "t.json"), config, "t.json");
    REQUIRE(fast->vocab_size() == slow.vocab_size());
    CHECK(fast->bos_id() == slow.bos_id());
    CHECK(fast->eos_id() == slow.eos_id());
    // Every token, and the ids of every token's own text (which takes the merges that make it).
    int64_t differ = 0;
    for (int64_t id = 0; id < slow.vocab_size(); ++id) {
      const std::string token = slow.id_to_token(id);
      const std::string word = slow.decode({id});
      if (fast->id_to_token(id) != token || fast->token_to_id(token) != slow.token_to_id(token) ||
          fast->decode({id}) != word || fast->encode(word, false) != slow.encode(word, false)) {
        ++differ;
      }
    }
    CHECK(differ == 0);
    const auto corpus = mechlens::io::read_json_file(std::string(MECHLENS_SOURCE_DIR) +
                                                     "/tests/reference/tokenizer_corpus.json").at("strings");
    for (const auto& c : corpus) {
      const auto s = c.at("text").get<std::string>();
      CHECK(fast->encode(s, true) == slow.encode(s, true));
    }
  }
}

TEST_CASE("Well-formed files in any layout take the fast path and load as from_json loads them", "[tokenizer]") {
  const auto j = small_tokenizer();
  CHECK(agrees(j.dump()));
  CHECK(agrees(j.dump(2)));
  CHECK(agrees(j.dump(-1, ' ', /*ensure_ascii=*/true)));  // every non-ASCII byte as \u escapes, with surrogates
  CHECK(agrees(j.dump(1, '\t')));
  CHECK(agrees(replaced_all(j.dump(2), "\n", "\r\n")));
  CHECK(agrees("\xEF\xBB\xBF" + j.dump()));  // a byte order mark, which nlohmann skips
  CHECK(agrees(replaced(j.dump(), "\"h e\"", "\"h\\u0020e\"")));  // the space of a merge escaped
  CHECK(agrees(replaced(j.dump(), "\"hell\"", "\"h\\u0065\\u006Cl\"")));
  CHECK(agrees(replaced(j.dump(), "\"/\"", "\"\\/\"")));
  auto arrays = j;  // merges as pairs, as newer tokenizers write them
  arrays["model"]["merges"] = nlohmann::json::array();
  for (const auto& m : j.at("model").at("merges")) {
    const auto s = m.get<std::string>();
    arrays["model"]["merges"].push_back(nlohmann::json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)}));
  }
  CHECK(agrees(arrays.dump()));
  // nlohmann writes keys sorted: "merges" before "vocab", "model" among the others. HF writes
  // "vocab" then "merges", "model" last; and "model" first must do too.
  const std::string vocab = j.at("model").at("vocab").dump(), merges = j.at("model").at("merges").dump();
  const std::string hf_order =
      replaced(replaced(j.dump(), "\"merges\":" + merges + ",", ""), "\"vocab\":" + vocab,
               "\"vocab\":" + vocab + ",\"merges\":" + merges);
  CHECK(agrees(hf_order));
  const std::string model = j.at("model").dump();
  CHECK(agrees("{\"model\":" + model + "," + replaced(j.dump(), ",\"model\":" + model, "").substr(1)));
  auto empty = j;
  empty["model"]["merges"] = nlohmann::json::array();
  CHECK(agrees(empty.dump()));
}

TEST_CASE("Unusual and malformed files give from_json's tokenizer or error through from_json_text", "[tokenizer]") {
  const auto j = small_tokenizer();
  const std::string text = j.dump();
  // Left to from_json: what nlohmann reads its own way, and what it refuses.
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":7,\"hello\":3")));  // a key twice: the last wins
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":-0")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":7.0")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":7e0")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":07")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":2147483648")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":-1")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":\"7\"")));
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":70000")));      // far sparser than the vocabulary
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":6")));          // two tokens with id 6
  CHECK(agrees(replaced(text, "\"hello\":7", "\"hel\\u006co\":7")));          // escaped, fine
  CHECK_FALSE(agrees(replaced(text, "\"hello\":7", "\"hello\":7,\"hel\\u006co\":3")));  // "hello" twice
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "\"hell zz\"")));           // not in the vocabulary
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "\"o hell\"")));            // makes a token that is not there
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "\"hell  o\"")));
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "\"hello\"")));
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "42")));
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "[\"hell\",\"o\",\"x\"]")));
  CHECK_FALSE(agrees(replaced(text, "\"hell o\"", "[\"hell\",7]")));
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\\ud800ll\":6")));     // a lone surrogate
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\\udc00\\ud800ll\":6")));
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\\xll\":6")));          // no such escape
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\\u00gll\":6")));
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\tll\":6")));           // a raw control character
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\xffll\":6")));         // not UTF-8
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\xc0\xafll\":6")));     // overlong
  CHECK_FALSE(agrees(replaced(text, "\"hell\":6", "\"h\xed\xa0\x80ll\":6"))); // a surrogate in UTF-8
  CHECK_FALSE(agrees(replaced(text, "\"vocab\":", "\"vocab\":[],\"vocab\":")));
  CHECK_FALSE(agrees(replaced(text, "\"model\":", "\"model\":{},\"model\":")));
  CHECK_FALSE(agrees(replaced(text, "\"model\":", "\"mod\\u0065l\":{},\"model\":")));
  CHECK_FALSE(agrees(replaced(text, "\"vocab\":", "\"voc\\u0061b\":{},\"vocab\":")));
  CHECK_FALSE(agrees(replaced(text, "\"merges\":", "\"merges\":{},\"merges2\":")));
  CHECK_FALSE(agrees(replaced(text, "\"type\":\"BPE\"", "\"type\":\"WordPiece\"")));
  CHECK_FALSE(agrees(replaced(text, "\"type\":\"BPE\"", "\"type\":\"BPE\",\"dropout\":0.5")));
  CHECK_FALSE(agrees(replaced(text, "\"unk_token\":null", "\"unk_token\":\"<unk>\"")));
  CHECK(agrees(replaced(text, "\"type\":\"BPE\"", "\"type\":\"BPE\",\"unk_token\":\"<unk>\"")));  // the last wins
  CHECK_FALSE(agrees(replaced(text, "\"decoder\":{", "\"decoder\":{\"x\":[1,},")));  // broken elsewhere
  CHECK_FALSE(agrees(replaced(text, "\"version\":\"1.0\"", "\"version\":\"1.0\" \"x\":1")));
  CHECK_FALSE(agrees(text + " x"));
  CHECK_FALSE(agrees(text + "{}"));
  CHECK_FALSE(agrees("[" + text + "]"));
  CHECK_FALSE(agrees(""));
  auto no_merges = j;
  no_merges["model"].erase("merges");
  CHECK_FALSE(agrees(no_merges.dump()));
  auto no_model = j;
  no_model.erase("model");
  CHECK_FALSE(agrees(no_model.dump()));
  // Every prefix of the file, and every single byte changed to a few others.
  for (std::size_t cut = 0; cut < text.size(); ++cut) {
    INFO("cut at byte " << cut);
    agrees(text.substr(0, cut));
  }
  for (std::size_t at = 0; at < text.size(); ++at) {
    for (const char c : {'"', '\\', ',', ':', '}', ']', '[', '{', ' ', '0', '\0', '\x80'}) {
      std::string changed = text;
      changed[at] = c;
      INFO("byte " << at << " set to " << static_cast<int>(c));
      agrees(changed);
    }
  }
}

TEST_CASE("from_file errors are the ones they were: the path and what is wrong", "[tokenizer]") {
  const auto dir = std::filesystem::path(MECHLENS_BINARY_DIR) / "tokenizer_load_tests";
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& name, const std::string& content) {
    const auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  };
  const std::string text = small_tokenizer().dump();
  const auto check = [&](const std::string& path) {
    const std::string via_file = outcome([&] { return Tokenizer::from_file(path); });
    const std::string via_dom = outcome([&] {
      return Tokenizer::from_json(mechlens::io::read_json_file(path), nlohmann::json::object(), path);
    });
    CHECK(via_file == via_dom);
    CHECK(via_file.find(path) != std::string::npos);
  };
  check(write("bad_merge.json", replaced(text, "\"hell o\"", "\"hell zz\"")));
  check(write("truncated.json", text.substr(0, text.size() / 2)));
  check(write("bad_utf8.json", replaced(text, "\"hell\":6", "\"h\xffll\":6")));
}
