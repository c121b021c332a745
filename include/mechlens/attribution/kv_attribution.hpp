#pragma once
/// \file
/// Attribution over the KV cache: for a prefilled target prompt and a source cache, the
/// first-order estimate of splicing each (layer, KV head, slot) — its key, its value, or both —
/// from one forward and one backward, instead of one generation per splice.
///
///   auto target = mechlens::prefill(*model, target_ids, 0);
///   auto source = mechlens::prefill(*model, source_ids, 0);
///   mechlens::KVAttributionOptions o;
///   o.splice.align = mechlens::Align::Right;             // as splice_kv aligns, with its errors
///   auto a = mechlens::kv_attribution(*model, target, source.cache, mechlens::token_logprob(tok), o);
///   // a.both[L][row][head][slot]: the estimated change of the metric from splicing that entry
///
/// The metric reads the logits of one forward over the pending token and, when given, a
/// teacher-forced continuation after it (continuation_logprob scores a whole generation), with the
/// target's cache as it is: d metric / d cache entry comes from that forward's backward
/// (KVCache::track_gradients). The estimate of splicing entry e is (source_e − target_e) ·
/// ∂metric/∂target_e, summed over d_head:
///
///   - values: attention is linear in them, so a value's estimate is exact when the metric is linear
///     in the attention output of its layer, first order beyond;
///   - keys: with `recompute_attention` (default) AtP*'s correction — the pattern of each query is
///     recomputed with the one spliced key, and its change taken through ∂metric/∂pattern
///     (attribution/attention_correction.hpp) — else the plain gradient estimate (`keys_linear`
///     holds it either way);
///   - both: keys + values, the sum of the two separate estimates.
///
/// A splice of many entries at once is estimated by the sum of theirs (first order: interactions
/// are not counted). Target slots without a source slot under the alignment get 0 (`spliced`
/// says which have one). Left-padded batches (prefill of prompts of different lengths) are
/// aligned row by row on their real tokens, as splice_kv_rows aligns them, so each row gets what
/// it would get alone. docs/attribution.md explains the method and its limits.

#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/attribution/attention_correction.hpp"
#include "mechlens/attribution/gradients.hpp"
#include "mechlens/attribution/metric.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/generation/prompt_state.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/interventions/kv_splice.hpp"
#include "mechlens/interventions/kv_splice_rows.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

struct KVAttributionOptions {
  /// How the source's slots line up with the target's: align, slot_map, rerotate (+ rope), as
  /// splice_kv takes them. Its layers, kv_heads and slots are not used: every entry is estimated.
  SpliceOptions splice;
  /// Tokens teacher-forced after the pending one, [batch, c] or [c] int64; undefined: the forward
  /// runs over the pending token alone (the metric sees the first generated token's logits).
  at::Tensor continuation;
  /// AtP*'s recomputed softmax for keys (see the file comment); false: the plain gradient estimate.
  bool recompute_attention = true;
  /// Let the teacher-forced forward run past the model's context (as ForwardOptions).
  bool allow_long_context = false;
};

struct KVAttribution {
  /// [layers, batch, kv_heads, slots] (float32): the estimated change of the metric from splicing
  /// one entry's key (AtP*-corrected unless recompute_attention was false), its value, or both.
  at::Tensor keys, values, both;
  /// The plain first-order estimate for keys, (k_source − k_target) · ∂metric/∂k.
  at::Tensor keys_linear;
  /// [layers, batch, kv_heads, slots, d_head]: ∂metric/∂ cache keys (after rotary) and values, in
  /// the model's dtype.
  at::Tensor key_gradients, value_gradients;
  /// [batch, slots] bool: the target slots that have a source slot under the alignment (false
  /// for left padding).
  at::Tensor spliced;
  /// The metric's value on the target (unspliced), a scalar.
  at::Tensor metric;
};

namespace detail {
/// The forward over the pending token (+ continuation) that a target state's metric reads.
inline ForwardOptions pending_forward_options(const PromptState& state, KVCache& cache, int64_t tokens,
                                              bool allow_long_context) {
  const int64_t b = state.batch();
  ForwardOptions opt;
  opt.cache = &cache;
  opt.positions = state.position.view({b, 1}) +
                  at::arange(tokens, at::TensorOptions().dtype(at::kLong).device(state.position.device())).view({1, tokens});
  opt.step = state.decoded + 1;
  const int64_t prompt_columns =
      state.prompt_columns >= 0 ? state.prompt_columns : state.cache.length() + 1 - state.decoded;
  opt.first_column = prompt_columns - 1 + state.decoded;
  opt.prompt_columns = prompt_columns;
  opt.allow_long_context = allow_long_context;
  return opt;
}

/// [batch, 1 + c] ids: each row's pending token, then the continuation.
inline at::Tensor pending_and_continuation(const PromptState& state, const at::Tensor& continuation, const char* who) {
  const int64_t b = state.batch();
  at::Tensor ids = state.pending.view({b, 1}).to(at::kLong);
  if (!continuation.defined()) return ids;
  MECHLENS_CHECK((continuation.dim() == 1 || continuation.dim() == 2) && continuation.size(-1) > 0 &&
                     (continuation.dim() == 1 || continuation.size(0) == b),
                 ShapeError, "{}: the continuation has shape {}, expected [{}, c] or [c] with c > 0", who,
                 shape_str(continuation.sizes()), b);
  at::Tensor cont = continuation.to(ids.device(), at::kLong);
  if (cont.dim() == 1) cont = cont.unsqueeze(0).expand({b, cont.size(0)});
  return at::cat({ids, cont}, 1);
}
}  // namespace detail

namespace detail {
/// The forward over the target's pending token (+ continuation) on a copy of its cache whose held
/// slots are autograd leaves, the metric, and the backward: returns the metric and leaves the
/// gradients in `cache` (key_gradients, value_gradients). `before_backward` runs between the
/// forward and the backward (kv_attribution stops its activation caches there).
inline at::Tensor pending_backward(ModelImpl& model, const PromptState& target, const Metric& metric,
                                   const at::Tensor& continuation, bool allow_long_context, const char* who,
                                   KVCache& cache, const std::function<void()>& before_backward = {}) {
  MECHLENS_CHECK(static_cast<bool>(metric), ArgumentError, "{}: no metric given", who);
  MECHLENS_CHECK(target.cache.defined() && target.cache.length() > 0, ArgumentError,
                 "{}: the target's cache holds no slots (a one-token prompt has nothing prefilled)", who);
  at::Tensor ids = pending_and_continuation(target, continuation, who);
  cache = target.cache.clone(target.cache.length() + ids.size(1));
  cache.track_gradients();
  at::AutoGradMode grad_mode(true);
  FrozenWeights frozen(model);
  ForwardOptions opt = pending_forward_options(target, cache, ids.size(1), allow_long_context);
  at::Tensor logits = model.forward(ids, opt);
  if (before_backward) before_backward();
  at::Tensor value = metric(logits);
  MECHLENS_CHECK(value.defined() && value.numel() == 1 && value.requires_grad(), ArgumentError,
                 "{}: the metric must return one value computed from the logits (got {} values{})", who,
                 value.defined() ? value.numel() : 0, value.defined() && !value.requires_grad() ? ", no gradient" : "");
  value.backward();
  return value.detach();
}
}  // namespace detail

/// ∂metric/∂(every key and value in the target's cache) for the forward described in the file
/// comment: returns {key gradients, value gradients, metric}, each gradient [layers, batch,
/// kv_heads, slots, d_head]. The target state is not changed.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> kv_gradients(ModelImpl& model, const PromptState& target,
                                                                   const Metric& metric,
                                                                   const at::Tensor& continuation = at::Tensor(),
                                                                   bool allow_long_context = false) {
  KVCache cache;
  at::Tensor value = detail::pending_backward(model, target, metric, continuation, allow_long_context, "kv_gradients", cache);
  return {cache.key_gradients(), cache.value_gradients(), value};
}

/// The estimates of splicing each entry of `source` into `target` (file comment). `source` is
/// a cache of the same model (batch 1 or the target's), aligned by options.splice.
inline KVAttribution kv_attribution(ModelImpl& model, const PromptState& target, const KVCache& source,
                                    const Metric& metric, const KVAttributionOptions& options = {}) {
  MECHLENS_CHECK(static_cast<bool>(metric), ArgumentError, "kv_attribution: no metric given");
  MECHLENS_CHECK(target.cache.defined() && target.cache.length() > 0, ArgumentError,
                 "kv_attribution: the target's cache holds no slots (a one-token prompt has nothing prefilled)");
  const int64_t n = target.cache.length(), L = target.cache.n_layers();
  // The aligned source entries, placed in the target's slots by the splice itself (its
  // alignment, re-rotation and errors).
  SpliceOptions so = options.splice;
  so.layers.reset();
  so.kv_heads = IndexSet::all();
  so.slots = Positions::all();
  if (so.rerotate && !so.rope) so.rope = model.config().rope;
  KVCache spliced = target.cache.clone();
  const int64_t b = target.batch();
  std::vector<uint8_t> has(static_cast<size_t>(b * n), 0);  // [row][slot]: has a source slot
  if (target.cache.has_padding() || source.has_padding()) {
    // Left-padded batches: each row aligned on its own real tokens (splice_kv_rows).
    MECHLENS_CHECK(so.slot_map.empty(), ArgumentError,
                   "kv_attribution: a slot map needs caches without padding (rows of different lengths are aligned "
                   "row by row by `align`)");
    RowSpliceOptions ro;
    ro.align = so.align;
    ro.rerotate = so.rerotate;
    ro.rope = so.rope;
    splice_kv_rows(spliced, source, ro);
    const auto nt = real_lengths(target.cache), ns = real_lengths(source);
    for (int64_t r = 0; r < b; ++r) {
      const int64_t rs = source.batch() == 1 ? 0 : r;
      for (auto [t, s] : row_splice_slots(n, nt[static_cast<size_t>(r)], source.length(), ns[static_cast<size_t>(rs)], ro, r))
        has[static_cast<size_t>(r * n + t)] = 1;
    }
  } else {
    splice_kv(spliced, source, so);
    for (auto [t, s] : splice_slot_pairs(n, source.length(), so))
      for (int64_t r = 0; r < b; ++r) has[static_cast<size_t>(r * n + t)] = 1;
  }

  KVCache cache;
  ActivationCache queries, patterns, pattern_grads;
  if (options.recompute_attention) {
    CacheOptions q_opts, p_opts;
    q_opts.names = {"blocks.*.attn.hook_rot_q"};
    p_opts.names = {"blocks.*.attn.hook_pattern"};
    queries = ActivationCache::attach(model.hooks(), q_opts);
    patterns = ActivationCache::attach(model.hooks(), p_opts);
    pattern_grads = ActivationCache::attach_gradients(model.hooks(), p_opts);
  }
  at::Tensor value;
  try {
    value = detail::pending_backward(model, target, metric, options.continuation, options.allow_long_context,
                                     "kv_attribution", cache, [&] {
                                       queries.detach();
                                       patterns.detach();
                                     });
  } catch (...) {
    queries.detach();
    patterns.detach();
    pattern_grads.detach();
    throw;
  }
  pattern_grads.detach();

  at::NoGradGuard no_grad;
  KVAttribution out;
  out.metric = value.detach();
  out.key_gradients = cache.key_gradients();
  out.value_gradients = cache.value_gradients();
  at::Tensor tk = target.cache.key_storage().narrow(3, 0, n), tv = target.cache.value_storage().narrow(3, 0, n);
  at::Tensor sk = spliced.key_storage().narrow(3, 0, n), sv = spliced.value_storage().narrow(3, 0, n);
  out.spliced = at::tensor(std::vector<int64_t>(has.begin(), has.end()), at::TensorOptions().dtype(at::kLong))
                    .to(at::kBool)
                    .view({b, n});
  at::Tensor mask = out.spliced.to(tk.device()).to(at::kFloat).view({1, b, 1, n});
  out.keys_linear = ((sk.to(at::kFloat) - tk.to(at::kFloat)) * out.key_gradients.to(at::kFloat)).sum(-1) * mask;
  out.values = ((sv.to(at::kFloat) - tv.to(at::kFloat)) * out.value_gradients.to(at::kFloat)).sum(-1) * mask;
  if (options.recompute_attention) {
    std::vector<at::Tensor> per_layer;
    for (int64_t l = 0; l < L; ++l) {
      at::Tensor q = queries.get(hook_name(l, "attn.hook_rot_q")).transpose(1, 2);  // [b, h, new, d]
      per_layer.push_back(detail::key_softmax_correction(q, tk.select(0, l), sk.select(0, l),
                                                         patterns.get(hook_name(l, "attn.hook_pattern")),
                                                         pattern_grads.get(hook_name(l, "attn.hook_pattern"))));
    }
    out.keys = at::stack(per_layer, 0) * mask;
  } else {
    out.keys = out.keys_linear;
  }
  out.both = out.keys + out.values;
  return out;
}

}  // namespace mechlens
