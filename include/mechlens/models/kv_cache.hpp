#pragma once
/// \file
/// KVCache: keys (after rotary, as Hugging Face stores them) and values of every layer, allocated
/// once for a capacity and written in place. Every slot knows its absolute position and whether it
/// holds a real token (false for left padding); attention masks come from those, so spliced,
/// prefixed and padded caches are masked by what they hold, not by where it sits.
///
/// Layout: keys and values are one tensor each, [layers, batch, kv_heads, capacity, d_head];
/// `keys(l)` is a view of the first `length()` slots of layer l. A cache for a model split over
/// devices (LoadOptions::device_map) keeps each layer's keys and values on its layer's device: one
/// such tensor per run of consecutive layers on one device (a "block"); slot positions and
/// validity stay on the first layer's device (device()). key_storage(first, count) gives layers
/// within one block; spans() says where blocks end.
///
/// A KVCache is move-only: a copy would share the tensors but not the length, so two "caches"
/// would write each other's slots while disagreeing on what they hold. `clone()` makes an
/// independent deep copy; `std::move` hands one over.

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/models/model_config.hpp"

namespace mechlens {

class KVCache {
 public:
  KVCache() = default;
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;
  KVCache(KVCache&&) noexcept = default;
  KVCache& operator=(KVCache&&) noexcept = default;
  /// Sizes that cannot be allocated are an ArgumentError with the bytes they need (the
  /// allocator's own message follows), never an overflow or a bare allocator error.
  /// `layer_devices` (one per layer) places each layer's keys and values on its own device (a
  /// model split over devices); empty: every layer on `options`' device.
  KVCache(int64_t layers, int64_t batch, int64_t kv_heads, int64_t d_head, int64_t capacity,
          const at::TensorOptions& options, const std::vector<at::Device>& layer_devices = {}) {
    MECHLENS_CHECK(layers > 0 && batch > 0 && kv_heads > 0 && d_head > 0 && capacity > 0, ArgumentError,
                   "KVCache: sizes must be positive (layers {}, batch {}, kv_heads {}, d_head {}, capacity {})",
                   layers, batch, kv_heads, d_head, capacity);
    MECHLENS_CHECK(layer_devices.empty() || static_cast<int64_t>(layer_devices.size()) == layers, ArgumentError,
                   "KVCache: {} layer devices for {} layers", layer_devices.size(), layers);
    const double bytes = 2.0 * static_cast<double>(layers) * static_cast<double>(batch) *
                         static_cast<double>(kv_heads) * static_cast<double>(capacity) * static_cast<double>(d_head) *
                         static_cast<double>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
    auto refuse = [&](const std::string& why) {
      detail::raise<ArgumentError>(
          "KVCache: {} layers x batch {} x {} KV heads x {} slots x d_head {} needs {:.3g} GiB for keys and values "
          "on {}, which cannot be allocated{}",
          layers, batch, kv_heads, capacity, d_head, bytes / (1024.0 * 1024.0 * 1024.0),
          layer_devices.empty() ? options.device().str() : layer_devices.front().str(), why);
    };
    if (bytes > 9.0e18) refuse("");  // beyond any address space (and int64 element counts)
    try {
      const at::Device home = layer_devices.empty() ? options.device() : layer_devices.front();
      int64_t first = 0;
      while (first < layers) {
        const at::Device dev = layer_devices.empty() ? home : layer_devices[static_cast<size_t>(first)];
        int64_t count = 1;
        while (first + count < layers &&
               (layer_devices.empty() || layer_devices[static_cast<size_t>(first + count)] == dev))
          ++count;
        Block block;
        block.first = first;
        block.device = dev;
        block.keys = at::zeros({count, batch, kv_heads, capacity, d_head}, options.device(dev));
        block.values = at::zeros({count, batch, kv_heads, capacity, d_head}, options.device(dev));
        blocks_.push_back(std::move(block));
        first += count;
      }
      positions_ = at::zeros({batch, capacity}, options.device(home).dtype(at::kLong));
      valid_ = at::zeros({batch, capacity}, options.device(home).dtype(at::kBool));
    } catch (const c10::Error& e) {
      const std::string what = e.what_without_backtrace();
      refuse(": " + what.substr(0, what.find('\n')));
    } catch (const std::bad_alloc&) {
      refuse(" (out of host memory)");
    }
  }
  /// A cache shaped for `config`, in the dtype and device of `options` (ModelImpl::make_cache
  /// also places the layers of a model split over devices).
  static KVCache for_model(const ModelConfig& config, int64_t batch, int64_t capacity, const at::TensorOptions& options,
                           const std::vector<at::Device>& layer_devices = {}) {
    return KVCache(config.n_layers(), batch, config.n_kv_heads(), config.d_head(), capacity, options, layer_devices);
  }

  bool defined() const { return !blocks_.empty(); }
  int64_t n_layers() const { return blocks_.empty() ? 0 : blocks_.back().first + blocks_.back().keys.size(0); }
  int64_t batch() const { return first_keys().size(1); }
  int64_t n_kv_heads() const { return first_keys().size(2); }
  int64_t capacity() const { return first_keys().size(3); }
  int64_t d_head() const { return first_keys().size(4); }
  /// Slots filled so far (the same for every row; padding fills slots marked invalid).
  int64_t length() const { return length_; }
  at::ScalarType dtype() const { return first_keys().scalar_type(); }
  /// The first layer's device, where slot positions and validity live (for a cache on one
  /// device: its device).
  at::Device device() const { return first_keys().device(); }
  /// Where layer l's keys and values are.
  at::Device layer_device(int64_t layer) const { return block_of(check_layer(layer)).device; }
  /// Every layer's device, in order.
  std::vector<at::Device> layer_devices() const {
    std::vector<at::Device> out;
    for (const Block& b : blocks_)
      for (int64_t i = 0; i < b.keys.size(0); ++i) out.push_back(b.device);
    return out;
  }
  /// Whether every layer is on one device.
  bool on_one_device() const { return blocks_.size() <= 1; }
  /// True when some filled slot holds padding (host-side flag, no device sync).
  bool has_padding() const { return has_padding_; }

  /// [batch, kv_heads, length, d_head] views of layer l.
  at::Tensor keys(int64_t layer) const { return key_storage(layer).narrow(2, 0, length_); }
  at::Tensor values(int64_t layer) const { return value_storage(layer).narrow(2, 0, length_); }
  /// [batch, length] absolute position of each slot / whether it holds a real token.
  at::Tensor positions() const { return positions_.narrow(1, 0, length_); }
  at::Tensor valid() const { return valid_.narrow(1, 0, length_); }
  /// The whole storage, [layers, batch, kv_heads, capacity, d_head] (for in-place edits). A cache
  /// over several devices has no single such tensor: use the per-layer or per-span forms.
  at::Tensor key_storage() const { return key_storage(0, n_layers()); }
  at::Tensor value_storage() const { return value_storage(0, n_layers()); }
  /// Layers [first, first + count) of the storage, [count, batch, kv_heads, capacity, d_head]: a
  /// view (writes reach the cache). The layers must be on one device (see spans()).
  at::Tensor key_storage(int64_t first, int64_t count) const { return span_of(first, count, true); }
  at::Tensor value_storage(int64_t first, int64_t count) const { return span_of(first, count, false); }
  /// Layer l's storage, [batch, kv_heads, capacity, d_head] (a view).
  at::Tensor key_storage(int64_t layer) const {
    const Block& b = block_of(check_layer(layer));
    return b.keys.select(0, layer - b.first);
  }
  at::Tensor value_storage(int64_t layer) const {
    const Block& b = block_of(check_layer(layer));
    return b.values.select(0, layer - b.first);
  }
  /// Layers [first, first + count) cut where the device changes: (first, count) pairs, each on
  /// one device (one pair for a cache on one device).
  std::vector<std::pair<int64_t, int64_t>> spans(int64_t first, int64_t count) const {
    check_span(first, count, "spans");
    std::vector<std::pair<int64_t, int64_t>> out;
    for (const Block& b : blocks_) {
      const int64_t lo = std::max(first, b.first), hi = std::min(first + count, b.first + b.keys.size(0));
      if (lo < hi) out.emplace_back(lo, hi - lo);
    }
    return out;
  }
  at::Tensor& position_storage() { return positions_; }
  at::Tensor& valid_storage() { return valid_; }
  const at::Tensor& position_storage() const { return positions_; }
  const at::Tensor& valid_storage() const { return valid_; }

  /// Makes room for `count` more slots: grows the storage (a copy) only when the capacity is
  /// exceeded. Generation reserves prompt + max_new_tokens up front, so decoding never grows it.
  void reserve(int64_t count) {
    MECHLENS_CHECK(count >= 0 && count <= (int64_t{1} << 40), ArgumentError,
                   "KVCache::reserve: {} more slots is outside [0, 2^40]", count);
    const int64_t need = length_ + count;
    if (need <= capacity()) return;
    const int64_t cap = std::max(need, 2 * capacity());
    auto grow = [&](at::Tensor& t, int64_t dim) {
      auto sizes = t.sizes().vec();
      sizes[dim] = cap;
      at::Tensor bigger = at::zeros(sizes, t.options());
      bigger.narrow(dim, 0, length_).copy_(t.narrow(dim, 0, length_));
      t = bigger;
    };
    for (Block& b : blocks_) {
      grow(b.keys, 3);
      grow(b.values, 3);
    }
    grow(positions_, 1);
    grow(valid_, 1);
  }

  /// Starts appending `positions.size(1)` slots: records their positions [batch, n] and validity
  /// [batch, n] (undefined = all real) and returns the first new slot. Layers then write their
  /// keys and values with write(); commit() makes the slots part of the cache.
  int64_t begin_append(const at::Tensor& positions, const at::Tensor& live) {
    MECHLENS_CHECK(positions.dim() == 2 && positions.size(0) == batch(), ShapeError,
                   "KVCache: positions have shape {}, expected [{}, n]", shape_str(positions.sizes()), batch());
    const int64_t n = positions.size(1);
    reserve(n);
    positions_.narrow(1, length_, n).copy_(positions);
    if (live.defined()) {
      valid_.narrow(1, length_, n).copy_(live);
      pending_padding_ = true;
    } else {
      valid_.narrow(1, length_, n).fill_(true);
      pending_padding_ = false;
    }
    pending_ = n;
    return length_;
  }
  /// Writes layer l's new keys / values, each [batch, n, kv_heads, d_head], at the slots
  /// begin_append returned, and returns views of the layer's slots [0, start + n).
  /// In a forward that builds an autograd graph (the held slots track gradients, or the new keys
  /// carry one) the storage receives plain copies and the returned tensors join the held slots to
  /// the new keys, so that gradients reach both; otherwise they are views of the storage.
  std::pair<at::Tensor, at::Tensor> write(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
    const int64_t n = k.size(1);
    MECHLENS_CHECK(n == pending_, ShapeError, "KVCache::write: {} new slots, but begin_append announced {}", n, pending_);
    at::Tensor kl = key_storage(layer), vl = value_storage(layer);
    const bool graph =
        at::GradMode::is_enabled() && (tracked_keys_.defined() || k.requires_grad() || v.requires_grad());
    if (!graph) {
      kl.narrow(2, length_, n).copy_(k.transpose(1, 2));
      vl.narrow(2, length_, n).copy_(v.transpose(1, 2));
      return {kl.narrow(2, 0, length_ + n), vl.narrow(2, 0, length_ + n)};
    }
    kl.narrow(2, length_, n).copy_(k.transpose(1, 2).detach());
    vl.narrow(2, length_, n).copy_(v.transpose(1, 2).detach());
    return {at::cat({held(tracked_keys_, kl, layer), k.transpose(1, 2)}, 2),
            at::cat({held(tracked_values_, vl, layer), v.transpose(1, 2)}, 2)};
  }

  /// Makes the keys and values of the slots held now autograd leaves: a forward under grad mode
  /// that appends to this cache then reads them through those leaves, and backward() leaves
  /// d metric / d entry in key_gradients() / value_gradients(). Costs a copy of the held slots
  /// (and as much again for the gradients). The cache's contents are not changed; clone() and
  /// select_rows() do not carry the tracking.
  void track_gradients() {
    MECHLENS_CHECK(defined(), ArgumentError, "KVCache::track_gradients: the cache is empty (default-constructed)");
    MECHLENS_CHECK(on_one_device(), ArgumentError, "KVCache::track_gradients: the cache spans {} devices (a model "
                   "split by device_map); gradients over the KV cache need a model on one device", blocks_.size());
    tracked_keys_ = key_storage().narrow(3, 0, length_).detach().clone().requires_grad_(true);
    tracked_values_ = value_storage().narrow(3, 0, length_).detach().clone().requires_grad_(true);
  }
  bool tracks_gradients() const { return tracked_keys_.defined(); }
  /// [layers, batch, kv_heads, tracked slots, d_head]: the gradients accumulated since
  /// track_gradients() (zeros before any backward reached them).
  at::Tensor key_gradients() const { return tracked_gradient(tracked_keys_, "key_gradients"); }
  at::Tensor value_gradients() const { return tracked_gradient(tracked_values_, "value_gradients"); }
  void stop_tracking_gradients() {
    tracked_keys_ = at::Tensor();
    tracked_values_ = at::Tensor();
  }
  /// Positions / validity of slots [0, length + pending) during an append.
  at::Tensor appending_positions() const { return positions_.narrow(1, 0, length_ + pending_); }
  at::Tensor appending_valid() const { return valid_.narrow(1, 0, length_ + pending_); }
  void commit() {
    length_ += pending_;
    has_padding_ = has_padding_ || pending_padding_;
    pending_ = 0;
  }
  /// Abandons an append (e.g. an exception in a hook): the cache keeps its previous length, and
  /// the announced slots are marked invalid again (a static-shape step masks by validity over
  /// the whole capacity, so a stale flag would let it attend to a half-written slot).
  void rollback() {
    if (pending_ > 0) {
      valid_.narrow(1, length_, pending_).fill_(false);
      positions_.narrow(1, length_, pending_).fill_(0);
    }
    pending_ = 0;
    pending_padding_ = false;
  }

  /// Static-shape append of one token per row (CUDA-graph decoding): writes the slot's position
  /// and validity at `slot` ([1] int64 on the device, so a captured graph reads it at replay).
  /// The host length is not touched: the caller advances it with set_length.
  void write_slot_state(const at::Tensor& positions, const at::Tensor& slot) {
    positions_.index_copy_(1, slot, positions.view({batch(), 1}));
    valid_.index_fill_(1, slot, true);
  }
  /// Writes layer l's keys / values [batch, 1, kv_heads, d_head] at `slot` and returns the layer's
  /// whole storage [batch, kv_heads, capacity, d_head] (unfilled slots are invalid, hence masked).
  std::pair<at::Tensor, at::Tensor> write_at(int64_t layer, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& slot) {
    at::Tensor kl = key_storage(layer), vl = value_storage(layer);
    kl.index_copy_(2, slot, k.transpose(1, 2));
    vl.index_copy_(2, slot, v.transpose(1, 2));
    return {kl, vl};
  }

  /// Drops every slot from `length` on (the storage stays allocated; dropped slots become invalid).
  void truncate(int64_t length) {
    MECHLENS_CHECK(length >= 0 && length <= length_, ArgumentError,
                   "KVCache::truncate: length {} outside [0, {}]", length, length_);
    valid_.narrow(1, length, capacity() - length).fill_(false);
    length_ = length;
  }

  /// A new cache holding the given batch rows of this one (a row may repeat), e.g. to run several
  /// conditions of the same prompts in one batch. `capacity` 0 keeps this cache's capacity.
  KVCache select_rows(const at::Tensor& rows, int64_t capacity = 0) const {
    at::Tensor idx = rows.to(positions_.device(), at::kLong);
    KVCache c;
    const int64_t cap = std::max(capacity > 0 ? capacity : this->capacity(), length_);
    for (const Block& b : blocks_) {
      at::Tensor here = idx.to(b.keys.device());
      Block nb;
      nb.first = b.first;
      nb.device = b.device;
      nb.keys = at::zeros({b.keys.size(0), idx.size(0), n_kv_heads(), cap, d_head()}, b.keys.options());
      nb.values = at::zeros_like(nb.keys);
      nb.keys.narrow(3, 0, length_).copy_(b.keys.narrow(3, 0, length_).index_select(1, here));
      nb.values.narrow(3, 0, length_).copy_(b.values.narrow(3, 0, length_).index_select(1, here));
      c.blocks_.push_back(std::move(nb));
    }
    c.positions_ = at::zeros({idx.size(0), cap}, positions_.options());
    c.valid_ = at::zeros({idx.size(0), cap}, valid_.options());
    c.positions_.narrow(1, 0, length_).copy_(positions().index_select(0, idx));
    c.valid_.narrow(1, 0, length_).copy_(valid().index_select(0, idx));
    c.length_ = length_;
    c.has_padding_ = has_padding_;
    return c;
  }
  /// Sets the length directly, for caches filled by hand (splices, loading).
  void set_length(int64_t length, bool has_padding) {
    MECHLENS_CHECK(length >= 0 && length <= capacity(), ArgumentError,
                   "KVCache::set_length: {} outside [0, capacity {}]", length, capacity());
    length_ = length;
    has_padding_ = has_padding;
  }

  /// A deep copy with capacity max(length, capacity).
  KVCache clone(int64_t capacity = 0) const {
    KVCache c;
    const int64_t cap = std::max({capacity, length_, int64_t{1}});
    for (const Block& b : blocks_) {
      Block nb;
      nb.first = b.first;
      nb.device = b.device;
      nb.keys = at::zeros({b.keys.size(0), batch(), n_kv_heads(), cap, d_head()}, b.keys.options());
      nb.values = at::zeros_like(nb.keys);
      nb.keys.narrow(3, 0, length_).copy_(b.keys.narrow(3, 0, length_));
      nb.values.narrow(3, 0, length_).copy_(b.values.narrow(3, 0, length_));
      c.blocks_.push_back(std::move(nb));
    }
    c.positions_ = at::zeros({batch(), cap}, positions_.options());
    c.valid_ = at::zeros({batch(), cap}, valid_.options());
    c.positions_.narrow(1, 0, length_).copy_(positions());
    c.valid_.narrow(1, 0, length_).copy_(valid());
    c.length_ = length_;
    c.has_padding_ = has_padding_;
    return c;
  }

  /// A deep copy whose layers are on `layer_devices` (one per layer; e.g. a cache loaded from a
  /// file, for a model split over devices: ModelImpl::layer_devices()), slot positions on the first.
  KVCache placed(const std::vector<at::Device>& layer_devices) const {
    MECHLENS_CHECK(defined(), ArgumentError, "KVCache::placed: the cache is empty (default-constructed)");
    KVCache c(n_layers(), batch(), n_kv_heads(), d_head(), std::max<int64_t>(capacity(), 1),
              first_keys().options(), layer_devices);
    for (int64_t l = 0; l < n_layers(); ++l) {
      c.key_storage(l).copy_(key_storage(l));
      c.value_storage(l).copy_(value_storage(l));
    }
    c.positions_.copy_(positions_);
    c.valid_.copy_(valid_);
    c.length_ = length_;
    c.has_padding_ = has_padding_;
    return c;
  }

 private:
  /// Layer l's held slots [batch, kv, length, d]: the tracked leaves for the slots they cover,
  /// plain values for any appended after track_gradients().
  at::Tensor held(const at::Tensor& tracked, const at::Tensor& storage_layer, int64_t layer) const {
    if (!tracked.defined()) return storage_layer.narrow(2, 0, length_);
    const int64_t t = tracked.size(3);
    at::Tensor leaf = tracked.select(0, layer);
    if (t >= length_) return leaf.narrow(2, 0, length_);
    return at::cat({leaf, storage_layer.narrow(2, t, length_ - t)}, 2);
  }
  at::Tensor tracked_gradient(const at::Tensor& tracked, const char* who) const {
    MECHLENS_CHECK(tracked.defined(), ArgumentError, "KVCache::{}: the cache does not track gradients (call "
                   "track_gradients() before the forward)", who);
    return tracked.grad().defined() ? tracked.grad() : at::zeros_like(tracked);
  }

  int64_t check_layer(int64_t layer) const {
    MECHLENS_CHECK(layer >= 0 && layer < n_layers(), ArgumentError, "KVCache: layer {} outside [0, {})", layer,
                   n_layers());
    return layer;
  }
  void check_span(int64_t first, int64_t count, const char* who) const {
    MECHLENS_CHECK(first >= 0 && count >= 0 && first + count <= n_layers(), ArgumentError,
                   "KVCache::{}: layers [{}, {}) outside [0, {})", who, first, first + count, n_layers());
  }

  /// Consecutive layers on one device: keys / values [layers here, batch, kv_heads, capacity, d_head].
  struct Block {
    int64_t first = 0;
    at::Tensor keys, values;
    at::Device device = at::kCPU;  ///< as placed (a tensor reports "cpu:0" as "cpu")
  };
  const at::Tensor& first_keys() const {
    MECHLENS_CHECK(!blocks_.empty(), ArgumentError, "KVCache: the cache is empty (default-constructed)");
    return blocks_.front().keys;
  }
  const Block& block_of(int64_t layer) const {
    for (const Block& b : blocks_)
      if (layer < b.first + b.keys.size(0)) return b;
    return blocks_.back();  // unreachable after check_layer
  }
  at::Tensor span_of(int64_t first, int64_t count, bool keys) const {
    check_span(first, count, keys ? "key_storage" : "value_storage");
    if (blocks_.size() == 1) {
      const at::Tensor& t = keys ? blocks_.front().keys : blocks_.front().values;
      return count == t.size(0) ? t : t.narrow(0, first, count);
    }
    const Block& b = block_of(first);
    if (count == 0 || first + count <= b.first + b.keys.size(0))
      return (keys ? b.keys : b.values).narrow(0, first - b.first, count);
    std::string where;
    for (const Block& x : blocks_)
      where += fmt::format("{}layers {}:{} on {}", where.empty() ? "" : ", ", x.first, x.first + x.keys.size(0),
                           x.device.str());
    detail::raise<ArgumentError>("KVCache::{}: layers {}:{} are on more than one device ({}); take them span by "
                                 "span (KVCache::spans) or layer by layer",
                                 keys ? "key_storage" : "value_storage", first, first + count, where);
  }

  std::vector<Block> blocks_;  ///< one per run of layers on one device
  at::Tensor positions_, valid_;  ///< on the first layer's device
  at::Tensor tracked_keys_, tracked_values_;  ///< track_gradients(): leaves over the held slots
  int64_t length_ = 0;
  int64_t pending_ = 0;
  bool has_padding_ = false;
  bool pending_padding_ = false;
};

}  // namespace mechlens
