// encode on arbitrary bytes for each tokenizer kind: the real Llama-3 (byte-level BPE) and
// Llama-2 (SentencePiece-style BPE with byte fallback) vocabularies, and the toy model's. Valid
// UTF-8 must encode, and its ids must decode; invalid UTF-8 is an ArgumentError.
#include <cstdlib>
#include <memory>
#include <vector>

#include <mechlens/tokenizer/tokenizer.hpp>

#include "fuzz_support.hpp"

namespace {
std::vector<std::unique_ptr<mechlens::Tokenizer>>& tokenizers() {
  static std::vector<std::unique_ptr<mechlens::Tokenizer>> all = [] {
    std::vector<std::unique_ptr<mechlens::Tokenizer>> v;
    const char* cache = std::getenv("MECHLENS_TOKENIZER_CACHE");
    const std::string dir = cache ? cache : std::string(std::getenv("HOME")) + "/.cache/mechlens/tokenizers";
    for (const std::string& path : {dir + "/llama3", dir + "/llama2", std::string(MECHLENS_SOURCE_DIR) + "/examples/models/dec7-toy"})
      v.push_back(std::make_unique<mechlens::Tokenizer>(mechlens::Tokenizer::from_file(path)));
    return v;
  }();
  return all;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = mechlens_fuzz::as_text(data, size);
  for (const auto& tok : tokenizers()) {
    for (bool special : {true, false}) {
      try {
        const auto ids = tok->encode(text, special);
        tok->decode(ids, false);
      } catch (const mechlens::ArgumentError&) {
        // invalid UTF-8 (named by byte offset), or a character no vocabulary entry covers
      }
    }
  }
  return 0;
}
