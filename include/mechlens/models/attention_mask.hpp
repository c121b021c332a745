#pragma once
/// \file
/// Attention masks from positions, not from indices: query q sees key slot k when the slot holds
/// a real token, its position is not after q's, and (with a sliding window W) q − k < W, as
/// transformers' sliding-window mask defines it. Spliced, prefixed and left-padded caches are
/// therefore masked by what they hold.

#include <limits>
#include <optional>

#include <ATen/ATen.h>

namespace mechlens {

/// Boolean mask [batch, 1, queries, keys], true = attend.
///  q_pos [batch, queries], k_pos [batch, keys] (int64); k_valid [batch, keys] (bool, undefined =
///  all real); q_live [batch, queries] (undefined = all real). A padding query would see nothing
///  and give NaN; it is allowed to see every key instead (its output is never used).
inline at::Tensor make_attention_mask(const at::Tensor& q_pos, const at::Tensor& q_live, const at::Tensor& k_pos,
                                      const at::Tensor& k_valid, std::optional<int64_t> window) {
  at::Tensor q = q_pos.unsqueeze(-1);  // [b, q, 1]
  at::Tensor k = k_pos.unsqueeze(1);   // [b, 1, k]
  at::Tensor mask = k <= q;
  if (window) mask = mask.logical_and(q - k < *window);
  if (k_valid.defined()) mask = mask.logical_and(k_valid.unsqueeze(1));
  if (q_live.defined()) mask = mask.logical_or(q_live.logical_not().unsqueeze(-1));
  return mask.unsqueeze(1);
}

/// A mask as the layers consume it, made once per forward and shared by every layer.
struct AttentionMask {
  /// Boolean [batch, 1, queries, keys], true = attend; undefined = plain causal attention over
  /// exactly the new tokens.
  at::Tensor allowed;
  /// The same as an additive bias (0 / -inf) in the activation dtype, for the fused attention of
  /// LibTorch 2.x, which would otherwise convert `allowed` in every layer. Undefined when
  /// `allowed` is, or where it is not needed.
  at::Tensor bias;

  bool defined() const { return allowed.defined(); }

  /// Wraps a boolean mask; with `bias_dtype`, also makes its additive form.
  static AttentionMask from(const at::Tensor& allowed, std::optional<at::ScalarType> bias_dtype = std::nullopt) {
    AttentionMask m;
    m.allowed = allowed;
    if (allowed.defined() && bias_dtype)
      m.bias = at::zeros(allowed.sizes(), allowed.options().dtype(*bias_dtype))
                   .masked_fill_(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    return m;
  }
};

}  // namespace mechlens
