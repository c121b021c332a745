#pragma once
/// \file
/// Attribution patching (Nanda 2023; Syed et al. 2023; AtP*, Kramár et al. 2024): the estimated
/// effect of patching the source's activation into the target at every selected site at once,
/// from one forward of the source, one forward of the target and one backward:
///
///   effect(site) ≈ (a_source − a_target) · ∂metric/∂a_target
///
/// summed over the site's feature dimension (d_model, d_head or d_mlp), so a site is one
/// (hook, position) — or one (hook, position, head) for per-head hooks.
///
///   mechlens::AttributionOptions o;
///   o.sites = {"blocks.*.hook_resid_pre", "blocks.*.attn.hook_z"};
///   auto a = mechlens::attribution_patch(*model, target_ids, source_ids,
///                                        mechlens::logit_difference(good, bad), o);
///   a.estimates.at("blocks.3.attn.hook_z");   // [batch, pos, heads]
///
/// Query and key sites (attn.hook_q, hook_k, hook_rot_q, hook_rot_k) take AtP*'s recomputed
/// softmax by default (attribution/attention_correction.hpp): the pattern of the patched query's
/// row, or of every row reading the patched key, is recomputed exactly and its change taken
/// through ∂metric/∂pattern — the plain gradient is poor there because the softmax saturates.
/// Every other estimate is the plain first-order one. GradDrop (AtP*'s second correction) is not
/// offered. docs/attribution.md says which estimate a number is and where first order fails.
///
/// Source and target are [batch, pos] token ids without padding; the source has batch 1 or the
/// target's. Positions line up as patches align them (Align: exact needs equal lengths; left /
/// right pair the first / last m); target positions without a source position get 0.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/attribution/attention_correction.hpp"
#include "mechlens/attribution/gradients.hpp"
#include "mechlens/attribution/metric.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/hook_layout.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/interventions/align.hpp"
#include "mechlens/interventions/kv_splice.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

struct AttributionOptions {
  /// Hook names or globs of the sites (as CacheOptions::names); at least one.
  std::vector<std::string> sites;
  /// How source positions line up with the target's.
  Align align = Align::Exact;
  /// AtP*'s recomputed softmax for query and key sites; false: the plain gradient estimate there.
  bool recompute_attention = true;
};

struct Attribution {
  /// Per hook name: the estimated change of the metric from patching each site, float32:
  /// [batch, pos] for residual-stream and MLP hooks, [batch, pos, heads] for per-head hooks
  /// (q, k, v, rot_q, rot_k, z, result), [batch, heads, pos, key_pos] for attn_scores and pattern
  /// (one entry each).
  std::map<std::string, at::Tensor> estimates;
  /// The metric on the target and on the source (scalars).
  at::Tensor metric_target, metric_source;
  /// [pos] bool: the target positions that have a source position under the alignment.
  at::Tensor aligned;
};

namespace detail {

/// The query-site correction: each query row i of each head replaced by its patched query, the
/// row's softmax recomputed over the same allowed keys. Returns [b, h, n] (float32).
///   q, patched [b, h, n, d]; keys [b, kv, K, d]; allowed [b or 1, 1 or h, n, K] bool;
///   pattern, grad [b, h, n, K]
inline at::Tensor query_softmax_correction(const at::Tensor& q, const at::Tensor& patched, const at::Tensor& keys,
                                           const at::Tensor& allowed, const at::Tensor& pattern, const at::Tensor& grad) {
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3), kv = keys.size(1), K = keys.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor qg = patched.to(at::kFloat).reshape({b, kv, h / kv, n, d});
  at::Tensor scores = (at::matmul(qg, keys.to(at::kFloat).unsqueeze(2).transpose(-1, -2)) * scale).reshape({b, h, n, K});
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor a_new = at::softmax(scores, -1);
  return ((a_new - pattern.to(at::kFloat)) * grad.to(at::kFloat)).sum(-1);
}

/// The source activation placed at the target's positions along `pos_dim` (the target's own
/// value where no source position lines up), broadcast over the target's batch.
inline at::Tensor aligned_source(const at::Tensor& target, const at::Tensor& source, int64_t pos_dim, Align align,
                                 const std::string& hook) {
  const int64_t nt = target.size(pos_dim), ns = source.size(pos_dim);
  MECHLENS_CHECK(nt == ns || align != Align::Exact, ArgumentError,
                 "attribution_patch: at '{}' the source has {} positions and the target {}; prompts of different "
                 "lengths need an alignment (left, right)",
                 hook, ns, nt);
  const int64_t m = std::min(nt, ns);
  const int64_t t0 = align == Align::Right ? nt - m : 0, s0 = align == Align::Right ? ns - m : 0;
  at::Tensor src = source.to(target.device(), target.scalar_type());
  if (src.size(0) != target.size(0)) {
    auto shape = src.sizes().vec();
    shape[0] = target.size(0);
    src = src.expand(shape);
  }
  at::Tensor out = target.clone();
  out.narrow(pos_dim, t0, m).copy_(src.narrow(pos_dim, s0, m));
  return out;
}

}  // namespace detail

/// The estimates of patching `source_ids`' activations into `target_ids`' at every site of
/// options.sites (see the file comment).
inline Attribution attribution_patch(ModelImpl& model, const at::Tensor& target_ids, const at::Tensor& source_ids,
                                     const Metric& metric, const AttributionOptions& options) {
  MECHLENS_CHECK(!options.sites.empty(), ArgumentError, "attribution_patch: no sites given (AttributionOptions::sites)");
  MECHLENS_CHECK(target_ids.dim() == 2 && source_ids.dim() == 2, ShapeError,
                 "attribution_patch: ids have shapes {} (target) and {} (source), expected [batch, pos]",
                 shape_str(target_ids.sizes()), shape_str(source_ids.sizes()));
  MECHLENS_CHECK(source_ids.size(0) == 1 || source_ids.size(0) == target_ids.size(0), ShapeError,
                 "attribution_patch: the source has batch {}, the target {} (expected 1 or {})", source_ids.size(0),
                 target_ids.size(0), target_ids.size(0));
  // The selected hook points, and the attention of each layer with a query or key site.
  CacheOptions site_opts;
  site_opts.names = options.sites;
  std::vector<std::string> names;
  for (const auto& pattern : options.sites)
    for (HookPoint* p : model.hooks().select(pattern))
      if (std::find(names.begin(), names.end(), p->name()) == names.end()) names.push_back(p->name());
  auto is_qk = [](const std::string& n) {
    return detail::ends_with(n, "attn.hook_q") || detail::ends_with(n, "attn.hook_k") ||
           detail::ends_with(n, "attn.hook_rot_q") || detail::ends_with(n, "attn.hook_rot_k");
  };
  std::vector<int64_t> qk_layers;
  if (options.recompute_attention)
    for (const auto& n : names)
      if (is_qk(n)) {
        const int64_t l = model.hooks().at(n).layer();
        if (std::find(qk_layers.begin(), qk_layers.end(), l) == qk_layers.end()) qk_layers.push_back(l);
      }
  CacheOptions src_opts = site_opts, tgt_opts = site_opts;
  for (int64_t l : qk_layers) {
    src_opts.names.push_back(hook_name(l, "attn.hook_rot_q"));
    src_opts.names.push_back(hook_name(l, "attn.hook_rot_k"));
    for (const char* s : {"attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_pattern", "attn.hook_attn_scores"})
      tgt_opts.names.push_back(hook_name(l, s));
  }

  Attribution out;
  ActivationCache src;
  {
    at::NoGradGuard no_grad;
    auto [logits, cache] = model.run_with_cache(source_ids, src_opts);
    out.metric_source = metric(logits).detach();
    src = cache;
  }
  GradientRun tgt = run_with_gradients(model, target_ids, metric, tgt_opts);
  out.metric_target = tgt.metric;

  at::NoGradGuard no_grad;
  const int64_t nt = target_ids.size(1), ns = source_ids.size(1);
  {
    MECHLENS_CHECK(nt == ns || options.align != Align::Exact, ArgumentError,
                   "attribution_patch: the source has {} positions and the target {}; prompts of different lengths "
                   "need an alignment (left, right)",
                   ns, nt);
    const int64_t m = std::min(nt, ns), t0 = options.align == Align::Right ? nt - m : 0;
    out.aligned = at::zeros({nt}, at::TensorOptions().dtype(at::kBool));
    out.aligned.narrow(0, t0, m).fill_(true);
  }
  const at::Tensor keep = out.aligned.to(at::kFloat);
  // Target position t's source position (for re-rotating keys / queries patched before rotary).
  at::Tensor shift;  // [b, nt] target position − source position
  if (options.align == Align::Right && nt != ns)
    shift = at::full({target_ids.size(0), nt}, nt - ns, at::TensorOptions().dtype(at::kLong));

  for (const auto& name : names) {
    const HookPoint& point = model.hooks().at(name);
    const HookLayout layout = hook_layout(point);
    MECHLENS_CHECK(layout.pos_dim >= 0, ArgumentError, "attribution_patch: hook '{}' has no position dimension", name);
    const at::Tensor a_t = tgt.activations.get(name), g = tgt.gradients.get(name), a_s = src.get(name);
    at::Tensor patched = detail::aligned_source(a_t, a_s, layout.pos_dim, options.align, name);
    const bool elementwise = layout.key_pos_dim >= 0;
    at::Tensor est;
    if (options.recompute_attention && is_qk(name)) {
      const int64_t l = point.layer();
      const bool rotated = detail::ends_with(name, "hook_rot_q") || detail::ends_with(name, "hook_rot_k");
      const bool query = detail::ends_with(name, "hook_q") || detail::ends_with(name, "hook_rot_q");
      const std::string which = query ? "attn.hook_rot_q" : "attn.hook_rot_k";
      // The patched rotated value: the source's rotated one, re-rotated to the target's position
      // when the site is before rotary and the positions differ.
      const at::Tensor own = tgt.activations.get(hook_name(l, which));
      at::Tensor patched_rot = detail::aligned_source(own, src.get(hook_name(l, which)), 1, options.align, name);
      if (!rotated && shift.defined()) {
        at::Tensor five = patched_rot.permute({0, 2, 1, 3}).unsqueeze(0);  // [1, b, heads, pos, d]
        patched_rot = rerotate_keys(five, shift.to(five.device()), model.config().rope).squeeze(0).permute({0, 2, 1, 3});
        // Positions without a source keep the target's own value.
        patched_rot = at::where(out.aligned.to(own.device()).view({1, nt, 1, 1}), patched_rot, own);
      }
      const at::Tensor q = tgt.activations.get(hook_name(l, "attn.hook_rot_q")).transpose(1, 2);  // [b, h, n, d]
      const at::Tensor k = tgt.activations.get(hook_name(l, "attn.hook_rot_k")).transpose(1, 2);  // [b, kv, n, d]
      const at::Tensor pattern = tgt.activations.get(hook_name(l, "attn.hook_pattern"));
      const at::Tensor pattern_grad = tgt.gradients.get(hook_name(l, "attn.hook_pattern"));
      if (query) {
        const at::Tensor allowed = tgt.activations.get(hook_name(l, "attn.hook_attn_scores")).isneginf().logical_not();
        est = detail::query_softmax_correction(q, patched_rot.transpose(1, 2), k, allowed, pattern, pattern_grad)
                  .transpose(1, 2);  // [b, n, h]
      } else {
        est = detail::key_softmax_correction(q, k, patched_rot.transpose(1, 2), pattern, pattern_grad).transpose(1, 2);
      }
    } else {
      at::Tensor diff = patched.to(at::kFloat) - a_t.to(at::kFloat);
      if (detail::ends_with(name, "hook_attn_scores")) diff = diff.nan_to_num(0.0, 0.0, 0.0);  // -inf − -inf
      est = diff * g.to(at::kFloat);
      if (!elementwise) est = est.sum(-1);
    }
    // Unaligned target positions: no patch, no effect.
    std::vector<int64_t> view(static_cast<size_t>(est.dim()), 1);
    view[static_cast<size_t>(layout.pos_dim)] = nt;
    out.estimates[name] = est * keep.to(est.device()).view(view);
  }
  return out;
}

}  // namespace mechlens
