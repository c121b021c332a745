// tokenizer.json + tokenizer_config.json: the input is both files, split at the first NUL byte
// (no NUL: an empty tokenizer_config.json). Whatever loads must encode and decode a fixed text.
#include <mechlens/io/json.hpp>
#include <mechlens/tokenizer/tokenizer.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = mechlens_fuzz::as_text(data, size);
  const size_t cut = input.find('\0');
  const std::string_view tokenizer_json = input.substr(0, cut);
  const std::string_view config_json = cut == std::string_view::npos ? std::string_view("{}") : input.substr(cut + 1);
  mechlens_fuzz::refuse_or_run([&] {
    const auto t = mechlens::io::parse_json(tokenizer_json, "fuzz tokenizer.json");
    const auto c = mechlens::io::parse_json(config_json, "fuzz tokenizer_config.json");
    const auto tok = mechlens::Tokenizer::from_json(t, c, "fuzz tokenizer.json");
    for (const char* text : {"Hello world", "  two  spaces\n", "caf\xc3\xa9 \xf0\x9f\x98\x80", ""}) {
      mechlens_fuzz::refuse_or_run([&] {
        const auto ids = tok.encode(text, true);
        tok.decode(ids, false);
        tok.decode(ids, true);
      });
    }
  });
  return 0;
}
