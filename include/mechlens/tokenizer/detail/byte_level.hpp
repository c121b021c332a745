#pragma once
/// \file
/// GPT-2's byte-to-character table used by ByteLevel pre-tokenizers and decoders: printable
/// Latin-1 bytes stand for themselves, the other 68 bytes are moved to U+0100 and up so every
/// byte has a visible, non-whitespace character.

#include <array>
#include <string>
#include <unordered_map>

#include "mechlens/tokenizer/detail/utf8.hpp"

namespace mechlens::tokenizer::detail {

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_utf8;        // byte -> UTF-8 of its stand-in character
  std::unordered_map<char32_t, unsigned char> char_to_byte;

  ByteLevelTables() {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      byte_to_utf8[b] = utf8_encode(cp);
      char_to_byte[cp] = static_cast<unsigned char>(b);
    }
  }
};

inline const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

/// Maps every byte of s to its stand-in character.
inline std::string bytes_to_byte_level(std::string_view s) {
  const auto& t = byte_level_tables();
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) out += t.byte_to_utf8[c];
  return out;
}

}  // namespace mechlens::tokenizer::detail
