#pragma once
/// \file
/// The toy model's tokenizer.json: a byte-level BPE in the standard Hugging Face format (the
/// GPT-2 / Llama-3 family's pre-tokenizer and decoder) whose vocabulary holds
///   ids 0, 1        <|bos|>, <|eos|> (added tokens, special),
///   ids 2..257      the 256 byte symbols (GPT-2's bytes_to_unicode order by byte value),
///   ids 258..       every word of the grammars, bare and with the leading-space marker "Ġ",
/// and no merges, with `ignore_merges: true`: a pre-token that is a whole vocabulary word becomes
/// that one token, anything else falls back to its bytes. So every text round-trips, every
/// grammar word is one token, and HF `tokenizers` (>= 0.19, which reads ignore_merges) loads the
/// same file. The post-processor prepends <|bos|> (as Llama-3's does).

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace toy {

inline constexpr const char* kBos = "<|bos|>";
inline constexpr const char* kEos = "<|eos|>";

/// GPT-2's bytes_to_unicode: the printable character that stands for each byte, as UTF-8.
inline std::vector<std::string> byte_symbols() {
  std::vector<int> printable;
  for (int b = 33; b <= 126; ++b) printable.push_back(b);
  for (int b = 161; b <= 172; ++b) printable.push_back(b);
  for (int b = 174; b <= 255; ++b) printable.push_back(b);
  std::vector<int> code(256, -1);
  for (int b : printable) code[b] = b;
  int next = 256;
  for (int b = 0; b < 256; ++b)
    if (code[b] < 0) code[b] = next++;
  std::vector<std::string> out;
  for (int b = 0; b < 256; ++b) {
    const auto cp = static_cast<uint32_t>(code[b]);
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {  // < 0x800 for every code point used here
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out.push_back(s);
  }
  return out;
}

/// tokenizer.json for `words` (see the file comment).
inline nlohmann::ordered_json make_tokenizer_json(const std::vector<std::string>& words) {
  const auto bytes = byte_symbols();
  const std::string space = bytes[' '];  // "Ġ"
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  int64_t id = 0;
  vocab[kBos] = id++;
  vocab[kEos] = id++;
  for (const auto& b : bytes) vocab[b] = id++;
  for (const auto& w : words) {
    if (!vocab.contains(w)) vocab[w] = id++;
    const std::string spaced = space + w;
    if (!vocab.contains(spaced)) vocab[spaced] = id++;
  }
  auto added = [](int64_t i, const char* content) {
    return nlohmann::ordered_json{{"id", i},          {"content", content}, {"single_word", false}, {"lstrip", false},
                                  {"rstrip", false},  {"normalized", false}, {"special", true}};
  };
  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = {added(0, kBos), added(1, kEos)};
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", kBos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {{{"SpecialToken", {{"id", kBos}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", kBos}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{kBos, {{"id", kBos}, {"ids", {0}}, {"tokens", {kBos}}}}}}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", true},
                {"vocab", vocab},
                {"merges", nlohmann::ordered_json::array()}};
  return j;
}

/// tokenizer_config.json beside it (what transformers' AutoTokenizer reads).
inline nlohmann::ordered_json make_tokenizer_config_json() {
  return {{"tokenizer_class", "PreTrainedTokenizerFast"},
          {"bos_token", kBos},
          {"eos_token", kEos},
          {"model_max_length", 512},
          {"clean_up_tokenization_spaces", false}};
}

}  // namespace toy
