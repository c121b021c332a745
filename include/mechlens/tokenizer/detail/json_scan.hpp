#pragma once
/// \file
/// A strict reader for the two huge parts of tokenizer.json, the BPE model's "vocab" object
/// (token -> id) and "merges" array, straight from the file's text. Building a nlohmann::json
/// DOM of Llama-3's 128k vocabulary entries and 280k merges (then walking and freeing it) was most
/// of the time of loading a tokenizer; these functions read the same values with no per-entry
/// allocation.
///
/// They accept only the plain shapes Hugging Face writes, checked as strictly as nlohmann's parser
/// checks them (strings of well-formed UTF-8 without raw control characters, valid escapes and
/// surrogate pairs; ids written as plain non-negative integers). On anything else they return
/// false, and the caller (Tokenizer::from_json_text) takes the full nlohmann path instead, whose
/// errors are the ones mechlens has always given: this reader never decides what an error says.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "mechlens/core/utf8.hpp"

namespace mechlens::tokenizer::detail::json_scan {

/// A cursor over JSON text. Every reading function skips the whitespace before what it reads and
/// returns false, leaving the position unspecified, when the text there is not what it expects.
class Reader {
 public:
  explicit Reader(std::string_view text, std::size_t pos = 0) : text_(text), pos_(pos) {}

  std::size_t pos() const { return pos_; }
  /// Bytes of text after the position.
  std::size_t remaining() const { return pos_ < text_.size() ? text_.size() - pos_ : 0; }
  bool at_end() {
    skip_ws();
    return pos_ >= text_.size();
  }
  void skip_ws() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
      ++pos_;
    }
  }
  /// The next character (after whitespace) is c: consume it.
  bool take(char c) {
    skip_ws();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  /// The next character (after whitespace) is c (not consumed).
  bool peek(char c) {
    skip_ws();
    return pos_ < text_.size() && text_[pos_] == c;
  }

  /// A JSON string: `out` is its decoded bytes, a view into the text when it has no escapes,
  /// else into `scratch`. False for raw control characters, ill-formed UTF-8 (nlohmann refuses the
  /// same: overlong forms, surrogates, stray continuation bytes), unknown escapes, bad \u digits
  /// and surrogate escapes that are not a high-low pair, and for a string that is not closed.
  /// `escaped` (when given) tells whether the string was written with escapes.
  bool string(std::string_view& out, std::string& scratch, bool* escaped = nullptr) {
    if (!take('"')) return false;
    const std::size_t start = pos_;
    std::size_t i = start;
    const std::size_t n = text_.size();
    while (true) {
      if (i >= n) return false;
      const unsigned char c = static_cast<unsigned char>(text_[i]);
      if (c == '"') {
        out = text_.substr(start, i - start);
        pos_ = i + 1;
        if (escaped) *escaped = false;
        return true;
      }
      if (c == '\\') break;
      if (c < 0x20) return false;
      if (c < 0x80) {
        ++i;
        continue;
      }
      const std::size_t len = utf8_valid_length(text_, i);
      if (len == 0) return false;
      i += len;
    }
    // Escapes: decode into scratch from the first backslash on.
    scratch.assign(text_.data() + start, i - start);
    while (true) {
      if (i >= n) return false;
      const unsigned char c = static_cast<unsigned char>(text_[i]);
      if (c == '"') {
        out = scratch;
        pos_ = i + 1;
        if (escaped) *escaped = true;
        return true;
      }
      if (c < 0x20) return false;
      if (c >= 0x80) {
        const std::size_t len = utf8_valid_length(text_, i);
        if (len == 0) return false;
        scratch.append(text_.data() + i, len);
        i += len;
        continue;
      }
      if (c != '\\') {
        scratch.push_back(static_cast<char>(c));
        ++i;
        continue;
      }
      if (i + 1 >= n) return false;
      const char e = text_[i + 1];
      i += 2;
      switch (e) {
        case '"': scratch.push_back('"'); break;
        case '\\': scratch.push_back('\\'); break;
        case '/': scratch.push_back('/'); break;
        case 'b': scratch.push_back('\b'); break;
        case 'f': scratch.push_back('\f'); break;
        case 'n': scratch.push_back('\n'); break;
        case 'r': scratch.push_back('\r'); break;
        case 't': scratch.push_back('\t'); break;
        case 'u': {
          char32_t cp = 0;
          if (!hex4(i, cp)) return false;
          i += 4;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate first
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            char32_t low = 0;
            if (i + 1 >= n || text_[i] != '\\' || text_[i + 1] != 'u' || !hex4(i + 2, low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) return false;
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8_append(scratch, cp);
          break;
        }
        default:
          return false;
      }
    }
  }

  /// A non-negative integer below 2^31 written plainly: digits only, no leading zero, not
  /// followed by a fraction or exponent (nlohmann reads those as floats; "-0" and the like are
  /// left to it too).
  bool small_id(uint32_t& out) {
    skip_ws();
    const std::size_t n = text_.size();
    std::size_t i = pos_;
    if (i >= n || text_[i] < '0' || text_[i] > '9') return false;
    uint64_t v = 0;
    const std::size_t first = i;
    while (i < n && text_[i] >= '0' && text_[i] <= '9') {
      if (i - first >= 10) return false;
      v = v * 10 + static_cast<uint64_t>(text_[i] - '0');
      ++i;
    }
    if (text_[first] == '0' && i - first > 1) return false;
    if (i < n && (text_[i] == '.' || text_[i] == 'e' || text_[i] == 'E')) return false;
    if (v >= (uint64_t{1} << 31)) return false;
    out = static_cast<uint32_t>(v);
    pos_ = i;
    return true;
  }

  /// Skips one value of any kind by its structure alone: strings with their escapes, brackets
  /// matched (at most `max_depth` deep), scalars up to the next delimiter. It does not check the
  /// value: the text it skips goes to nlohmann's parser afterwards.
  bool skip_value(int max_depth) {
    skip_ws();
    const std::size_t n = text_.size();
    int depth = 0;
    while (pos_ < n) {
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        while (pos_ < n && text_[pos_] != '"') pos_ += text_[pos_] == '\\' ? 2 : 1;
        if (pos_ >= n) return false;
        ++pos_;
      } else if (c == '{' || c == '[') {
        if (++depth > max_depth) return false;
        ++pos_;
      } else if (c == '}' || c == ']') {
        if (depth == 0) return true;  // the end of the enclosing container, not of this value
        --depth;
        ++pos_;
      } else if (depth == 0 && (c == ',' || c == ':' || c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
        return true;
      } else {
        ++pos_;
      }
      if (depth == 0 && (c == '"' || c == '}' || c == ']')) return true;
    }
    return depth == 0;
  }

 private:
  bool hex4(std::size_t i, char32_t& out) const {
    if (i + 4 > text_.size()) return false;
    char32_t v = 0;
    for (std::size_t k = i; k < i + 4; ++k) {
      const char h = text_[k];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<char32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<char32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<char32_t>(h - 'A' + 10);
      else return false;
    }
    out = v;
    return true;
  }

  std::string_view text_;
  std::size_t pos_;
};

/// Reads a "vocab" object {"token": id, ...}, calling on_entry(token, id) for each entry in file
/// order (it returns false to give up). False when the object is not of that shape.
template <class OnEntry>
bool read_vocab(Reader& r, OnEntry&& on_entry) {
  if (!r.take('{')) return false;
  if (r.take('}')) return true;
  std::string scratch;
  while (true) {
    std::string_view token;
    uint32_t id = 0;
    if (!r.string(token, scratch) || !r.take(':') || !r.small_id(id)) return false;
    if (!on_entry(token, id)) return false;
    if (r.take(',')) continue;
    return r.take('}');
  }
}

/// Reads a "merges" array of "a b" strings (exactly one space) or ["a", "b"] pairs, calling
/// on_merge(a, b, in_text) for each in order (it returns false to give up). `in_text` tells that a
/// and b are views into the text (no escapes), which stay valid; otherwise they are valid only
/// during the call. False when the array is not of that shape.
template <class OnMerge>
bool read_merges(Reader& r, OnMerge&& on_merge) {
  if (!r.take('[')) return false;
  if (r.take(']')) return true;
  std::string scratch_a, scratch_b;
  while (true) {
    std::string_view a, b;
    bool escaped_a = false, escaped_b = false;
    if (r.peek('"')) {
      std::string_view s;
      if (!r.string(s, scratch_a, &escaped_a)) return false;
      const std::size_t space = s.find(' ');
      if (space == std::string_view::npos || s.find(' ', space + 1) != std::string_view::npos) return false;
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (!r.take('[') || !r.string(a, scratch_a, &escaped_a) || !r.take(',') ||
               !r.string(b, scratch_b, &escaped_b) || !r.take(']')) {
      return false;
    }
    if (!on_merge(a, b, !escaped_a && !escaped_b)) return false;
    if (r.take(',')) continue;
    return r.take(']');
  }
}

/// Where a value sits in the text: [begin, end).
struct Span {
  std::size_t begin = 0, end = 0;
};

/// Walks the top-level object of a tokenizer.json text to its "model" object and calls
/// on_vocab(reader) and on_merges(reader) with the reader at the values of the model's "vocab"
/// and "merges" (each must read its value whole and return true). Gives the spans of the two
/// values, for the caller to parse the rest of the text without them. False when the text is not
/// shaped that way: not an object, no "model" object or no "vocab" / "merges" in it, one of those
/// keys twice, or a key there that is written with escapes (it could spell one of them).
template <class OnVocab, class OnMerges>
bool walk_tokenizer_json(std::string_view text, int max_depth, OnVocab&& on_vocab, OnMerges&& on_merges,
                         Span& vocab, Span& merges) {
  // nlohmann skips a UTF-8 byte order mark at the start; so does this walk.
  Reader r(text, text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0);
  std::string scratch;
  // A key at the top level or in "model": plain (no escapes), so it compares as written.
  const auto plain_key = [&](std::string_view& key) {
    bool escaped = true;
    return r.string(key, scratch, &escaped) && !escaped && r.take(':');
  };
  if (!r.take('{')) return false;
  bool seen_model = false;
  if (!r.peek('}')) {
    while (true) {
      std::string_view key;
      if (!plain_key(key)) return false;
      if (key != "model") {
        if (!r.skip_value(max_depth - 1)) return false;
      } else {
        if (seen_model || !r.take('{')) return false;
        seen_model = true;
        bool seen_vocab = false, seen_merges = false;
        if (!r.peek('}')) {
          while (true) {
            std::string_view mkey;
            if (!plain_key(mkey)) return false;
            if (mkey == "vocab" || mkey == "merges") {
              const bool is_vocab = mkey == "vocab";
              bool& seen = is_vocab ? seen_vocab : seen_merges;
              if (seen) return false;
              seen = true;
              r.skip_ws();
              Span& span = is_vocab ? vocab : merges;
              span.begin = r.pos();
              if (!(is_vocab ? on_vocab(r) : on_merges(r))) return false;
              span.end = r.pos();
            } else if (!r.skip_value(max_depth - 2)) {
              return false;
            }
            if (r.take(',')) continue;
            if (r.take('}')) break;
            return false;
          }
        } else {
          r.take('}');
        }
        if (!seen_vocab || !seen_merges) return false;
      }
      if (r.take(',')) continue;
      if (r.take('}')) break;
      return false;
    }
  } else {
    r.take('}');
  }
  return seen_model && r.at_end();
}

}  // namespace mechlens::tokenizer::detail::json_scan
