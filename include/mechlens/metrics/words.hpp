#pragma once
/// \file
/// Words of a text, as the behaviour scorers count them (metrics/behaviour.hpp), and the form in
/// which a lexicon matches them (metrics/lexicon.hpp).
///
/// A word is a maximal run of word characters — ASCII letters and digits, and every non-ASCII
/// character except punctuation and spaces (U+0080–U+00BF, × ÷, U+2000–U+206F, U+2E00–U+2E7F,
/// U+3000–U+303F, U+FE30–U+FE4F, U+FF00–U+FF0F, U+FF1A–U+FF20) — where a hyphen (-, U+2010,
/// U+2011) or an apostrophe (', U+2019) between two word characters joins them. So
/// "self-referential", "meta-awareness" and "don't" are one word each; "observe," is "observe";
/// "--" and "…" are no words; "3.14" is two words.
///
/// Text is decoded with core/utf8.hpp's strict decoder: an ill-formed sequence (overlong form,
/// surrogate, value past U+10FFFF, sequence cut short, stray continuation byte) is one U+FFFD per
/// maximal subpart, which is a word character; its bytes stay in the word as written.
///
/// Before matching, joiners are normalised to '-' and '\'' and, unless the lexicon is
/// case-sensitive, ASCII letters are lower-cased (normalise_word).

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mechlens/core/utf8.hpp"

namespace mechlens::metrics {

namespace detail {

enum class CharClass { Word, Joiner, Separator };

inline CharClass classify(char32_t cp) {
  if (cp < 0x80) {
    if (std::isalnum(static_cast<int>(cp))) return CharClass::Word;
    if (cp == '-' || cp == '\'') return CharClass::Joiner;
    return CharClass::Separator;
  }
  if (cp == 0x2010 || cp == 0x2011 || cp == 0x2019) return CharClass::Joiner;
  if ((cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x206F) ||
      (cp >= 0x2E00 && cp <= 0x2E7F) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
      (cp >= 0xFF00 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20))
    return CharClass::Separator;
  return CharClass::Word;  // U+FFFD, the decoding of ill-formed bytes, included
}

}  // namespace detail

/// The words of `text` by the rule in this file's comment, as they appear (joiners as written).
inline std::vector<std::string> split_words(const std::string& text) {
  struct Piece {
    std::size_t begin, len;
    detail::CharClass cls;
  };
  std::vector<Piece> pieces;
  for (std::size_t i = 0; i < text.size();) {
    const Utf8Char c = utf8_decode_char(text, i);
    pieces.push_back({i, c.length, detail::classify(c.code_point)});
    i += c.length;
  }
  std::vector<std::string> words;
  std::size_t k = 0;
  while (k < pieces.size()) {
    if (pieces[k].cls != detail::CharClass::Word) {
      ++k;
      continue;
    }
    const std::size_t start = pieces[k].begin;
    std::size_t end = pieces[k].begin + pieces[k].len;
    ++k;
    while (k < pieces.size()) {
      if (pieces[k].cls == detail::CharClass::Word) {
        end = pieces[k].begin + pieces[k].len;
        ++k;
      } else if (pieces[k].cls == detail::CharClass::Joiner && k + 1 < pieces.size() &&
                 pieces[k + 1].cls == detail::CharClass::Word) {
        end = pieces[k + 1].begin + pieces[k + 1].len;
        k += 2;
      } else {
        break;
      }
    }
    words.push_back(text.substr(start, end - start));
  }
  return words;
}

namespace detail {

/// A word as matched: joiners normalised to '-' / '\'', ASCII lower-cased unless case-sensitive;
/// every other character (ill-formed bytes included) kept as written.
inline std::string normalise_word(const std::string& word, bool case_sensitive) {
  std::string out;
  out.reserve(word.size());
  for (std::size_t i = 0; i < word.size();) {
    const Utf8Char c = utf8_decode_char(word, i);
    if (c.code_point == 0x2010 || c.code_point == 0x2011)
      out += '-';
    else if (c.code_point == 0x2019)
      out += '\'';
    else if (c.code_point < 0x80 && !case_sensitive)
      out += static_cast<char>(std::tolower(static_cast<int>(c.code_point)));
    else
      out.append(word, i, c.length);
    i += c.length;
  }
  return out;
}

}  // namespace detail

}  // namespace mechlens::metrics
