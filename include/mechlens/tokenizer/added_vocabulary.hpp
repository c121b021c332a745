#pragma once
/// \file
/// Added tokens (tokenizer.json's "added_tokens"): special tokens such as "<|eot_id|>" or "<s>"
/// and any other whole strings that must never be cut by BPE. They are found in the text before
/// normalization (or after it, for tokens marked "normalized") with HF's rules: leftmost match,
/// longest among those that start there, and the single_word / lstrip / rstrip options.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/tokenizer/detail/regex.hpp"
#include "mechlens/tokenizer/detail/utf8.hpp"
#include "mechlens/tokenizer/normalizers.hpp"

namespace mechlens::tokenizer {

struct AddedToken {
  int64_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

/// A stretch of text: either an added token (`id >= 0`) or text still to tokenize.
struct Segment {
  std::string_view text;
  int64_t id = -1;
  std::size_t offset = 0;  // byte offset of text within the string that was split
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;

  /// Reads tokenizer.json's "added_tokens" array; `normalizer` (may be null) is applied to the
  /// content of tokens marked "normalized", as HF does before matching them.
  AddedVocabulary(const nlohmann::json& list, const Normalizer* normalizer, const std::string& where) {
    if (list.is_null()) return;
    MECHLENS_CHECK(list.is_array(), FormatError, "{}: 'added_tokens' must be an array, got {}", where,
                   list.type_name());
    for (const auto& j : list) {
      const std::string here = where + ": added_tokens entry";
      AddedToken t;
      t.id = io::json_required<int64_t>(j, "id", here);
      t.content = io::json_required<std::string>(j, "content", here);
      MECHLENS_CHECK(t.id >= 0, FormatError, "{} '{}' has id {}, expected >= 0", here, t.content, t.id);
      MECHLENS_CHECK(!t.content.empty() && detail::is_valid_utf8(t.content), FormatError,
                     "{} with id {} has empty or invalid UTF-8 content", here, t.id);
      t.single_word = io::json_optional<bool>(j, "single_word", false, here);
      t.lstrip = io::json_optional<bool>(j, "lstrip", false, here);
      t.rstrip = io::json_optional<bool>(j, "rstrip", false, here);
      t.normalized = io::json_optional<bool>(j, "normalized", false, here);
      t.special = io::json_optional<bool>(j, "special", false, here);
      add(std::move(t), normalizer);
    }
  }

  void add(AddedToken t, const Normalizer* normalizer) {
    const std::size_t index = tokens_.size();
    by_id_[t.id] = index;
    by_content_[t.content] = index;
    std::string pattern = t.content;
    if (t.normalized && normalizer != nullptr) normalizer->normalize(pattern);
    (t.normalized ? normalized_ : raw_).add(pattern, index);
    tokens_.push_back(std::move(t));
  }

  bool empty() const { return tokens_.empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find_id(int64_t id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
  }
  const AddedToken* find_content(std::string_view content) const {
    auto it = by_content_.find(std::string(content));
    return it == by_content_.end() ? nullptr : &tokens_[it->second];
  }
  bool has_normalized_tokens() const { return !normalized_.empty(); }

  /// Splits text on the added tokens that are matched before (normalized = false) or after
  /// (normalized = true) normalization.
  std::vector<Segment> split(std::string_view text, bool normalized) const {
    const Matcher& m = normalized ? normalized_ : raw_;
    std::vector<Segment> out;
    if (text.empty()) return out;
    if (m.empty()) {
      out.push_back({text, -1, 0});
      return out;
    }
    std::size_t done = 0;  // end of the last emitted segment
    std::size_t pos = 0;   // where the search for the next match resumes
    while (pos < text.size()) {
      const auto hit = m.find(text, pos);
      if (!hit) break;
      const AddedToken& t = tokens_[hit->index];
      std::size_t start = hit->start, stop = hit->start + hit->length;
      pos = stop;
      if (t.single_word) {
        const bool left_ok = start == 0 || !ends_with_word(text.substr(0, start));
        const bool right_ok = stop == text.size() || !starts_with_word(text.substr(stop));
        if (!left_ok || !right_ok) continue;
      }
      if (t.lstrip) start = std::max(done, start - trailing_space_bytes(text.substr(0, start)));
      if (t.rstrip) stop += leading_space_bytes(text.substr(stop));
      if (done < start) out.push_back({text.substr(done, start - done), -1, done});
      out.push_back({text.substr(start, stop - start), t.id, start});
      done = stop;
      pos = std::max(pos, stop);
    }
    if (done < text.size()) out.push_back({text.substr(done), -1, done});
    return out;
  }

 private:
  struct Match {
    std::size_t start, length, index;
  };

  /// Leftmost-longest literal matching: candidates are grouped by first byte, which keeps the
  /// scan cheap for the usual special tokens (they share a handful of first bytes).
  class Matcher {
   public:
    void add(const std::string& pattern, std::size_t index) {
      if (pattern.empty()) return;
      auto& group = by_first_[static_cast<unsigned char>(pattern[0])];
      group.push_back({pattern, index});
      // Longest first, so the first hit at a position is the longest one.
      std::stable_sort(group.begin(), group.end(),
                       [](const Entry& a, const Entry& b) { return a.pattern.size() > b.pattern.size(); });
      ++count_;
    }
    bool empty() const { return count_ == 0; }
    std::optional<Match> find(std::string_view text, std::size_t from) const {
      for (std::size_t i = from; i < text.size(); ++i) {
        const auto& group = by_first_[static_cast<unsigned char>(text[i])];
        for (const auto& e : group) {
          if (text.compare(i, e.pattern.size(), e.pattern) == 0) return Match{i, e.pattern.size(), e.index};
        }
      }
      return std::nullopt;
    }

   private:
    struct Entry {
      std::string pattern;
      std::size_t index;
    };
    std::vector<Entry> by_first_[256];
    std::size_t count_ = 0;
  };

  static const detail::Regex& word_start() {
    static const detail::Regex r(R"(^\w)", "added token single_word check");
    return r;
  }
  static const detail::Regex& word_end() {
    static const detail::Regex r(R"(\w$)", "added token single_word check");
    return r;
  }
  static bool starts_with_word(std::string_view s) { return !word_start().find_all(s).empty(); }
  static bool ends_with_word(std::string_view s) { return !word_end().find_all(s).empty(); }
  static std::size_t leading_space_bytes(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size() && detail::is_unicode_white_space(detail::utf8_decode(s, i))) {
      i += detail::utf8_char_length(static_cast<unsigned char>(s[i]));
    }
    return i;
  }
  static std::size_t trailing_space_bytes(std::string_view s) {
    std::size_t end = s.size();
    while (end > 0) {
      std::size_t start = end - 1;
      while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      if (!detail::is_unicode_white_space(detail::utf8_decode(s, start))) break;
      end = start;
    }
    return s.size() - end;
  }

  std::vector<AddedToken> tokens_;
  std::unordered_map<int64_t, std::size_t> by_id_;
  std::unordered_map<std::string, std::size_t> by_content_;
  Matcher raw_, normalized_;
};

}  // namespace mechlens::tokenizer
