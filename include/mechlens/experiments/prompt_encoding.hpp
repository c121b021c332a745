#pragma once
/// \file
/// How a pair's texts become token ids. `Raw`: the text as it is, with the tokenizer's special
/// tokens (Llama-3's <|begin_of_text|>, Mistral's <s>, the toy model's <|bos|>). `Chat`: the text
/// as the user turn of the model's chat template, with the assistant header after it
/// (add_generation_prompt), as an Instruct model is prompted. `Auto`: Chat when the tokenizer has
/// a chat template, else Raw. Pairs that carry token ids are used as they are.

#include <cstdint>
#include <string>
#include <vector>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/prompt_pairs.hpp"
#include "mechlens/tokenizer/tokenizer.hpp"

namespace mechlens::experiments {

enum class PromptFormat { Auto, Raw, Chat };

inline PromptFormat parse_prompt_format(const std::string& s) {
  if (s == "auto") return PromptFormat::Auto;
  if (s == "raw") return PromptFormat::Raw;
  if (s == "chat") return PromptFormat::Chat;
  ::mechlens::detail::raise<ArgumentError>("prompt format '{}' is unknown (expected auto, raw or chat)", s);
}

inline const char* prompt_format_name(PromptFormat f) {
  return f == PromptFormat::Raw ? "raw" : f == PromptFormat::Chat ? "chat" : "auto";
}

/// Auto resolved against the tokenizer.
inline PromptFormat resolve_prompt_format(PromptFormat f, const Tokenizer& tok) {
  if (f != PromptFormat::Auto) return f;
  return tok.chat_template().has_value() ? PromptFormat::Chat : PromptFormat::Raw;
}

/// Token ids of one prompt text; `system` (optional) becomes a system turn in Chat format.
inline std::vector<int64_t> encode_prompt_text(const Tokenizer& tok, const std::string& text, PromptFormat format,
                                               const std::string& system = "") {
  format = resolve_prompt_format(format, tok);
  if (format == PromptFormat::Raw) return tok.encode(text, /*add_special_tokens=*/true);
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", text});
  return tok.encode_chat(messages, /*add_generation_prompt=*/true);
}

/// Both prompts of a pair as token ids.
struct EncodedPair {
  std::vector<int64_t> recursive, baseline;
  const std::vector<int64_t>& ids(Role r) const { return r == Role::Treatment ? recursive : baseline; }
};

/// Encodes every pair (pairs with ids keep them). `tok` may be null only when every pair is
/// pre-tokenized. Prompts need at least 2 tokens (one prefilled, one pending).
inline std::vector<EncodedPair> encode_pairs(const std::vector<PromptPair>& pairs, const Tokenizer* tok,
                                             PromptFormat format, const std::string& system = "") {
  std::vector<EncodedPair> out;
  for (const auto& p : pairs) {
    EncodedPair e;
    if (p.pre_tokenized()) {
      e.recursive = p.recursive_ids;
      e.baseline = p.baseline_ids;
    } else {
      MECHLENS_CHECK(tok != nullptr, ArgumentError, "pair '{}' is text, but no tokenizer was given", p.id);
      e.recursive = encode_prompt_text(*tok, p.recursive, format, system);
      e.baseline = encode_prompt_text(*tok, p.baseline, format, system);
    }
    MECHLENS_CHECK(e.recursive.size() >= 2 && e.baseline.size() >= 2, ArgumentError,
                   "pair '{}': a prompt needs at least 2 tokens (recursive {}, baseline {})", p.id, e.recursive.size(),
                   e.baseline.size());
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace mechlens::experiments
