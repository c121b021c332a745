#pragma once
/// \file
/// Text helpers of the tokenizer: Python's notion of whitespace (what Jinja's `trim` and
/// `str.strip()` in chat templates remove), replacing substrings, and printable excerpts for
/// error messages. UTF-8 validation, decoding and the lossy conversion that matches Rust's
/// `String::from_utf8_lossy` (what HF `tokenizers` uses when byte-level tokens do not form valid
/// UTF-8) are core's (core/utf8.hpp), re-exported here under their old names.

#include <cstddef>
#include <string>
#include <string_view>

#include "mechlens/core/utf8.hpp"

namespace mechlens::tokenizer::detail {

// The UTF-8 decoder itself is core's (core/utf8.hpp); the tokenizer code has always called it
// through this namespace.
using ::mechlens::first_invalid_utf8;
using ::mechlens::is_valid_utf8;
using ::mechlens::kReplacementChar;
using ::mechlens::utf8_append;
using ::mechlens::utf8_char_length;
using ::mechlens::utf8_decode;
using ::mechlens::utf8_encode;
using ::mechlens::utf8_lossy;
using ::mechlens::utf8_valid_length;

/// Python's str.isspace() for one code point (what Jinja's trim and str.strip() remove).
inline bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

/// Python's str.strip() with no argument, on valid UTF-8.
inline std::string python_strip(std::string_view s) {
  std::size_t begin = 0;
  while (begin < s.size()) {
    const std::size_t n = utf8_char_length(static_cast<unsigned char>(s[begin]));
    if (!is_python_space(utf8_decode(s, begin))) break;
    begin += n;
  }
  std::size_t end = s.size();
  while (end > begin) {
    std::size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (!is_python_space(utf8_decode(s, start))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

/// Replaces every occurrence of `from` (non-empty) in s with `to`.
inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  if (from.empty()) return std::string(s);
  out.reserve(s.size());
  std::size_t pos = 0;
  while (true) {
    const std::size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

/// A short, printable rendering of possibly long or binary text for error messages.
inline std::string excerpt(std::string_view s, std::size_t max_bytes = 40) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max_bytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F || c >= 0x80) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out;
}

}  // namespace mechlens::tokenizer::detail
