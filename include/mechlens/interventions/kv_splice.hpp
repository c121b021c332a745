#pragma once
/// \file
/// KV-cache splices (docs/design.md): copy layers [lo, hi) — optionally some KV heads and some slots —
/// from a source cache into a target cache, in place. Caches of different lengths need an
/// explicit alignment: `left` (the first m = min(n_src, n_tgt) slots of each), `right` (the last
/// m), or an explicit slot map; anything else is an error naming both lengths. Moved keys keep
/// the source's rotation unless `rerotate` asks to re-rotate them to their new positions (undo
/// the source position's rotation, apply the target's). Target slots keep their own positions,
/// so attention masks stay those of the target prompt.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/selection.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/interventions/align.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/model_config.hpp"
#include "mechlens/models/rotary.hpp"

namespace mechlens {

struct SpliceOptions {
  /// Layers to copy; default: all.
  std::optional<LayerRange> layers;
  /// KV heads to copy; default: all.
  IndexSet kv_heads;
  /// How source slots map onto target slots (interventions/align.hpp); Exact refuses caches of
  /// different lengths.
  Align align = Align::Exact;
  /// Explicit (target slot, source slot) pairs; overrides `align`.
  std::vector<std::pair<int64_t, int64_t>> slot_map;
  /// Of the aligned target slots, copy only these (indices into the target's slots).
  Positions slots = Positions::all();
  /// Re-rotate moved keys from their source positions to their target positions (needs `rope`).
  bool rerotate = false;
  std::optional<RopeConfig> rope;
};

/// The (target slot, source slot) pairs a splice copies.
inline std::vector<std::pair<int64_t, int64_t>> splice_slot_pairs(int64_t n_target, int64_t n_source,
                                                                  const SpliceOptions& opt) {
  std::vector<std::pair<int64_t, int64_t>> pairs;
  if (!opt.slot_map.empty()) {
    for (auto [t, s] : opt.slot_map) {
      MECHLENS_CHECK(t >= 0 && t < n_target && s >= 0 && s < n_source, ArgumentError,
                     "KV splice: slot map entry (target {}, source {}) is outside the target's {} / source's {} slots",
                     t, s, n_target, n_source);
      pairs.emplace_back(t, s);
    }
  } else {
    MECHLENS_CHECK(n_target == n_source || opt.align != Align::Exact, ArgumentError,
                   "KV splice: the source cache holds {} slots and the target {}; prompts of different lengths need "
                   "an alignment (left, right) or a slot map",
                   n_source, n_target);
    const int64_t m = std::min(n_target, n_source);
    const int64_t t0 = opt.align == Align::Right ? n_target - m : 0;
    const int64_t s0 = opt.align == Align::Right ? n_source - m : 0;
    for (int64_t i = 0; i < m; ++i) pairs.emplace_back(t0 + i, s0 + i);
  }
  if (!opt.slots.is_all()) {
    auto keep = opt.slots.resolve(n_target, "KV splice target slots");
    std::vector<std::pair<int64_t, int64_t>> kept;
    for (auto& pr : pairs)
      if (std::find(keep.begin(), keep.end(), pr.first) != keep.end()) kept.push_back(pr);
    for (int64_t k : keep)
      MECHLENS_CHECK(std::any_of(pairs.begin(), pairs.end(), [&](auto& pr) { return pr.first == k; }), ArgumentError,
                     "KV splice: target slot {} has no source slot under {} alignment (source {}, target {} slots)", k,
                     align_name(opt.align), n_source, n_target);
    pairs = std::move(kept);
  }
  return pairs;
}

namespace detail {
/// Source and target caches of the same model shape; the source has batch 1 or the target's.
inline void check_splice_caches(const KVCache& target, const KVCache& source) {
  MECHLENS_CHECK(source.n_layers() == target.n_layers() && source.n_kv_heads() == target.n_kv_heads() &&
                     source.d_head() == target.d_head(),
                 ShapeError, "KV splice: source cache [layers {}, kv_heads {}, d_head {}] vs target [layers {}, kv_heads {}, d_head {}]",
                 source.n_layers(), source.n_kv_heads(), source.d_head(), target.n_layers(), target.n_kv_heads(),
                 target.d_head());
  MECHLENS_CHECK(source.batch() == target.batch() || source.batch() == 1, ShapeError,
                 "KV splice: source batch {} vs target batch {} (expected equal, or a source of 1)", source.batch(),
                 target.batch());
}
}  // namespace detail

/// Keys rotated at positions s, moved to positions t: keys [layers, batch, kv_heads, m, d_head]
/// (any float dtype), delta [batch, m] = t - s (int64). Rotations compose, so rotating by t - s
/// turns a key rotated at s into the key rotated at t. Computed in float32, returned in the
/// keys' dtype.
inline at::Tensor rerotate_keys(const at::Tensor& keys, const at::Tensor& delta, const RopeConfig& rope) {
  MECHLENS_CHECK(keys.dim() == 5 && delta.dim() == 2 && delta.size(0) == keys.size(1) && delta.size(1) == keys.size(3),
                 ShapeError, "rerotate_keys: keys {} and delta {} (expected [layers, batch, kv, m, d] and [batch, m])",
                 shape_str(keys.sizes()), shape_str(delta.sizes()));
  const int64_t L = keys.size(0), b = keys.size(1), kv = keys.size(2), m = keys.size(3), d = keys.size(4);
  at::Tensor inv_freq = rope_inverse_frequencies(rope, d, keys.device());
  RotaryAngles angles = rotary_angles(inv_freq, delta.to(keys.device()), at::kFloat);  // [b, m, 1, d]
  // apply_rotary wants [b, m, heads, d]: layers and heads become the heads.
  at::Tensor flat = keys.to(at::kFloat).permute({1, 3, 0, 2, 4}).reshape({b, m, L * kv, d});
  return apply_rotary(flat, angles).reshape({b, m, L, kv, d}).permute({2, 0, 3, 1, 4}).to(keys.scalar_type());
}

/// Copies source keys/values into `target` in place (see the file comment). The source has
/// batch 1 (broadcast over the target's rows) or the target's batch.
inline void splice_kv(KVCache& target, const KVCache& source, const SpliceOptions& opt = {}) {
  at::NoGradGuard no_grad;
  detail::check_splice_caches(target, source);
  MECHLENS_CHECK(!(opt.align == Align::Left && opt.slot_map.empty() && (source.has_padding() || target.has_padding())),
                 ArgumentError, "KV splice: left alignment of left-padded caches would copy padding; use right alignment or a slot map");
  const LayerRange layers = opt.layers.value_or(LayerRange{0, target.n_layers()});
  layers.check(target.n_layers(), "KV splice layers");
  auto pairs = splice_slot_pairs(target.length(), source.length(), opt);
  if (pairs.empty()) return;
  auto long_opts = at::TensorOptions().dtype(at::kLong).device(target.device());
  std::vector<int64_t> t_idx, s_idx;
  for (auto [t, s] : pairs) t_idx.push_back(t), s_idx.push_back(s);
  at::Tensor ti = at::tensor(t_idx, long_opts.device(at::kCPU)).to(target.device());
  at::Tensor si = at::tensor(s_idx, long_opts.device(at::kCPU)).to(source.device());
  if (source.has_padding() || target.has_padding()) {
    // One slot map serves every row: in a padded batch it must pair real slots with real slots.
    at::Tensor sv = source.valid().index_select(1, si).to(target.device());
    at::Tensor tv = target.valid().index_select(1, ti);
    MECHLENS_CHECK(sv.expand_as(tv).eq(tv).all().item<bool>(), ArgumentError,
                   "KV splice: in these left-padded caches the aligned slots pair padding with real tokens in some "
                   "row (rows of different lengths); splice row by row (splice_kv_rows, interventions/kv_splice_rows.hpp) or pass a slot map");
  }
  auto heads = opt.kv_heads.resolve(target.n_kv_heads(), "KV head", "KV splice");
  const int64_t b = target.batch();

  MECHLENS_CHECK(!opt.rerotate || opt.rope.has_value(), ArgumentError,
                 "KV splice: rerotate needs the model's rope configuration");
  at::Tensor delta;  // [b, m] target minus source positions, for rerotate
  if (opt.rerotate)
    delta = (target.positions().index_select(1, ti) - source.positions().index_select(1, si).to(target.device()))
                .expand({b, -1});
  // Span by span where the target's (or the source's) layers change device (model split over
  // devices); one span for caches on one device.
  for (auto [first, count] : target.spans(layers.begin, layers.size()))
    for (auto [f, c] : source.spans(first, count))
      for (auto which : {0, 1}) {
        const at::Tensor src_store = which == 0 ? source.key_storage(f, c) : source.value_storage(f, c);
        at::Tensor dst = which == 0 ? target.key_storage(f, c) : target.value_storage(f, c);
        const at::Tensor t_here = ti.to(dst.device());
        // [layers, batch, kv, m, d]
        at::Tensor moved = src_store.index_select(3, si.to(src_store.device())).to(dst.options());
        if (moved.size(1) != b) moved = moved.expand({-1, b, -1, -1, -1});
        if (which == 0 && opt.rerotate) moved = rerotate_keys(moved, delta.to(dst.device()), *opt.rope);
        if (opt.kv_heads.is_all()) {
          dst.index_copy_(3, t_here, moved.contiguous());
        } else {
          for (int64_t h : heads) dst.select(2, h).index_copy_(2, t_here, moved.select(2, h).contiguous());
        }
      }
}

}  // namespace mechlens
