#pragma once
/// \file
/// UTF-8 helpers for the tokenizer: validation with the byte offset of the first bad byte,
/// lossy decoding that matches Rust's `String::from_utf8_lossy` (what HF `tokenizers` uses when
/// byte-level tokens do not form valid UTF-8), and Python's notion of whitespace (what Jinja's
/// `trim` and `str.strip()` in chat templates remove).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mechlens::tokenizer::detail {

/// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not a
/// complete well-formed sequence (overlong forms, surrogates and values past U+10FFFF are invalid).
inline std::size_t utf8_valid_length(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + 1 >= s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (i + k >= s.size() || (b(i + k) & 0xC0) != 0x80) return 0;
  }
  return n;
}

/// Byte offset of the first byte that is not part of valid UTF-8, or nullopt when s is valid.
inline std::optional<std::size_t> first_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t n = utf8_valid_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

inline bool is_valid_utf8(std::string_view s) { return !first_invalid_utf8(s).has_value(); }

/// Number of bytes of the (valid) UTF-8 character whose lead byte is c.
inline std::size_t utf8_char_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return 4;
}

/// Decodes the (valid) UTF-8 character at s[i].
inline char32_t utf8_decode(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k])); };
  const char32_t c = b(0);
  if (c < 0x80) return c;
  if (c < 0xE0) return ((c & 0x1F) << 6) | (b(1) & 0x3F);
  if (c < 0xF0) return ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

inline void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline std::string utf8_encode(char32_t cp) {
  std::string s;
  utf8_append(s, cp);
  return s;
}

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

/// Bytes to text the way Rust's String::from_utf8_lossy does it: every maximal prefix of an
/// ill-formed sequence becomes one U+FFFD (Unicode's "substitution of maximal subparts").
inline std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < s.size()) {
    const std::size_t n = utf8_valid_length(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    // Skip the longest prefix that could still have become a valid sequence.
    const unsigned char c = b(i);
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    std::size_t k = 1;
    if (need > 0 && i + 1 < s.size() && b(i + 1) >= lo && b(i + 1) <= hi) {
      k = 2;
      while (k < need && i + k < s.size() && (b(i + k) & 0xC0) == 0x80) ++k;
    }
    out.append(kReplacementChar);
    i += k;
  }
  return out;
}

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
