#pragma once
/// \file
/// Selections of layers, positions, heads and batch rows. Ranges are half-open and 0-based
/// everywhere: "16:32" is layers 16..31 (the write-ups' "L16-32"). A selection that does not fit
/// the tensor it is applied to is an error naming what was selected and what exists; nothing is
/// silently clipped.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mechlens/core/error.hpp"

namespace mechlens {

/// Layers [begin, end).
struct LayerRange {
  int64_t begin = 0;
  int64_t end = 0;

  static LayerRange single(int64_t layer) { return {layer, layer + 1}; }
  /// "lo:hi", "lo:" (to the last layer, needs n_layers), ":hi", or "l" (one layer).
  static LayerRange parse(const std::string& text, int64_t n_layers = -1) {
    auto to_int = [&](const std::string& s, int64_t fallback) -> int64_t {
      if (s.empty()) {
        MECHLENS_CHECK(fallback >= 0, ArgumentError, "layer range '{}': an open end needs the model's layer count", text);
        return fallback;
      }
      try {
        size_t used = 0;
        int64_t v = std::stoll(s, &used);
        MECHLENS_CHECK(used == s.size(), ArgumentError, "layer range '{}': '{}' is not an integer", text, s);
        return v;
      } catch (const std::logic_error&) {
        detail::raise<ArgumentError>("layer range '{}': '{}' is not an integer (expected LO:HI)", text, s);
      }
    };
    auto colon = text.find(':');
    LayerRange r = colon == std::string::npos
                       ? single(to_int(text, -1))
                       : LayerRange{to_int(text.substr(0, colon), 0), to_int(text.substr(colon + 1), n_layers)};
    // "layer range 5:9 does not fit ..."; the text as given only where it reads otherwise ("5:").
    if (n_layers >= 0) r.check(n_layers, text == r.str() ? "layer range" : "layer range '" + text + "' =");
    return r;
  }
  bool contains(int64_t layer) const { return layer >= begin && layer < end; }
  int64_t size() const { return end - begin; }
  /// Throws ArgumentError unless 0 <= begin < end <= n_layers.
  void check(int64_t n_layers, const std::string& what = "layer range") const {
    MECHLENS_CHECK(begin >= 0 && begin < end && end <= n_layers, ArgumentError,
                   "{} {}:{} does not fit a model of {} layers (expected 0 <= lo < hi <= {})", what, begin, end,
                   n_layers, n_layers);
  }
  std::string str() const { return std::to_string(begin) + ":" + std::to_string(end); }
};

/// Positions (token indices of a forward pass): all, a list, a half-open range or the last n.
class Positions {
 public:
  enum class Kind { All, List, Range, Last };
  static Positions all() { return Positions(Kind::All); }
  static Positions list(std::vector<int64_t> p) { Positions s(Kind::List); s.list_ = std::move(p); return s; }
  static Positions range(int64_t begin, int64_t end) { Positions s(Kind::Range); s.a_ = begin; s.b_ = end; return s; }
  static Positions last(int64_t n) { Positions s(Kind::Last); s.a_ = n; return s; }

  Kind kind() const { return kind_; }
  bool is_all() const { return kind_ == Kind::All; }
  /// Kind::List: the positions as given.
  const std::vector<int64_t>& values() const { return list_; }
  /// Kind::Range: its ends [range_begin, range_end).
  int64_t range_begin() const { return a_; }
  int64_t range_end() const { return b_; }
  /// Kind::Last: n.
  int64_t last_count() const { return a_; }
  /// The selected indices for a sequence of `n` positions (ascending; a list keeps its order and
  /// repeats); `where` names the hook for
  /// the error when a selection does not fit.
  std::vector<int64_t> resolve(int64_t n, const std::string& where) const {
    std::vector<int64_t> out;
    switch (kind_) {
      case Kind::All:
        for (int64_t i = 0; i < n; ++i) out.push_back(i);
        break;
      case Kind::List:
        for (int64_t p : list_) {
          MECHLENS_CHECK(p >= 0 && p < n, ArgumentError, "{}: position {} is outside the {} positions [0, {})",
                         where, p, n, n);
          out.push_back(p);
        }
        break;
      case Kind::Range:
        MECHLENS_CHECK(a_ >= 0 && a_ < b_ && b_ <= n, ArgumentError,
                       "{}: positions {}:{} do not fit the {} positions [0, {})", where, a_, b_, n, n);
        for (int64_t i = a_; i < b_; ++i) out.push_back(i);
        break;
      case Kind::Last:
        MECHLENS_CHECK(a_ > 0 && a_ <= n, ArgumentError, "{}: the last {} positions of a {}-position sequence",
                       where, a_, n);
        for (int64_t i = n - a_; i < n; ++i) out.push_back(i);
        break;
    }
    return out;
  }
  std::string str() const {
    switch (kind_) {
      case Kind::All: return "all";
      case Kind::Range: return std::to_string(a_) + ":" + std::to_string(b_);
      case Kind::Last: return "last " + std::to_string(a_);
      case Kind::List: {
        std::string s = "[";
        for (size_t i = 0; i < list_.size(); ++i) s += (i ? ", " : "") + std::to_string(list_[i]);
        return s + "]";
      }
    }
    return "?";
  }

 private:
  explicit Positions(Kind k) : kind_(k) {}
  Kind kind_;
  std::vector<int64_t> list_;
  int64_t a_ = 0, b_ = 0;
};

/// A subset of indices along one dimension (heads or batch rows); empty = all.
struct IndexSet {
  std::vector<int64_t> indices;
  static IndexSet all() { return {}; }
  static IndexSet only(std::vector<int64_t> i) { return {std::move(i)}; }
  bool is_all() const { return indices.empty(); }
  std::vector<int64_t> resolve(int64_t n, const std::string& what, const std::string& where) const {
    if (is_all()) {
      std::vector<int64_t> out(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i;
      return out;
    }
    for (int64_t i : indices)
      MECHLENS_CHECK(i >= 0 && i < n, ArgumentError, "{}: {} {} does not exist (there are {}: 0..{})", where, what,
                     i, n, n - 1);
    return indices;
  }
};

/// Where an intervention acts: layers (for hook patterns with a layer), positions, heads (query
/// heads for q/rot_q/z/pattern, KV heads for k/rot_k/v) and batch rows.
struct Selection {
  std::optional<LayerRange> layers;
  Positions positions = Positions::all();
  IndexSet heads;
  IndexSet rows;

  Selection& at_layers(LayerRange r) { layers = r; return *this; }
  Selection& at_positions(Positions p) { positions = std::move(p); return *this; }
  Selection& at_heads(std::vector<int64_t> h) { heads = IndexSet::only(std::move(h)); return *this; }
  Selection& at_rows(std::vector<int64_t> r) { rows = IndexSet::only(std::move(r)); return *this; }
};

}  // namespace mechlens
