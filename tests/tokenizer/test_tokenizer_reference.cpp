// Every corpus string gives HF's ids, token strings and decodes on the real Llama-3 and
// Llama-2-style vocabularies (tests/data/tokenizer/*_reference.json, made by
// tests/reference/make_tokenizer_reference.py with tokenizers 0.23.2 / transformers 5.17).

#include <mechlens/tokenizer/tokenizer.hpp>

#include <thread>

#include "tokenizer_test_support.hpp"

using mechlens::Tokenizer;
using mechlens_test::reference;
using mechlens_test::vocabulary_dir;

namespace {

const Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, Tokenizer> loaded;
  auto it = loaded.find(name);
  if (it == loaded.end()) it = loaded.emplace(name, Tokenizer::from_file(vocabulary_dir(name))).first;
  return it->second;
}

std::vector<int64_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

void check_corpus(const std::string& name) {
  const Tokenizer& tok = tokenizer(name);
  const auto& ref = reference(name + "_reference.json");
  const auto& strings = ref.at("strings");
  const auto corpus = mechlens::io::read_json_file(std::string(MECHLENS_SOURCE_DIR) +
                                                   "/tests/reference/tokenizer_corpus.json").at("strings");
  REQUIRE(strings.size() == corpus.size());
  REQUIRE(strings.size() >= 200);
  std::size_t matched = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    const auto& r = strings[i];
    const auto text = r.at("text").get<std::string>();
    INFO(name << " corpus string " << i << " (" << corpus[i].at("category").get<std::string>() << "): "
              << mechlens::tokenizer::detail::excerpt(text, 80));
    REQUIRE(corpus[i].at("text").get<std::string>() == text);  // the reference was made from this corpus
    const auto ids = tok.encode(text, false);
    const auto ids_special = tok.encode(text, true);
    CHECK(ids == ids_of(r.at("ids")));
    CHECK(ids_special == ids_of(r.at("ids_special")));
    CHECK(tok.tokens(ids) == r.at("tokens").get<std::vector<std::string>>());
    const auto decoded = tok.decode(ids_of(r.at("ids_special")), false);
    const auto decoded_skip = tok.decode(ids_of(r.at("ids_special")), true);
    CHECK(decoded == r.at("decode").get<std::string>());
    CHECK(decoded_skip == r.at("decode_skip").get<std::string>());
    if (ids == ids_of(r.at("ids")) && ids_special == ids_of(r.at("ids_special")) &&
        decoded == r.at("decode").get<std::string>() && decoded_skip == r.at("decode_skip").get<std::string>()) {
      ++matched;
    }
  }
  CHECK(matched == strings.size());
  WARN(name << ": " << matched << " of " << strings.size() << " corpus strings match HF tokenizers exactly");
}

void check_decode_cases(const std::string& name) {
  const Tokenizer& tok = tokenizer(name);
  const auto& cases = reference(name + "_reference.json").at("decode_cases");
  REQUIRE(cases.size() >= 100);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const auto ids = ids_of(c.at("ids"));
    INFO(name << " decode case " << i << " (" << c.at("kind").get<std::string>() << "): " << c.at("ids").dump());
    CHECK(tok.decode(ids, false) == c.at("decode").get<std::string>());
    CHECK(tok.decode(ids, true) == c.at("decode_skip").get<std::string>());
    CHECK(tok.tokens(ids) == c.at("tokens").get<std::vector<std::string>>());
  }
}

}  // namespace

TEST_CASE("Llama-3 tokenizer gives HF's ids, tokens and decodes for every corpus string", "[tokenizer]") {
  check_corpus("llama3");
}

TEST_CASE("Llama-2-style tokenizer gives HF's ids, tokens and decodes for every corpus string", "[tokenizer]") {
  check_corpus("llama2");
}

TEST_CASE("Llama-3 decode of random and truncated id lists matches HF, U+FFFD included", "[tokenizer]") {
  check_decode_cases("llama3");
}

TEST_CASE("Llama-2-style decode of random byte-fallback id lists matches HF, U+FFFD included", "[tokenizer]") {
  check_decode_cases("llama2");
}

TEST_CASE("Vocabulary sizes and special tokens match transformers", "[tokenizer]") {
  for (const std::string name : {"llama3", "llama2"}) {
    INFO(name);
    const Tokenizer& tok = tokenizer(name);
    const auto& ref = reference(name + "_reference.json");
    CHECK(tok.vocab_size() == ref.at("vocab_size_with_added").get<int64_t>());
    CHECK(tok.vocab_size() == ref.at("transformers_len").get<int64_t>());
    REQUIRE(tok.bos_token().has_value());
    REQUIRE(tok.eos_token().has_value());
    CHECK(*tok.bos_token() == ref.at("bos_token").get<std::string>());
    CHECK(*tok.eos_token() == ref.at("eos_token").get<std::string>());
    CHECK(tok.bos_id() == std::optional<int64_t>(ref.at("bos_token_id").get<int64_t>()));
    CHECK(tok.eos_id() == std::optional<int64_t>(ref.at("eos_token_id").get<int64_t>()));
    CHECK(tok.require_token_id(*tok.eos_token()) == ref.at("eos_token_id").get<int64_t>());
  }
}

TEST_CASE("transformers 5 agrees with tokenizer.json on Llama-3 and differs only in leading-space cases on the "
          "Llama-2-style files",
          "[tokenizer]") {
  // transformers 5 rebuilds LlamaTokenizer with a Metaspace pre-tokenizer instead of the file's
  // Prepend/Replace normalizers; mechlens follows the file (= tokenizers = transformers 4). This
  // records how far apart they are so a change in either shows up here.
  CHECK(reference("llama3_reference.json").at("strings_where_transformers_differs").get<int>() == 0);
  const auto& ref = reference("llama2_reference.json");
  int differs = 0;
  for (const auto& r : ref.at("strings")) {
    if (!r.contains("transformers")) continue;
    ++differs;
    const auto text = r.at("text").get<std::string>();
    INFO(mechlens::tokenizer::detail::excerpt(text, 60));
    // Only ids differ (decode is the same), and only where text starts with a space/"▁" or
    // follows an added token.
    CHECK_FALSE(r.at("transformers").contains("decode"));
    const bool leading = text[0] == ' ' || text.rfind("\xE2\x96\x81", 0) == 0 || text.find("<s>") != std::string::npos ||
                         text.find("</s>") != std::string::npos;
    CHECK(leading);
  }
  CHECK(differs == ref.at("strings_where_transformers_differs").get<int>());
  CHECK(differs == 20);
}

TEST_CASE("With match_transformers_v5 every corpus string gives transformers 5's ids and decodes", "[tokenizer]") {
  mechlens::TokenizerOptions v5;
  v5.match_transformers_v5 = true;
  for (const std::string name : {"llama3", "llama2"}) {
    const Tokenizer tok = Tokenizer::from_file(vocabulary_dir(name), v5);
    const auto& ref = reference(name + "_reference.json");
    int taken_from_transformers = 0;
    for (const auto& r : ref.at("strings")) {
      const auto text = r.at("text").get<std::string>();
      INFO(name << ": " << mechlens::tokenizer::detail::excerpt(text, 80));
      // The reference stores transformers' value only where it differs from tokenizers'.
      const auto expect = [&](const char* key) {
        if (r.contains("transformers") && r.at("transformers").contains(key)) {
          ++taken_from_transformers;
          return r.at("transformers").at(key);
        }
        return r.at(key);
      };
      CHECK(tok.encode(text, false) == ids_of(expect("ids")));
      CHECK(tok.encode(text, true) == ids_of(expect("ids_special")));
      const auto ids_special = ids_of(r.at("ids_special"));
      CHECK(tok.decode(ids_special, false) == expect("decode").get<std::string>());
      CHECK(tok.decode(ids_special, true) == expect("decode_skip").get<std::string>());
    }
    CHECK(taken_from_transformers == (name == "llama2" ? 40 : 0));
    for (const auto& c : ref.at("decode_cases")) {
      CHECK(tok.decode(ids_of(c.at("ids")), false) == c.at("decode").get<std::string>());
    }
  }
}

TEST_CASE("Offsets are HF's for every corpus string, on both vocabularies", "[tokenizer]") {
  for (const std::string name : {"llama3", "llama2"}) {
    const Tokenizer& tok = tokenizer(name);
    std::size_t matched = 0;
    const auto& strings = reference(name + "_reference.json").at("strings");
    for (const auto& r : strings) {
      const auto text = r.at("text").get<std::string>();
      INFO(name << ": " << mechlens::tokenizer::detail::excerpt(text, 80));
      const auto e = tok.encode_with_offsets(text, false);
      CHECK(e.ids == ids_of(r.at("ids")));
      // The reference holds HF's offsets as byte ranges (converted from Python's character offsets).
      std::vector<std::pair<std::size_t, std::size_t>> expected;
      for (const auto& o : r.at("offsets")) expected.emplace_back(o[0].get<std::size_t>(), o[1].get<std::size_t>());
      CHECK(e.offsets == expected);
      matched += e.offsets == expected ? 1 : 0;
      const auto with_bos = tok.encode_with_offsets(text, true);
      CHECK(with_bos.ids == ids_of(r.at("ids_special")));
      CHECK(with_bos.offsets.size() == with_bos.ids.size());
    }
    WARN(name << ": offsets of " << matched << " of " << strings.size() << " corpus strings match HF");
  }
}

TEST_CASE("Encoding from several threads at once gives the same ids as HF", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(vocabulary_dir("llama3"));  // fresh: empty word cache
  const auto& strings = reference("llama3_reference.json").at("strings");
  std::vector<int> wrong(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (std::size_t i = t; i < strings.size(); i += (round == 0 ? 4 : 1)) {
          const auto& r = strings[i];
          if (tok.encode(r.at("text").get<std::string>(), false) != ids_of(r.at("ids"))) ++wrong[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == std::vector<int>(4, 0));
}
