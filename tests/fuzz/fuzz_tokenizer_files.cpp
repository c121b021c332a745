// tokenizer.json + tokenizer_config.json: the input is both files, split at the first NUL byte
// (no NUL: an empty tokenizer_config.json). Whatever loads must encode and decode a fixed text.
// And Tokenizer::from_json_text (what from_file reads tokenizer.json with: the model's vocab and
// merges read straight from the text) must give exactly what from_json on nlohmann's DOM gives:
// the same ids and decodes, or the same error.
#include <cstdlib>
#include <string>
#include <typeinfo>

#include <mechlens/io/json.hpp>
#include <mechlens/tokenizer/tokenizer.hpp>

#include "fuzz_support.hpp"

namespace {

const char* const kTexts[] = {"Hello world", "  two  spaces\n", "caf\xc3\xa9 \xf0\x9f\x98\x80", ""};

// What loading gives: the error, or the ids and decodes of the fixed texts.
template <class Load>
std::string outcome(Load&& load) {
  try {
    const mechlens::Tokenizer tok = load();
    std::string out = std::to_string(tok.vocab_size());
    for (const char* text : kTexts) {
      try {
        const auto ids = tok.encode(text, true);
        for (const auto id : ids) out += "," + std::to_string(id);
        out += "|" + tok.decode(ids, false) + "|" + tok.decode(ids, true);
      } catch (const mechlens::Error& e) {
        out += std::string("|refused ") + e.what();
      }
    }
    return out;
  } catch (const mechlens::Error& e) {
    return std::string("error ") + typeid(e).name() + " " + e.what();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = mechlens_fuzz::as_text(data, size);
  const size_t cut = input.find('\0');
  const std::string_view tokenizer_json = input.substr(0, cut);
  const std::string_view config_json = cut == std::string_view::npos ? std::string_view("{}") : input.substr(cut + 1);
  mechlens_fuzz::refuse_or_run([&] {
    const auto t = mechlens::io::parse_json(tokenizer_json, "fuzz tokenizer.json");
    const auto c = mechlens::io::parse_json(config_json, "fuzz tokenizer_config.json");
    const auto tok = mechlens::Tokenizer::from_json(t, c, "fuzz tokenizer.json");
    for (const char* text : kTexts) {
      mechlens_fuzz::refuse_or_run([&] {
        const auto ids = tok.encode(text, true);
        tok.decode(ids, false);
        tok.decode(ids, true);
      });
    }
  });
  mechlens_fuzz::refuse_or_run([&] {
    const auto c = mechlens::io::parse_json(config_json, "fuzz tokenizer_config.json");
    const std::string where = "fuzz tokenizer.json";
    const std::string via_text = outcome([&] { return mechlens::Tokenizer::from_json_text(tokenizer_json, c, where); });
    const std::string via_dom = outcome([&] {
      return mechlens::Tokenizer::from_json(mechlens::io::parse_json(tokenizer_json, "'" + where + "'"), c, where);
    });
    if (via_text != via_dom) std::abort();  // a finding: the fast path changed what loads
  });
  return 0;
}
