#pragma once
/// \file
/// The one UTF-8 decoder of mechlens (the tokenizer and the behaviour metrics both use it).
///
/// Well-formed UTF-8 is what Unicode's Table 3-7 allows: no overlong forms (C0, C1, E0 80..9F,
/// F0 80..8F), no surrogates (ED A0..BF), nothing past U+10FFFF (F4 90.., F5..FF), no stray
/// continuation bytes and no sequence cut short. Anything else is decoded as U+FFFD, one per
/// *maximal subpart* (Unicode §3.9, "U+FFFD Substitution of Maximal Subparts": the longest prefix
/// that could still have begun a well-formed sequence, or one byte) — the same substitution as
/// Rust's `String::from_utf8_lossy` (what Hugging Face `tokenizers` uses) and Python's
/// `bytes.decode("utf-8", "replace")`.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mechlens {

/// U+FFFD REPLACEMENT CHARACTER, and its UTF-8 bytes.
inline constexpr char32_t kReplacementCodePoint = 0xFFFD;
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

/// One decoded character: its code point and how many bytes of the input it took.
struct Utf8Char {
  char32_t code_point;  ///< U+FFFD when !valid
  std::size_t length;   ///< >= 1; for an ill-formed sequence, the length of its maximal subpart
  bool valid;           ///< the bytes were a well-formed sequence
};

/// Decodes the character that starts at s[i] (i < s.size()), strictly (see the file comment).
inline Utf8Char utf8_decode_char(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return {c, 1, true};
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte (Table 3-7)
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // E0 80..9F would be overlong
    if (c == 0xED) hi = 0x9F;  // ED A0..BF would be a surrogate
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;  // F0 80..8F would be overlong
    if (c == 0xF4) hi = 0x8F;  // F4 90.. would be past U+10FFFF
  } else {
    return {kReplacementCodePoint, 1, false};  // a continuation byte, C0, C1 or F5..FF
  }
  const std::size_t available = s.size() - i;
  if (available < 2 || b(1) < lo || b(1) > hi) return {kReplacementCodePoint, 1, false};
  std::size_t k = 2;
  while (k < need && k < available && (b(k) & 0xC0) == 0x80) ++k;
  if (k < need) return {kReplacementCodePoint, k, false};  // cut short: the subpart is one U+FFFD
  char32_t cp = c & (0x7F >> need);
  for (std::size_t j = 1; j < need; ++j) cp = (cp << 6) | (b(j) & 0x3F);
  return {cp, need, true};
}

/// The code point of the character at s[i] (U+FFFD for an ill-formed sequence).
inline char32_t utf8_decode(std::string_view s, std::size_t i) { return utf8_decode_char(s, i).code_point; }

/// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when the bytes there are not one.
inline std::size_t utf8_valid_length(std::string_view s, std::size_t i) {
  const Utf8Char c = utf8_decode_char(s, i);
  return c.valid ? c.length : 0;
}

/// Byte offset of the first byte that is not part of well-formed UTF-8, or nullopt when s is valid.
inline std::optional<std::size_t> first_invalid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Char c = utf8_decode_char(s, i);
    if (!c.valid) return i;
    i += c.length;
  }
  return std::nullopt;
}

inline bool is_valid_utf8(std::string_view s) { return !first_invalid_utf8(s).has_value(); }

/// Number of bytes of the character whose lead byte is c, for text already known to be valid
/// (an ill-formed sequence's length comes from utf8_decode_char).
inline std::size_t utf8_char_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return 4;
}

/// Appends the UTF-8 bytes of code point cp.
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

/// Bytes to text the way Rust's String::from_utf8_lossy does it: well-formed sequences are kept,
/// every maximal subpart of an ill-formed one becomes one U+FFFD.
inline std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Char c = utf8_decode_char(s, i);
    if (c.valid)
      out.append(s.substr(i, c.length));
    else
      out.append(kReplacementChar);
    i += c.length;
  }
  return out;
}

}  // namespace mechlens
