#pragma once
/// \file
/// KVCache: keys (after rotary, as Hugging Face stores them) and values of every layer, allocated
/// once for a capacity and written in place. Every slot knows its absolute position and whether it
/// holds a real token (false for left padding); attention masks come from those, so spliced,
/// prefixed and padded caches are masked by what they hold, not by where it sits.
///
/// Layout: keys and values are one tensor each, [layers, batch, kv_heads, capacity, d_head];
/// `keys(l)` is a view of the first `length()` slots of layer l.
///
/// A KVCache is move-only: a copy would share the tensors but not the length, so two "caches"
/// would write each other's slots while disagreeing on what they hold. `clone()` makes an
/// independent deep copy; `std::move` hands one over.

#include <cstdint>
#include <string>

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
  KVCache(int64_t layers, int64_t batch, int64_t kv_heads, int64_t d_head, int64_t capacity,
          const at::TensorOptions& options) {
    MECHLENS_CHECK(layers > 0 && batch > 0 && kv_heads > 0 && d_head > 0 && capacity > 0, ArgumentError,
                   "KVCache: sizes must be positive (layers {}, batch {}, kv_heads {}, d_head {}, capacity {})",
                   layers, batch, kv_heads, d_head, capacity);
    const double bytes = 2.0 * static_cast<double>(layers) * static_cast<double>(batch) *
                         static_cast<double>(kv_heads) * static_cast<double>(capacity) * static_cast<double>(d_head) *
                         static_cast<double>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
    auto refuse = [&](const std::string& why) {
      detail::raise<ArgumentError>(
          "KVCache: {} layers x batch {} x {} KV heads x {} slots x d_head {} needs {:.3g} GiB for keys and values "
          "on {}, which cannot be allocated{}",
          layers, batch, kv_heads, capacity, d_head, bytes / (1024.0 * 1024.0 * 1024.0), options.device().str(), why);
    };
    if (bytes > 9.0e18) refuse("");  // beyond any address space (and int64 element counts)
    try {
      keys_ = at::zeros({layers, batch, kv_heads, capacity, d_head}, options);
      values_ = at::zeros({layers, batch, kv_heads, capacity, d_head}, options);
      positions_ = at::zeros({batch, capacity}, options.dtype(at::kLong));
      valid_ = at::zeros({batch, capacity}, options.dtype(at::kBool));
    } catch (const c10::Error& e) {
      const std::string what = e.what_without_backtrace();
      refuse(": " + what.substr(0, what.find('\n')));
    } catch (const std::bad_alloc&) {
      refuse(" (out of host memory)");
    }
  }
  /// A cache shaped for `config`, in the dtype and device of `options`.
  static KVCache for_model(const ModelConfig& config, int64_t batch, int64_t capacity, const at::TensorOptions& options) {
    return KVCache(config.n_layers(), batch, config.n_kv_heads(), config.d_head(), capacity, options);
  }

  bool defined() const { return keys_.defined(); }
  int64_t n_layers() const { return keys_.size(0); }
  int64_t batch() const { return keys_.size(1); }
  int64_t n_kv_heads() const { return keys_.size(2); }
  int64_t capacity() const { return keys_.size(3); }
  int64_t d_head() const { return keys_.size(4); }
  /// Slots filled so far (the same for every row; padding fills slots marked invalid).
  int64_t length() const { return length_; }
  at::ScalarType dtype() const { return keys_.scalar_type(); }
  at::Device device() const { return keys_.device(); }
  /// True when some filled slot holds padding (host-side flag, no device sync).
  bool has_padding() const { return has_padding_; }

  /// [batch, kv_heads, length, d_head] views of layer l.
  at::Tensor keys(int64_t layer) const { return keys_.select(0, check_layer(layer)).narrow(2, 0, length_); }
  at::Tensor values(int64_t layer) const { return values_.select(0, check_layer(layer)).narrow(2, 0, length_); }
  /// [batch, length] absolute position of each slot / whether it holds a real token.
  at::Tensor positions() const { return positions_.narrow(1, 0, length_); }
  at::Tensor valid() const { return valid_.narrow(1, 0, length_); }
  /// The whole storage, [layers, batch, kv_heads, capacity, d_head] (for in-place edits).
  at::Tensor& key_storage() { return keys_; }
  at::Tensor& value_storage() { return values_; }
  at::Tensor& position_storage() { return positions_; }
  at::Tensor& valid_storage() { return valid_; }
  const at::Tensor& key_storage() const { return keys_; }
  const at::Tensor& value_storage() const { return values_; }
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
    grow(keys_, 3);
    grow(values_, 3);
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
    at::Tensor kl = keys_.select(0, layer), vl = values_.select(0, layer);
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
    tracked_keys_ = keys_.narrow(3, 0, length_).detach().clone().requires_grad_(true);
    tracked_values_ = values_.narrow(3, 0, length_).detach().clone().requires_grad_(true);
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
    at::Tensor kl = keys_.select(0, layer), vl = values_.select(0, layer);
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
    at::Tensor idx = rows.to(keys_.device(), at::kLong);
    KVCache c;
    const int64_t cap = std::max(capacity > 0 ? capacity : this->capacity(), length_);
    c.keys_ = at::zeros({n_layers(), idx.size(0), n_kv_heads(), cap, d_head()}, keys_.options());
    c.values_ = at::zeros_like(c.keys_);
    c.positions_ = at::zeros({idx.size(0), cap}, positions_.options());
    c.valid_ = at::zeros({idx.size(0), cap}, valid_.options());
    c.keys_.narrow(3, 0, length_).copy_(keys_.narrow(3, 0, length_).index_select(1, idx));
    c.values_.narrow(3, 0, length_).copy_(values_.narrow(3, 0, length_).index_select(1, idx));
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
    c.keys_ = at::zeros({n_layers(), batch(), n_kv_heads(), cap, d_head()}, keys_.options());
    c.values_ = at::zeros_like(c.keys_);
    c.positions_ = at::zeros({batch(), cap}, positions_.options());
    c.valid_ = at::zeros({batch(), cap}, valid_.options());
    c.keys_.narrow(3, 0, length_).copy_(keys_.narrow(3, 0, length_));
    c.values_.narrow(3, 0, length_).copy_(values_.narrow(3, 0, length_));
    c.positions_.narrow(1, 0, length_).copy_(positions());
    c.valid_.narrow(1, 0, length_).copy_(valid());
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

  at::Tensor keys_, values_, positions_, valid_;
  at::Tensor tracked_keys_, tracked_values_;  ///< track_gradients(): leaves over the held slots
  int64_t length_ = 0;
  int64_t pending_ = 0;
  bool has_padding_ = false;
  bool pending_padding_ = false;
};

}  // namespace mechlens
