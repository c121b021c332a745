#pragma once
/// \file
/// tokenizer.json pre-tokenizers (the "pre_tokenizer" field): they cut each normalized piece into
/// the words the BPE model sees. Supported: Sequence, Split (string or regex pattern, every
/// behaviour, invert), ByteLevel, Metaspace, Digits. The cutting rules follow HF `tokenizers`
/// (tokenizers/src/tokenizer/normalizer.rs, pre_tokenizers/*.rs) case by case.

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/tokenizer/detail/byte_level.hpp"
#include "mechlens/tokenizer/detail/regex.hpp"
#include "mechlens/tokenizer/normalizers.hpp"

namespace mechlens::tokenizer {

/// One piece of text on its way to the model. `at_start` is true when the piece begins at the
/// first byte of the input (Metaspace's prepend_scheme "first" needs it). `align` is empty unless
/// offsets are wanted; then it holds the original byte range of every byte of text.
struct PreToken {
  std::string text;
  bool at_start = false;
  std::vector<detail::Offsets> align;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Replaces every piece by the pieces it is cut into; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<PreToken>& pieces) const = 0;
};

/// How a Split keeps the matches (HF's SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

namespace detail {

using Range = std::pair<std::size_t, std::size_t>;

/// Cuts [0, n) at the given matches and applies `behavior`, exactly as NormalizedString::split in
/// HF `tokenizers`: returns the ranges to keep, empty ones removed.
inline std::vector<Range> split_ranges(std::size_t n, const std::vector<Range>& matches, SplitBehavior behavior,
                                       bool invert) {
  // (range, is_match) covering [0, n)
  std::vector<std::pair<Range, bool>> parts;
  if (n == 0) {
    parts.push_back({{0, 0}, false});
  } else {
    std::size_t prev = 0;
    for (const auto& m : matches) {
      if (prev != m.first) parts.push_back({{prev, m.first}, false});
      parts.push_back({m, true});
      prev = m.second;
    }
    if (prev != n) parts.push_back({{prev, n}, false});
  }
  if (invert) {
    for (auto& p : parts) p.second = !p.second;
  }
  std::vector<std::pair<Range, bool>> kept;  // (range, remove)
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto& p : parts) kept.push_back({p.first, false});
      break;
    case SplitBehavior::kRemoved:
      kept = parts;
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (auto& [r, is_match] : parts) {
        if (is_match && !previous_match && !kept.empty()) {
          kept.back().first.second = r.second;
        } else {
          kept.push_back({r, false});
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        const auto& [r, is_match] = *it;
        if (is_match && !previous_match && !kept.empty()) {
          kept.back().first.first = r.first;
        } else {
          kept.push_back({r, false});
        }
        previous_match = is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (auto& [r, is_match] : parts) {
        if (is_match == previous_match && !kept.empty()) {
          kept.back().first.second = r.second;
        } else {
          kept.push_back({r, false});
        }
        previous_match = is_match;
      }
      break;
    }
  }
  std::vector<Range> out;
  for (const auto& [r, remove] : kept) {
    if (!remove && r.first != r.second) out.push_back(r);
  }
  return out;
}

/// Applies `cut` (text -> ranges) to every piece, keeping piece order.
template <class Cut>
void split_each(std::vector<PreToken>& pieces, Cut&& cut) {
  std::vector<PreToken> out;
  out.reserve(pieces.size() * 2);
  for (auto& p : pieces) {
    for (const auto& [b, e] : cut(p.text)) {
      PreToken sub{p.text.substr(b, e - b), p.at_start && b == 0, {}};
      if (!p.align.empty()) sub.align.assign(p.align.begin() + b, p.align.begin() + e);
      out.push_back(std::move(sub));
    }
  }
  pieces = std::move(out);
}

inline SplitBehavior parse_split_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  mechlens::detail::raise<ConfigError>(
      "{}: split behavior '{}' is unknown (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
      "Contiguous)",
      where, s);
}

// GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is true.
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace detail

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(const nlohmann::json& pattern, SplitBehavior behavior, bool invert, const std::string& where)
      : pattern_(pattern, where), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    detail::split_each(pieces, [&](const std::string& s) {
      return detail::split_ranges(s.size(), pattern_.find_all(s), behavior_, invert_);
    });
  }

 private:
  detail::Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

/// Optionally adds a leading space and cuts with GPT-2's regex, then writes every byte as its
/// stand-in character (detail/byte_level.hpp).
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<detail::Regex>(detail::kGpt2Pattern, where);
  }
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& p : pieces) {
        if (!p.text.empty() && p.text[0] != ' ') detail::prepend_aligned(p.text, p.align.empty() ? nullptr : &p.align, " ");
      }
    }
    if (regex_) {
      detail::split_each(pieces, [&](const std::string& s) {
        return detail::split_ranges(s.size(), regex_->find_all(s), SplitBehavior::kIsolated, false);
      });
    }
    for (auto& p : pieces) {
      if (!p.align.empty()) {
        std::vector<detail::Offsets> align;
        align.reserve(p.text.size() * 2);
        const auto& table = detail::byte_level_tables().byte_to_utf8;
        for (std::size_t i = 0; i < p.text.size(); ++i) {
          align.insert(align.end(), table[static_cast<unsigned char>(p.text[i])].size(), p.align[i]);
        }
        p.align = std::move(align);
      }
      p.text = detail::bytes_to_byte_level(p.text);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<detail::Regex> regex_;
};

/// SentencePiece-style: spaces become the replacement character ("▁"), which is also prepended
/// (always, only on the piece that starts the input, or never) and optionally cut before.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    for (auto& p : pieces) {
      std::string s = std::move(p.text);
      std::vector<detail::Offsets>* align = p.align.empty() ? nullptr : &p.align;
      detail::replace_ranges(s, align, detail::find_literal(s, " "), replacement_);
      const bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && p.at_start))) {
        detail::prepend_aligned(s, align, replacement_);
      }
      if (!split_) {
        if (!s.empty()) out.push_back({std::move(s), p.at_start, std::move(p.align)});
        continue;
      }
      std::vector<detail::Range> matches;
      for (std::size_t pos = s.find(replacement_); pos != std::string::npos;
           pos = s.find(replacement_, pos + replacement_.size())) {
        matches.emplace_back(pos, pos + replacement_.size());
      }
      for (const auto& [b, e] : detail::split_ranges(s.size(), matches, SplitBehavior::kMergedWithNext, false)) {
        PreToken sub{s.substr(b, e - b), p.at_start && b == 0, {}};
        if (align) sub.align.assign(align->begin() + b, align->begin() + e);
        out.push_back(std::move(sub));
      }
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

/// Cuts digits (Unicode category N) from the rest, one by one or in runs.
class DigitsPreTokenizer : public PreTokenizer {
 public:
  DigitsPreTokenizer(bool individual, const std::string& where)
      : regex_(individual ? R"(\p{N})" : R"(\p{N}+)", where), individual_(individual) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    detail::split_each(pieces, [&](const std::string& s) {
      return detail::split_ranges(s.size(), regex_.find_all(s),
                                  individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
    });
  }

 private:
  detail::Regex regex_;
  bool individual_;
};

/// Builds the pre-tokenizer described by tokenizer.json's "pre_tokenizer"; nullptr for null.
inline std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  MECHLENS_CHECK(j.is_object(), FormatError, "{}: pre_tokenizer must be an object or null, got {}", where,
                 j.type_name());
  const auto type = io::json_required<std::string>(j, "type", where + ": pre_tokenizer");
  const std::string here = fmt::format("{}: pre_tokenizer {}", where, type);
  if (type == "Sequence") {
    MECHLENS_CHECK(j.contains("pretokenizers") && j.at("pretokenizers").is_array(), FormatError,
                   "{}: 'pretokenizers' must be an array", here);
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const auto& item : j.at("pretokenizers")) parts.push_back(make_pre_tokenizer(item, where));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Split") {
    MECHLENS_CHECK(j.contains("pattern"), ConfigError, "{}: required field 'pattern' is missing", here);
    return std::make_unique<SplitPreTokenizer>(
        j.at("pattern"), detail::parse_split_behavior(io::json_required<std::string>(j, "behavior", here), here),
        io::json_optional<bool>(j, "invert", false, here), here);
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(io::json_optional<bool>(j, "add_prefix_space", true, here),
                                                   io::json_optional<bool>(j, "use_regex", true, here), here);
  }
  if (type == "Metaspace") {
    auto replacement = io::json_optional<std::string>(j, "replacement", "\xE2\x96\x81", here);
    MECHLENS_CHECK(detail::is_valid_utf8(replacement) && !replacement.empty() &&
                       detail::utf8_char_length(static_cast<unsigned char>(replacement[0])) == replacement.size(),
                   ConfigError, "{}: 'replacement' must be one character, got '{}'", here, replacement);
    MetaspacePreTokenizer::Prepend prepend = MetaspacePreTokenizer::Prepend::kAlways;
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
      const auto scheme = io::json_required<std::string>(j, "prepend_scheme", here);
      if (scheme == "always") {
        prepend = MetaspacePreTokenizer::Prepend::kAlways;
      } else if (scheme == "first") {
        prepend = MetaspacePreTokenizer::Prepend::kFirst;
      } else if (scheme == "never") {
        prepend = MetaspacePreTokenizer::Prepend::kNever;
      } else {
        mechlens::detail::raise<ConfigError>("{}: prepend_scheme '{}' is unknown (expected always, first or never)",
                                             here, scheme);
      }
    } else if (!io::json_optional<bool>(j, "add_prefix_space", true, here)) {
      prepend = MetaspacePreTokenizer::Prepend::kNever;  // tokenizer.json files older than prepend_scheme
    }
    return std::make_unique<MetaspacePreTokenizer>(replacement, prepend, io::json_optional<bool>(j, "split", true, here));
  }
  if (type == "Digits") {
    return std::make_unique<DigitsPreTokenizer>(io::json_optional<bool>(j, "individual_digits", false, here), here);
  }
  mechlens::detail::raise<ConfigError>(
      "{}: pre_tokenizer type '{}' is not supported by mechlens (supported: Sequence, Split, ByteLevel, Metaspace, "
      "Digits)",
      where, type);
}

}  // namespace mechlens::tokenizer
