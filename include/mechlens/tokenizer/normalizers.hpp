#pragma once
/// \file
/// tokenizer.json normalizers (the "normalizer" field): text rewrites applied to every piece of
/// the input between added tokens, before pre-tokenization. Supported: Sequence, Prepend,
/// Replace (string or regex pattern), Strip. Unicode normal forms and case folding are refused
/// with a ConfigError that names them rather than silently skipped.

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/tokenizer/detail/regex.hpp"
#include "mechlens/tokenizer/detail/utf8.hpp"

namespace mechlens::tokenizer {

namespace detail {

/// [begin, end) byte range in the original text.
using Offsets = std::pair<std::size_t, std::size_t>;

/// The smallest range covering align[b, e).
inline Offsets span_of(const std::vector<Offsets>& align, std::size_t b, std::size_t e) {
  Offsets r = align[b];
  for (std::size_t i = b + 1; i < e; ++i) {
    r.first = std::min(r.first, align[i].first);
    r.second = std::max(r.second, align[i].second);
  }
  return r;
}

/// Replaces the byte ranges `matches` of text by `content`. When `align` (one original range per
/// byte of text) is given it is rewritten too: the new bytes take the range of what they replace.
inline void replace_ranges(std::string& text, std::vector<Offsets>* align,
                           const std::vector<std::pair<std::size_t, std::size_t>>& matches, std::string_view content) {
  if (matches.empty()) return;
  std::string out;
  std::vector<Offsets> out_align;
  out.reserve(text.size() + matches.size() * content.size());
  std::size_t prev = 0;
  for (auto [b, e] : matches) {
    out.append(text, prev, b - prev);
    if (align) {
      out_align.insert(out_align.end(), align->begin() + prev, align->begin() + b);
      const Offsets r = b < e ? span_of(*align, b, e)
                              : b < align->size() ? Offsets{(*align)[b].first, (*align)[b].first}
                                                  : Offsets{align->back().second, align->back().second};
      out_align.insert(out_align.end(), content.size(), r);
    }
    out.append(content);
    prev = e;
  }
  out.append(text, prev, std::string::npos);
  text = std::move(out);
  if (align) {
    out_align.insert(out_align.end(), align->begin() + prev, align->end());
    *align = std::move(out_align);
  }
}

/// Inserts s before the first byte; the new bytes share the first character's range (as HF's
/// NormalizedString::prepend aligns them).
inline void prepend_aligned(std::string& text, std::vector<Offsets>* align, std::string_view s) {
  if (text.empty()) return;
  text.insert(0, s);
  if (align) align->insert(align->begin(), s.size(), align->front());
}

/// Every occurrence of a literal, left to right.
inline std::vector<std::pair<std::size_t, std::size_t>> find_literal(std::string_view text, std::string_view what) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  if (what.empty()) return out;
  for (std::size_t pos = text.find(what); pos != std::string_view::npos; pos = text.find(what, pos + what.size())) {
    out.emplace_back(pos, pos + what.size());
  }
  return out;
}

}  // namespace detail

/// Rewrites one piece of text (valid UTF-8 in, valid UTF-8 out).
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  /// `align`, when given, holds the original byte range of every byte of text and is kept in step.
  virtual void normalize(std::string& text, std::vector<detail::Offsets>* align) const = 0;
  void normalize(std::string& text) const { normalize(text, nullptr); }
};

namespace detail {

/// Rust's char::is_whitespace (Unicode White_Space), used by the Strip components.
inline bool is_unicode_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

/// A tokenizer.json pattern: {"String": "..."} (literal) or {"Regex": "..."}.
class Pattern {
 public:
  Pattern(const nlohmann::json& j, const std::string& where) {
    MECHLENS_CHECK(j.is_object() && j.size() == 1, ConfigError,
                   "{}: a pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", where, io::json_excerpt(j));
    if (j.contains("String")) {
      literal_ = io::json_required<std::string>(j, "String", where);
    } else if (j.contains("Regex")) {
      regex_ = std::make_unique<Regex>(io::json_required<std::string>(j, "Regex", where), where);
    } else {
      mechlens::detail::raise<ConfigError>("{}: pattern kind '{}' is unknown (expected String or Regex)", where,
                                 j.begin().key());
    }
  }

  /// Byte ranges of every match, left to right, non-overlapping.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view s) const {
    if (regex_) return regex_->find_all(s);
    std::vector<std::pair<std::size_t, std::size_t>> out;
    if (literal_.empty()) return out;  // HF: an empty literal never matches
    std::size_t pos = 0;
    while ((pos = s.find(literal_, pos)) != std::string_view::npos) {
      out.emplace_back(pos, pos + literal_.size());
      pos += literal_.size();
    }
    return out;
  }

  /// Every match replaced by `content` (alignment kept when given).
  void replace(std::string& s, std::vector<Offsets>* align, std::string_view content) const {
    replace_ranges(s, align, regex_ ? regex_->find_all(s) : find_literal(s, literal_), content);
  }
  /// Every match replaced by `content`.
  std::string replace(std::string_view s, std::string_view content) const {
    std::string out(s);
    replace(out, nullptr, content);
    return out;
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

}  // namespace detail

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& text, std::vector<detail::Offsets>* align) const override {
    for (const auto& p : parts_) p->normalize(text, align);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

/// Prepends a string to every non-empty piece (SentencePiece's dummy prefix "▁").
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void normalize(std::string& text, std::vector<detail::Offsets>* align) const override {
    detail::prepend_aligned(text, align, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const nlohmann::json& pattern, std::string content, const std::string& where)
      : pattern_(pattern, where), content_(std::move(content)) {}
  void normalize(std::string& text, std::vector<detail::Offsets>* align) const override {
    pattern_.replace(text, align, content_);
  }

 private:
  detail::Pattern pattern_;
  std::string content_;
};

/// Removes leading and/or trailing Unicode whitespace.
class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text, std::vector<detail::Offsets>* align) const override {
    std::size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end && detail::is_unicode_white_space(detail::utf8_decode(text, begin))) {
        begin += detail::utf8_char_length(static_cast<unsigned char>(text[begin]));
      }
    }
    if (right_) {
      while (end > begin) {
        std::size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        if (!detail::is_unicode_white_space(detail::utf8_decode(text, start))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
    if (align) *align = std::vector<detail::Offsets>(align->begin() + begin, align->begin() + end);
  }

 private:
  bool left_, right_;
};

/// Builds the normalizer described by tokenizer.json's "normalizer" object; `where` names the
/// file for error messages. Returns nullptr for JSON null.
inline std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  MECHLENS_CHECK(j.is_object(), FormatError, "{}: normalizer must be an object or null, got {}", where,
                 j.type_name());
  const auto type = io::json_required<std::string>(j, "type", where + ": normalizer");
  const std::string here = fmt::format("{}: normalizer {}", where, type);
  if (type == "Sequence") {
    MECHLENS_CHECK(j.contains("normalizers") && j.at("normalizers").is_array(), FormatError,
                   "{}: 'normalizers' must be an array", here);
    const auto& list = j.at("normalizers");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& item : list) parts.push_back(make_normalizer(item, where));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(io::json_required<std::string>(j, "prepend", here));
  if (type == "Replace") {
    MECHLENS_CHECK(j.contains("pattern"), ConfigError, "{}: required field 'pattern' is missing", here);
    return std::make_unique<ReplaceNormalizer>(j.at("pattern"), io::json_required<std::string>(j, "content", here),
                                               here);
  }
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(io::json_optional<bool>(j, "strip_left", true, here),
                                             io::json_optional<bool>(j, "strip_right", true, here));
  }
  mechlens::detail::raise<ConfigError>(
      "{}: normalizer type '{}' is not supported by mechlens (supported: Sequence, Prepend, Replace, Strip)", where,
      type);
}

}  // namespace mechlens::tokenizer
