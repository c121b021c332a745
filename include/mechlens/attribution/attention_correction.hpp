#pragma once
/// \file
/// AtP*'s first correction (Kramár et al. 2024): a key changes the attention scores of every query
/// that reads it, and the softmax turns that into a change of the whole pattern row, far from
/// linear when a score moves a lot. Instead of the gradient through the key, the pattern is
/// recomputed with the one patched key and the change of the pattern is taken through the
/// gradient of the metric with respect to the pattern:
///
///   Δ(key j) = Σ_queries i Σ_keys k (a'_ik − a_ik) ∂M/∂a_ik
///
/// with a' the softmax of the row where only key j's score is the patched one. Exact when the
/// metric is linear in the pattern (then only the softmax is nonlinear); first order beyond that.
/// One key's patched row in closed form, for every key at once: with t_ij = a_ij·exp(s'_ij − s_ij)
/// (the patched key's unnormalised weight), c_ij = 1 − a_ij + t_ij (the new normaliser over the
/// old) and G_i = Σ_k a_ik g_ik,
///
///   Σ_k a'_ik g_ik = (G_i − a_ij g_ij + t_ij g_ij) / c_ij.

#include <cmath>
#include <limits>
#include <cstdint>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"

namespace mechlens::detail {

/// The corrected estimate of replacing each of the first J keys, one at a time.
///   q        [b, h, n, d]  the queries (after rotary) of the forward
///   keys     [b, kv, J, d] the keys it attended to (after rotary), columns 0..J-1 of the pattern
///   patched  [b, kv, J, d] the keys that would replace them
///   pattern  [b, h, n, K]  the attention probabilities (K >= J)
///   grad     [b, h, n, K]  d metric / d pattern
/// Returns [b, kv, J] (float32): summed over the queries and the query heads of each KV head.
inline at::Tensor key_softmax_correction(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& patched,
                                         const at::Tensor& pattern, const at::Tensor& grad) {
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3);
  const int64_t kv = keys.size(1), J = keys.size(2);
  MECHLENS_CHECK(keys.sizes() == patched.sizes() && keys.size(0) == b && keys.size(3) == d && h % kv == 0 &&
                     pattern.dim() == 4 && pattern.size(0) == b && pattern.size(1) == h && pattern.size(2) == n &&
                     pattern.size(3) >= J && grad.sizes() == pattern.sizes(),
                 ShapeError, "key_softmax_correction: q {}, keys {}, patched {}, pattern {}, grad {} do not fit",
                 shape_str(q.sizes()), shape_str(keys.sizes()), shape_str(patched.sizes()), shape_str(pattern.sizes()),
                 shape_str(grad.sizes()));
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor qg = q.to(at::kFloat).reshape({b, kv, h / kv, n, d});
  // s' − s for every (query, key): q · (k' − k) / √d, [b, kv, g, n, J]
  at::Tensor shift = at::matmul(qg, (patched.to(at::kFloat) - keys.to(at::kFloat)).unsqueeze(2).transpose(-1, -2)) * scale;
  at::Tensor a_all = pattern.to(at::kFloat).reshape({b, kv, h / kv, n, -1});
  at::Tensor g_all = grad.to(at::kFloat).reshape({b, kv, h / kv, n, -1});
  at::Tensor a = a_all.narrow(-1, 0, J), g = g_all.narrow(-1, 0, J);
  at::Tensor G = (a_all * g_all).sum(-1, /*keepdim=*/true);  // [b, kv, g, n, 1]
  // In logs, so that a large score shift cannot overflow: log t = shift + log a (−inf where a is
  // 0: masked keys stay masked), log c = log(1 − a + t).
  const at::Tensor neg_inf = at::full({}, -std::numeric_limits<float>::infinity(), a.options());
  at::Tensor log_t = at::where(a > 0, shift + at::log(a), neg_inf);
  at::Tensor log_c = at::logaddexp(at::log1p(-a.clamp_max(1.0)), log_t);
  at::Tensor delta = (G - a * g) * at::exp(-log_c) + g * at::exp(log_t - log_c) - G;  // [b, kv, g, n, J]
  return delta.sum({2, 3});
}

}  // namespace mechlens::detail
