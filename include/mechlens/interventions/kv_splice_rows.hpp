#pragma once
/// \file
/// KV splices of left-padded batches, row by row. splice_kv (kv_splice.hpp) aligns slots by
/// storage index, the same for every row; in a batch of pairs whose prompts differ in length that
/// would copy padding into real slots of some rows (splice_kv refuses it). Here each row is
/// aligned on its own real tokens, so a padded batch gives what splicing each row alone gives: row r of the target gets row r of the source (or row 0
/// of a batch-1 source), with splice_kv's rules per row — `right` (the last m = min(n_src, n_tgt)
/// real slots of each), `left` (the first m), or exact (equal lengths, else an error naming the
/// row and both lengths). Target slots keep their own positions and validity; keys keep the
/// source's rotation unless `rerotate`.
///
/// `from_end` / `from_start` select, among the aligned target slots, those at these distances from
/// the end of the row's prefilled prompt (1 = the last prefilled slot) or indices from its start:
/// the token-position analysis.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/selection.hpp"
#include "mechlens/interventions/align.hpp"
#include "mechlens/interventions/kv_splice.hpp"
#include "mechlens/interventions/patch.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/rotary.hpp"

namespace mechlens {

struct RowSpliceOptions {
  std::optional<LayerRange> layers;  ///< default: all
  Align align = Align::Exact;  ///< interventions/align.hpp; rows of different lengths need Left or Right
  /// Copy only target slots at these distances from the row's end (1 = last prefilled slot);
  /// empty = every aligned slot.
  std::vector<int64_t> from_end;
  /// Copy only target slots at these indices from the row's start (0 = first prompt token);
  /// combined with from_end by union. Empty (both) = every aligned slot.
  std::vector<int64_t> from_start;
  bool rerotate = false;
  std::optional<RopeConfig> rope;  ///< needed by rerotate
};

/// Real (non-padding) slots of each row of a left-padded cache.
inline std::vector<int64_t> real_lengths(const KVCache& cache) {
  std::vector<int64_t> out;
  if (cache.length() == 0) return std::vector<int64_t>(static_cast<size_t>(cache.batch()), 0);
  at::Tensor counts = cache.valid().to(at::kLong).sum(1).cpu();
  for (int64_t r = 0; r < cache.batch(); ++r) out.push_back(counts[r].item<int64_t>());
  return out;
}

/// The (target slot, source slot) storage indices row r copies.
inline std::vector<std::pair<int64_t, int64_t>> row_splice_slots(int64_t target_len, int64_t n_target,
                                                                 int64_t source_len, int64_t n_source,
                                                                 const RowSpliceOptions& opt, int64_t row) {
  MECHLENS_CHECK(n_target == n_source || opt.align != Align::Exact, ArgumentError,
                 "KV splice, row {}: the source prompt has {} prefilled slots and the target {}; prompts of different "
                 "lengths need an alignment (left or right)",
                 row, n_source, n_target);
  SpliceOptions so;
  so.align = opt.align == Align::Exact ? Align::Left : opt.align;
  auto pairs = splice_slot_pairs(n_target, n_source, so);
  if (!opt.from_end.empty() || !opt.from_start.empty()) {
    std::vector<bool> want(static_cast<size_t>(n_target), false);
    for (int64_t k : opt.from_end) {
      MECHLENS_CHECK(k >= 1, ArgumentError, "KV splice: distance from the end {} must be >= 1", k);
      // A prompt shorter than k has no such slot: nothing to copy for it (counted by the caller).
      if (k <= n_target) want[static_cast<size_t>(n_target - k)] = true;
    }
    for (int64_t k : opt.from_start) {
      MECHLENS_CHECK(k >= 0, ArgumentError, "KV splice: index from the start {} must be >= 0", k);
      if (k < n_target) want[static_cast<size_t>(k)] = true;
    }
    std::vector<std::pair<int64_t, int64_t>> kept;
    for (const auto& p : pairs)
      if (want[static_cast<size_t>(p.first)]) kept.push_back(p);
    pairs = std::move(kept);
  }
  for (auto& [t, s] : pairs) {
    t += target_len - n_target;  // left padding comes first
    s += source_len - n_source;
  }
  return pairs;
}

/// Splices `source` into `target` row by row (see the file comment). Returns, per target row, the
/// number of slots copied.
inline std::vector<int64_t> splice_kv_rows(KVCache& target, const KVCache& source, const RowSpliceOptions& opt = {}) {
  at::NoGradGuard no_grad;
  mechlens::detail::check_splice_caches(target, source);
  MECHLENS_CHECK(!opt.rerotate || opt.rope.has_value(), ArgumentError, "KV splice: rerotate needs the model's rope configuration");
  const LayerRange layers = opt.layers.value_or(LayerRange{0, target.n_layers()});
  layers.check(target.n_layers(), "KV splice layers");
  const auto nt = real_lengths(target), ns = real_lengths(source);
  at::Tensor t_pos = target.positions().cpu(), s_pos = source.positions().cpu();
  std::vector<int64_t> copied;
  for (int64_t r = 0; r < target.batch(); ++r) {
    const int64_t rs = source.batch() == 1 ? 0 : r;
    auto pairs = row_splice_slots(target.length(), nt[static_cast<size_t>(r)], source.length(),
                                  ns[static_cast<size_t>(rs)], opt, r);
    copied.push_back(static_cast<int64_t>(pairs.size()));
    if (pairs.empty()) continue;
    std::vector<int64_t> ti, si;
    for (auto [t, s] : pairs) ti.push_back(t), si.push_back(s);
    auto idx = at::TensorOptions().dtype(at::kLong);
    at::Tensor t_idx = at::tensor(ti, idx).to(target.device()), s_idx = at::tensor(si, idx).to(source.device());
    at::Tensor delta;  // [1, m] on the host, for rerotate
    if (opt.rerotate)
      delta = (t_pos[r].index_select(0, at::tensor(ti, idx)) - s_pos[rs].index_select(0, at::tensor(si, idx))).view({1, -1});
    // Span by span where either cache's layers change device (a model split over devices).
    for (auto [first, count] : target.spans(layers.begin, layers.size()))
      for (auto [f, c] : source.spans(first, count))
        for (int which = 0; which < 2; ++which) {
          const at::Tensor src_store = which == 0 ? source.key_storage(f, c) : source.value_storage(f, c);
          at::Tensor dst_store = which == 0 ? target.key_storage(f, c) : target.value_storage(f, c);
          // [layers, kv, m, d]
          at::Tensor moved = src_store.select(1, rs).index_select(2, s_idx.to(src_store.device()))
                                 .to(dst_store.device(), dst_store.scalar_type());
          if (which == 0 && opt.rerotate) moved = rerotate_keys(moved.unsqueeze(1), delta, *opt.rope).squeeze(1);
          dst_store.select(1, r).index_copy_(2, t_idx.to(dst_store.device()), moved.contiguous());
        }
  }
  return copied;
}

}  // namespace mechlens
