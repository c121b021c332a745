#pragma once
/// \file
/// Open-addressing hash maps for the BPE vocabulary (string -> id) and merges (id pair -> rank,
/// id). Loading Llama-3 does ~1M lookups into 128k tokens; with std::unordered_map those are
/// cache misses on separate chains, and lookups by string_view would allocate. These store the
/// keys in one arena and probe linearly, in tables kept small: every megabyte a load touches
/// is page faults, as much as a tenth of the load time.

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mechlens/tokenizer/detail/huge_pages.hpp"

namespace mechlens::tokenizer::detail {

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a, then mixed
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return mix64(h ^ s.size());
}

/// string -> int32 id (ids are >= 0). The entries are stored one after the other in one arena
/// (id, length, then the key's bytes) and the table holds 8-byte slots (a hash tag and the entry's
/// place in the arena), which keeps the 128k-token Llama-3 vocabulary in about 4 MB.
///
/// A vocabulary read in one go is append()ed entry by entry and index()ed once, at its final size;
/// insert() adds one entry at a time.
class StringIdMap {
 public:
  /// The arena is addressed with 32-bit offsets.
  static constexpr std::size_t kMaxArenaBytes = std::size_t{0xFFFFFFF0};

  std::size_t size() const { return size_; }
  /// Bytes of keys and headers (8 per entry) stored so far.
  std::size_t arena_bytes() const { return arena_.size(); }
  void reserve(std::size_t n) {
    if (n * 2 > slots_.size()) rehash(capacity_for(n));
  }

  /// Adds key -> id to the arena without indexing it (find does not see it until index()).
  /// False (and nothing added) when the arena would outgrow kMaxArenaBytes.
  bool append(std::string_view key, int32_t id) {
    if (key.size() > kMaxArenaBytes - 8 - arena_.size()) return false;
    const std::size_t at = arena_.size();
    arena_.resize(at + 8 + key.size());
    const uint32_t length = static_cast<uint32_t>(key.size());
    std::memcpy(&arena_[at], &id, 4);
    std::memcpy(&arena_[at + 4], &length, 4);
    std::memcpy(&arena_[at + 8], key.data(), key.size());
    ++appended_;
    return true;
  }
  /// Indexes the entries appended since the last index(), in one table of the final size. False
  /// when a key is there twice (the map is then unusable).
  bool index() {
    reserve(appended_);
    Slot* const slots = slots_.data();
    const std::size_t mask = mask_;
    std::size_t added = 0;
    for (std::size_t offset = indexed_bytes_; offset < arena_.size();) {
      const uint32_t entry = static_cast<uint32_t>(offset + 1);
      const std::string_view key = key_at(entry);
      const uint32_t tag = tag_of(key);
      std::size_t i = tag & mask;
      while (slots[i].entry != 0) {
        if (slots[i].tag == tag && key_at(slots[i].entry) == key) return false;
        i = (i + 1) & mask;
      }
      slots[i] = {tag, entry};
      ++added;
      offset += 8 + key.size();
    }
    size_ += added;
    indexed_bytes_ = arena_.size();
    return true;
  }
  /// Inserts key -> id; returns false (and changes nothing) when the key is already present.
  /// Throws std::length_error when the arena would outgrow kMaxArenaBytes.
  bool insert(std::string_view key, int32_t id) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(capacity_for(size_ + 1));
    const uint32_t tag = tag_of(key);
    std::size_t i = tag & mask_;
    while (slots_[i].entry != 0) {
      if (slots_[i].tag == tag && key_at(slots_[i].entry) == key) return false;
      i = (i + 1) & mask_;
    }
    const std::size_t at = arena_.size();
    if (!append(key, id)) throw std::length_error("StringIdMap: more than 4 GiB of keys");
    slots_[i] = {tag, static_cast<uint32_t>(at + 1)};
    ++size_;
    indexed_bytes_ = arena_.size();
    return true;
  }
  /// The id of key, or -1.
  int32_t find(std::string_view key) const {
    if (size_ == 0) return -1;
    return find(key, tag_of(key));
  }
  /// ids[k] = find(keys[k]) for k < n, faster than one by one: the table and arena reads of a
  /// group of keys are started together (prefetched), so their cache misses overlap.
  void find_many(const std::string_view* keys, std::size_t n, int32_t* ids) const {
    constexpr std::size_t kGroup = 16;
    uint32_t tags[kGroup];
    for (std::size_t base = 0; base < n; base += kGroup) {
      const std::size_t m = n - base < kGroup ? n - base : kGroup;
      if (size_ == 0) {
        for (std::size_t j = 0; j < m; ++j) ids[base + j] = -1;
        continue;
      }
      for (std::size_t j = 0; j < m; ++j) {
        tags[j] = tag_of(keys[base + j]);
        prefetch(&slots_[tags[j] & mask_]);
      }
      for (std::size_t j = 0; j < m; ++j) {
        const Slot& s = slots_[tags[j] & mask_];
        if (s.entry != 0) prefetch(arena_.data() + s.entry - 1);
      }
      for (std::size_t j = 0; j < m; ++j) ids[base + j] = find(keys[base + j], tags[j]);
    }
  }
  /// Calls f(key, id, entry) for every entry, in the order they were added; key_at(entry) gives
  /// the key again later (as long as nothing more is added).
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t offset = 0; offset < arena_.size();) {
      const uint32_t entry = static_cast<uint32_t>(offset + 1);
      const std::string_view key = key_at(entry);
      f(key, id_at(entry), entry);
      offset += 8 + key.size();
    }
  }
  std::string_view key_at(uint32_t entry) const {
    uint32_t length;
    std::memcpy(&length, arena_.data() + entry + 3, 4);
    return std::string_view(arena_.data() + entry + 7, length);
  }

 private:
  struct Slot {
    uint32_t tag = 0;
    uint32_t entry = 0;  // arena offset + 1; 0 when empty
  };
  // The slot a key goes to is its tag's low bits; the tag's other bits tell most colliding keys
  // apart without reading the arena.
  static uint32_t tag_of(std::string_view key) { return static_cast<uint32_t>(hash_bytes(key)); }
  static std::size_t capacity_for(std::size_t n) {
    std::size_t c = 16;
    while (c < n * 2) c *= 2;
    return c;
  }
  static void prefetch(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
  }
  int32_t find(std::string_view key, uint32_t tag) const {
    std::size_t i = tag & mask_;
    while (slots_[i].entry != 0) {
      if (slots_[i].tag == tag && key_at(slots_[i].entry) == key) return id_at(slots_[i].entry);
      i = (i + 1) & mask_;
    }
    return -1;
  }
  int32_t id_at(uint32_t entry) const {
    int32_t id;
    std::memcpy(&id, arena_.data() + entry - 1, 4);
    return id;
  }
  void rehash(std::size_t capacity) {
    std::vector<Slot, HugePageAllocator<Slot>> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const auto& s : old) {
      if (s.entry == 0) continue;
      std::size_t i = s.tag & mask_;
      while (slots_[i].entry != 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<Slot, HugePageAllocator<Slot>> slots_;
  std::vector<char, HugePageAllocator<char>> arena_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;           // indexed entries
  std::size_t appended_ = 0;       // entries in the arena
  std::size_t indexed_bytes_ = 0;  // the arena's indexed prefix
};

/// (int32, int32) pair -> (rank, id).
class PairMap {
 public:
  struct Value {
    int32_t rank;
    int32_t id;
  };
  /// Room for n pairs with the table at most 3/4 full (Llama-3's 280k merges: 8 MB).
  void reserve(std::size_t n) {
    std::size_t c = 16;
    while (c * 3 < n * 4) c *= 2;
    if (c > slots_.size()) rehash(c);
  }
  /// Inserts pairs[k] -> {rank k, ids[k]} for k < n, in rank order. A pair given twice keeps
  /// the later value, as HF's merge map (a Rust HashMap collected from the merges list) does.
  /// One loop over local copies of the table: inserting pair by pair through a member function
  /// ran about five times slower on Llama-3's 280k merges.
  void insert_ranked(const std::pair<int32_t, int32_t>* pairs, const int32_t* ids, std::size_t n) {
    reserve(size_ + n);
    Slot* const slots = slots_.data();
    const std::size_t mask = mask_;
    std::size_t added = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const uint64_t key = pack(pairs[k].first, pairs[k].second);
      const Value v{static_cast<int32_t>(k), ids[k]};
      std::size_t i = mix64(key) & mask;
      while (true) {
        if (slots[i].value.id < 0) {
          slots[i] = {key, v};
          ++added;
          break;
        }
        if (slots[i].key == key) {
          slots[i].value = v;
          break;
        }
        i = (i + 1) & mask;
      }
    }
    size_ += added;
  }
  const Value* find(int32_t a, int32_t b) const {
    if (size_ == 0) return nullptr;
    const uint64_t key = pack(a, b);
    std::size_t i = mix64(key) & mask_;
    while (slots_[i].value.id >= 0) {
      if (slots_[i].key == key) return &slots_[i].value;
      i = (i + 1) & mask_;
    }
    return nullptr;
  }
  std::size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key = 0;
    Value value{0, -1};
  };
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void rehash(std::size_t capacity) {
    std::vector<Slot, HugePageAllocator<Slot>> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const auto& s : old) {
      if (s.value.id < 0) continue;
      std::size_t i = mix64(s.key) & mask_;
      while (slots_[i].value.id >= 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot, HugePageAllocator<Slot>> slots_;
  std::size_t mask_ = 0, size_ = 0;
};

}  // namespace mechlens::tokenizer::detail
