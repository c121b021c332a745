#pragma once
/// \file
/// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): vocabulary, ranked merges,
/// byte fallback, unknown-token fusing, ignore_merges, continuing-subword prefix and end-of-word
/// suffix. Merging follows HF `tokenizers` (models/bpe/word.rs): the lowest-ranked adjacent pair
/// is merged first, ties going to the leftmost pair.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/tokenizer/detail/flat_map.hpp"
#include "mechlens/tokenizer/detail/huge_pages.hpp"
#include "mechlens/tokenizer/detail/json_scan.hpp"
#include "mechlens/tokenizer/detail/utf8.hpp"

namespace mechlens::tokenizer {

/// tokenizer.json's "vocab" and "merges" read straight from the text (detail/json_scan.hpp), for
/// BpeModel::from_tables: the vocabulary, and every merge, in rank order, as the ids of its two
/// tokens.
struct BpeTables {
  detail::StringIdMap vocab;
  int64_t max_id = -1;
  std::vector<std::pair<int32_t, int32_t>, detail::HugePageAllocator<std::pair<int32_t, int32_t>>> merges;

  /// Reads the "vocab" object at r. False when it is not a plain {"token": id, ...} object
  /// (json_scan::read_vocab) or names a token twice (nlohmann would keep the last: from_json's
  /// business).
  bool read_vocab(detail::json_scan::Reader& r) {
    const bool read = detail::json_scan::read_vocab(r, [&](std::string_view token, uint32_t id) {
      max_id = std::max<int64_t>(max_id, id);
      return vocab.append(token, static_cast<int32_t>(id));
    });
    return read && vocab.index();
  }

  /// Reads the "merges" array at r, once the vocabulary is read. False when it is not an array of
  /// "a b" / ["a", "b"] (json_scan::read_merges) or a merge names a token not in the vocabulary.
  bool read_merges(detail::json_scan::Reader& r) {
    // Room for as many merges as the rest of the text could hold (each takes at least 6 bytes:
    // "a b",): only the pages written to are ever touched, and the vector never moves.
    merges.reserve(std::min<std::size_t>(r.remaining() / 6 + 1, std::size_t{1} << 22));
    // The tokens are looked up a group at a time (StringIdMap::find_many); the few written with
    // escapes are copied, since the reader's views of them do not last.
    constexpr std::size_t kGroup = 64;
    std::vector<std::string_view> keys;
    keys.reserve(2 * kGroup);
    std::deque<std::string> copies;
    int32_t ids[2 * kGroup];
    const auto flush = [&] {
      vocab.find_many(keys.data(), keys.size(), ids);
      for (std::size_t k = 0; k < keys.size(); k += 2) {
        if (ids[k] < 0 || ids[k + 1] < 0) return false;
        merges.emplace_back(ids[k], ids[k + 1]);
      }
      keys.clear();
      copies.clear();
      return true;
    };
    const bool read = detail::json_scan::read_merges(r, [&](std::string_view a, std::string_view b, bool in_text) {
      if (!in_text) {
        a = copies.emplace_back(a);
        b = copies.emplace_back(b);
      }
      keys.push_back(a);
      keys.push_back(b);
      return keys.size() < 2 * kGroup || flush();
    });
    return read && flush();
  }
};

class BpeModel {
 public:
  /// Builds the model from tokenizer.json's "model" object; `where` names the file in errors.
  static BpeModel from_json(const nlohmann::json& j, const std::string& where) {
    const std::string here = where + ": model";
    BpeModel m = with_options(j, where, here);

    MECHLENS_CHECK(j.contains("vocab") && j.at("vocab").is_object(), FormatError,
                   "{}: 'vocab' must be an object of token -> id", here);
    const auto& vocab = j.at("vocab");
    m.vocab_.reserve(vocab.size());
    int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      MECHLENS_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                         it.value().get<int64_t>() < (int64_t{1} << 31),
                     FormatError, "{}: vocab entry '{}' has id {}, expected a non-negative 32-bit integer", here,
                     detail::excerpt(it.key()), io::json_excerpt(it.value()));
      const int64_t id = it.value().get<int64_t>();
      MECHLENS_CHECK(m.vocab_.arena_bytes() + 8 + it.key().size() <= detail::StringIdMap::kMaxArenaBytes, FormatError,
                     "{}: the vocabulary holds more than 4 GiB of tokens", here);
      m.vocab_.insert(it.key(), static_cast<int32_t>(id));  // JSON object keys are unique
      max_id = std::max(max_id, id);
    }
    // In key order, as nlohmann iterates the object (and as the keys were inserted).
    m.id_entry_.assign(static_cast<std::size_t>(max_id + 1), 0);
    m.vocab_.for_each([&](std::string_view token, int32_t id, uint32_t entry) {
      MECHLENS_CHECK(m.id_entry_[id] == 0, FormatError, "{}: id {} is given to two tokens ('{}' and '{}')", here,
                     id, detail::excerpt(m.vocab_.key_at(m.id_entry_[id])), detail::excerpt(token));
      m.id_entry_[id] = entry;
    });

    m.read_special_ids(j, here);

    MECHLENS_CHECK(j.contains("merges") && j.at("merges").is_array(), FormatError,
                   "{}: 'merges' must be an array", here);
    const auto& merges = j.at("merges");
    std::vector<std::pair<int32_t, int32_t>> pairs;
    std::vector<int32_t> merged_ids;
    pairs.reserve(merges.size());
    merged_ids.reserve(merges.size());
    int32_t rank = 0;
    std::string merged;
    for (const auto& item : merges) {
      std::string_view a, b;
      if (item.is_string()) {  // "a b"
        const std::string_view s = item.get_ref<const std::string&>();
        const auto space = s.find(' ');
        MECHLENS_CHECK(space != std::string_view::npos && s.find(' ', space + 1) == std::string_view::npos,
                       FormatError, "{}: merge {} is '{}', expected two tokens separated by one space", here, rank,
                       detail::excerpt(s));
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string()) {
        a = item[0].get_ref<const std::string&>();
        b = item[1].get_ref<const std::string&>();
      } else {
        mechlens::detail::raise<FormatError>("{}: merge {} is {}, expected \"a b\" or [\"a\", \"b\"]", here, rank,
                                             io::json_excerpt(item));
      }
      const int32_t ia = m.vocab_.find(a), ib = m.vocab_.find(b);
      MECHLENS_CHECK(ia >= 0 && ib >= 0, FormatError,
                     "{}: merge {} ('{}' + '{}') uses a token that is not in the vocabulary", here, rank,
                     detail::excerpt(a), detail::excerpt(b));
      merged.assign(a);
      merged.append(m.prefix_.empty() || b.compare(0, m.prefix_.size(), m.prefix_) != 0 ? b : b.substr(m.prefix_.size()));
      const int32_t im = m.vocab_.find(merged);
      MECHLENS_CHECK(im >= 0, FormatError, "{}: merge {} ('{}' + '{}') makes '{}', which is not in the vocabulary",
                     here, rank, detail::excerpt(a), detail::excerpt(b), detail::excerpt(merged));
      pairs.emplace_back(ia, ib);
      merged_ids.push_back(im);
      ++rank;
    }
    m.merges_.insert_ranked(pairs.data(), merged_ids.data(), pairs.size());
    return m;
  }

  /// The same model as from_json, built from tokenizer.json's "model" object without its
  /// "vocab" and "merges" (`j`, as the rest of the file was parsed) and those two read from the
  /// text into `tables` (Tokenizer::from_json_text). nullopt when the tables do not make a valid
  /// model (a token id given twice, a merge of or into a token that is not in the vocabulary,
  /// ids far sparser than the vocabulary): the caller then takes from_json, whose error says what
  /// is wrong. Errors in the other fields of `j` are from_json's own.
  static std::optional<BpeModel> from_tables(const nlohmann::json& j, BpeTables tables, const std::string& where) {
    const std::string here = where + ": model";
    BpeModel m = with_options(j, where, here);
    m.vocab_ = std::move(tables.vocab);
    const std::size_t count = m.vocab_.size();
    // from_json allocates a string per id up to the largest; leave absurd ids to it.
    if (tables.max_id >= static_cast<int64_t>(2 * count + 65536)) return std::nullopt;
    m.id_entry_.assign(static_cast<std::size_t>(tables.max_id + 1), 0);
    bool distinct = true;
    m.vocab_.for_each([&](std::string_view, int32_t id, uint32_t entry) {
      if (m.id_entry_[id] != 0) distinct = false;
      m.id_entry_[id] = entry;
    });
    if (!distinct) return std::nullopt;
    m.read_special_ids(j, here);

    // Each merge's result, a group at a time (StringIdMap::find_many).
    const std::size_t n = tables.merges.size();
    std::vector<int32_t, detail::HugePageAllocator<int32_t>> merged_ids(n);
    constexpr std::size_t kGroup = 64;
    std::string joined;
    std::size_t ends[kGroup];
    std::string_view keys[kGroup];
    for (std::size_t base = 0; base < n; base += kGroup) {
      const std::size_t g = std::min(kGroup, n - base);
      joined.clear();
      for (std::size_t k = 0; k < g; ++k) {
        const auto [ia, ib] = tables.merges[base + k];
        const std::string_view b = m.vocab_.key_at(m.id_entry_[ib]);
        joined.append(m.vocab_.key_at(m.id_entry_[ia]));
        joined.append(m.prefix_.empty() || b.compare(0, m.prefix_.size(), m.prefix_) != 0 ? b : b.substr(m.prefix_.size()));
        ends[k] = joined.size();
      }
      for (std::size_t k = 0; k < g; ++k) {
        const std::size_t begin = k == 0 ? 0 : ends[k - 1];
        keys[k] = std::string_view(joined).substr(begin, ends[k] - begin);
      }
      m.vocab_.find_many(keys, g, &merged_ids[base]);
      for (std::size_t k = 0; k < g; ++k) {
        if (merged_ids[base + k] < 0) return std::nullopt;
      }
    }
    m.merges_.insert_ranked(tables.merges.data(), merged_ids.data(), n);
    return m;
  }

  /// Appends the ids of one pre-tokenized word; with `lengths`, also how many bytes of the word
  /// each token covers.
  void tokenize(std::string_view word, std::vector<int64_t>& out, std::vector<std::size_t>* lengths = nullptr) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      const int32_t id = vocab_.find(word);
      if (id >= 0) {
        out.push_back(id);
        if (lengths) lengths->push_back(word.size());
        return;
      }
    }
    const bool cacheable = lengths == nullptr && word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto it = cache_->map.find(std::string(word));
      if (it != cache_->map.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<Symbol> symbols = initial_symbols(word);
    merge_all(symbols);
    const std::size_t first = out.size();
    for (const auto& s : symbols) {
      if (s.len == 0) continue;
      out.push_back(s.id);
      if (lengths) lengths->push_back(s.len);
    }
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      // NOTE: like HF's cache, full means "stop adding", not "evict": prose stays warm.
      if (cache_->map.size() < kCacheCapacity) {
        cache_->map.emplace(std::string(word), std::vector<int32_t>(out.begin() + first, out.end()));
      }
    }
  }

  std::optional<int64_t> token_to_id(std::string_view token) const {
    const int32_t id = vocab_.find(token);
    if (id < 0) return std::nullopt;
    return id;
  }
  /// The token with this id; nullopt when the model has none.
  std::optional<std::string_view> id_to_token(int64_t id) const {
    if (id < 0 || id >= static_cast<int64_t>(id_entry_.size()) || id_entry_[id] == 0) return std::nullopt;
    return vocab_.key_at(id_entry_[id]);
  }
  std::size_t vocab_size() const { return vocab_.size(); }
  /// One past the largest id in the vocabulary.
  int64_t id_end() const { return static_cast<int64_t>(id_entry_.size()); }
  std::size_t merge_count() const { return merges_.size(); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  using MergeInfo = detail::PairMap::Value;
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // indices into the symbol array, -1 at the ends
    std::size_t len;     // bytes of the word it covers; 0 once merged into its left neighbour
  };
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  static constexpr std::size_t kCacheCapacity = 10000;
  static constexpr std::size_t kCacheMaxWordBytes = 256;

  // type, dropout and the flags of the "model" object: the first checks of from_json.
  static BpeModel with_options(const nlohmann::json& j, const std::string& where, const std::string& here) {
    MECHLENS_CHECK(j.is_object(), FormatError, "{} must be an object, got {}", here, j.type_name());
    const auto type = io::json_optional<std::string>(j, "type", "BPE", here);
    MECHLENS_CHECK(type == "BPE", ConfigError,
                   "{}: model type '{}' is not supported by mechlens (supported: BPE)", where, type);
    MECHLENS_CHECK(io::json_optional<double>(j, "dropout", 0.0, here) == 0.0, ConfigError,
                   "{}: BPE dropout is not supported (tokenization would be random)", here);
    BpeModel m;
    m.byte_fallback_ = io::json_optional<bool>(j, "byte_fallback", false, here);
    m.fuse_unk_ = io::json_optional<bool>(j, "fuse_unk", false, here);
    m.ignore_merges_ = io::json_optional<bool>(j, "ignore_merges", false, here);
    m.prefix_ = io::json_optional<std::string>(j, "continuing_subword_prefix", "", here);
    m.suffix_ = io::json_optional<std::string>(j, "end_of_word_suffix", "", here);
    return m;
  }

  // unk_token and the byte-fallback tokens, once the vocabulary is read.
  void read_special_ids(const nlohmann::json& j, const std::string& here) {
    if (j.contains("unk_token") && !j.at("unk_token").is_null()) {
      const auto unk = io::json_required<std::string>(j, "unk_token", here);
      unk_id_ = vocab_.find(unk);
      MECHLENS_CHECK(unk_id_ >= 0, FormatError, "{}: unk_token '{}' is not in the vocabulary", here, unk);
    }
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        byte_ids_[b] = vocab_.find(fmt::format("<0x{:02X}>", b));
      }
    }
  }

  std::vector<Symbol> initial_symbols(std::string_view w) const {
    std::vector<Symbol> symbols;
    symbols.reserve(w.size());
    const auto add = [&](int32_t id, std::size_t len) {
      const int32_t index = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, index - 1, -1, len});
      if (index > 0) symbols[index - 1].next = index;
    };
    bool unk = false;  // a pending unknown token of unk_len bytes
    std::size_t unk_len = 0;
    std::string key;
    const bool plain = prefix_.empty() && suffix_.empty();
    for (std::size_t i = 0; i < w.size();) {
      const std::size_t n = detail::utf8_char_length(static_cast<unsigned char>(w[i]));
      const bool is_first = i == 0, is_last = i + n >= w.size();
      std::string_view piece = w.substr(i, n);
      if (!plain) {
        key.clear();
        if (!is_first) key += prefix_;
        key.append(piece);
        if (is_last) key += suffix_;
        piece = key;
      }
      const int32_t id = vocab_.find(piece);
      if (id >= 0) {
        if (unk) {
          add(unk_id_, unk_len);
          unk = false;
        }
        add(id, n);
        i += n;
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char c : piece) all = all && byte_ids_[c] >= 0;
        if (all) {
          // NOTE: HF does not flush a pending unknown token first; neither do we.
          for (unsigned char c : piece) add(byte_ids_[c], 1);
          i += n;
          continue;
        }
      }
      MECHLENS_CHECK(unk_id_ >= 0, ArgumentError,
                     "BPE: character '{}' is not in the vocabulary and the model has no unk_token or byte fallback",
                     detail::excerpt(w.substr(i, n)));
      if (unk && fuse_unk_) {
        unk_len += n;
      } else {
        if (unk) add(unk_id_, unk_len);
        unk = true;
        unk_len = n;
      }
      i += n;
    }
    if (unk) add(unk_id_, unk_len);
    return symbols;
  }

  void merge_all(std::vector<Symbol>& symbols) const {
    struct Candidate {
      int32_t rank;
      int32_t pos;
      int32_t new_id;
    };
    // Lowest rank first; among equal ranks the leftmost position.
    const auto later = [](const Candidate& x, const Candidate& y) {
      return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
    const auto lookup = [&](int32_t a, int32_t b) -> const MergeInfo* { return merges_.find(a, b); };
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      if (const MergeInfo* m = lookup(symbols[i].id, symbols[i + 1].id)) {
        queue.push({m->rank, static_cast<int32_t>(i), m->id});
      }
    }
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& cur = symbols[top.pos];
      if (cur.len == 0 || cur.next < 0) continue;
      const int32_t next_pos = cur.next;
      const Symbol right = symbols[next_pos];
      const MergeInfo* m = lookup(cur.id, right.id);
      if (m == nullptr || m->id != top.new_id) continue;  // stale entry
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (cur.prev >= 0) {
        if (const MergeInfo* p = lookup(symbols[cur.prev].id, cur.id)) queue.push({p->rank, cur.prev, p->id});
      }
      if (cur.next >= 0) {
        if (const MergeInfo* n = lookup(cur.id, symbols[cur.next].id)) queue.push({n->rank, top.pos, n->id});
      }
    }
  }

  detail::StringIdMap vocab_;
  std::vector<uint32_t> id_entry_;  // per id, its entry in vocab_ (StringIdMap::key_at); 0 for none
  detail::PairMap merges_;
  int32_t byte_ids_[256] = {};
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;
  // Word -> ids cache shared by copies of the model (it only ever holds correct results).
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace mechlens::tokenizer
