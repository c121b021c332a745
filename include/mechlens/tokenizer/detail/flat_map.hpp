#pragma once
/// \file
/// Open-addressing hash maps for the BPE vocabulary (string -> id) and merges (id pair -> rank,
/// id). Loading Llama-3 does ~1M lookups into 128k tokens; with std::unordered_map those are
/// cache misses on separate chains, and lookups by string_view would allocate. These store the
/// keys in one arena and probe linearly.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

/// string -> int32 id (ids are >= 0).
class StringIdMap {
 public:
  std::size_t size() const { return size_; }
  void reserve(std::size_t n) {
    if (n * 2 > slots_.size()) rehash(capacity_for(n));
  }
  /// Inserts key -> id; returns false (and changes nothing) when the key is already present.
  bool insert(std::string_view key, int32_t id) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(capacity_for(size_ + 1));
    const uint64_t h = hash_bytes(key);
    std::size_t i = h & mask_;
    while (slots_[i].id >= 0) {
      if (slots_[i].hash == h && view(slots_[i]) == key) return false;
      i = (i + 1) & mask_;
    }
    slots_[i] = {h, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), id};
    arena_.append(key);
    ++size_;
    return true;
  }
  /// The id of key, or -1.
  int32_t find(std::string_view key) const {
    if (size_ == 0) return -1;
    const uint64_t h = hash_bytes(key);
    std::size_t i = h & mask_;
    while (slots_[i].id >= 0) {
      if (slots_[i].hash == h && view(slots_[i]) == key) return slots_[i].id;
      i = (i + 1) & mask_;
    }
    return -1;
  }
  /// Calls f(key, id) for every entry.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& s : slots_) {
      if (s.id >= 0) f(view(s), s.id);
    }
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, length = 0;
    int32_t id = -1;
  };
  static std::size_t capacity_for(std::size_t n) {
    std::size_t c = 16;
    while (c < n * 2) c *= 2;
    return c;
  }
  std::string_view view(const Slot& s) const { return std::string_view(arena_).substr(s.offset, s.length); }
  void rehash(std::size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const auto& s : old) {
      if (s.id < 0) continue;
      std::size_t i = s.hash & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<Slot> slots_;
  std::string arena_;
  std::size_t mask_ = 0, size_ = 0;
};

/// (int32, int32) pair -> (rank, id).
class PairMap {
 public:
  struct Value {
    int32_t rank;
    int32_t id;
  };
  void reserve(std::size_t n) {
    std::size_t c = 16;
    while (c < n * 2) c *= 2;
    if (c > slots_.size()) rehash(c);
  }
  /// A pair inserted twice keeps the later value, as HF's merge map (a Rust HashMap collected
  /// from the merges list) does.
  void insert(int32_t a, int32_t b, Value v) {
    if ((size_ + 1) * 2 > slots_.size()) reserve(size_ + 1);
    const uint64_t key = pack(a, b);
    std::size_t i = mix64(key) & mask_;
    while (slots_[i].value.id >= 0) {
      if (slots_[i].key == key) {
        slots_[i].value = v;
        return;
      }
      i = (i + 1) & mask_;
    }
    slots_[i] = {key, v};
    ++size_;
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
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const auto& s : old) {
      if (s.value.id < 0) continue;
      std::size_t i = mix64(s.key) & mask_;
      while (slots_[i].value.id >= 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0, size_ = 0;
};

}  // namespace mechlens::tokenizer::detail
