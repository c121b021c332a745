#pragma once
/// \file
/// Grouped-query self-attention of the Llama family, the readable path (as transformers'
/// LlamaAttention reads), with its hook points:
///   hook_q / hook_k / hook_v   projections before rotary, [batch, pos, heads, d_head]
///   hook_rot_q / hook_rot_k    after rotary
///   hook_attn_scores           [batch, heads, pos, key_pos], q kᵀ / √d_head before the softmax,
///                              -inf where a query may not attend (TransformerLens' convention)
///   hook_pattern               [batch, heads, pos, key_pos], the attention probabilities
///   hook_z                     [batch, pos, heads, d_head], the input of o_proj
///   hook_result                [batch, pos, heads, d_model], each head's share of o_proj's output
///                              (TransformerLens' use_attn_result)
/// Hooks fire in that order (TransformerLens'). hook_attn_scores and hook_pattern are computed
/// only when hooked (they force the explicit softmax path); hook_result only when hooked, and
/// then the attention output is the sum of the (possibly edited) results over heads — the same
/// numbers as o_proj up to the order of the sum, at the cost of a [batch, pos, heads, d_model]
/// tensor. Layers with no active hook run in the fast engine instead (models/fast_engine.hpp),
/// which is tested against this path.

#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/core/torch_compat.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/models/attention_mask.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/linear.hpp"
#include "mechlens/models/model_config.hpp"
#include "mechlens/models/rotary.hpp"

namespace mechlens {

/// softmax(q kᵀ / √d_head + mask) v for q [b, h, p, d] and keys / values [b, kv, key_pos, d]
/// (query heads grouped over the KV heads) -> [b, h, p, d]. `scores_hook` and `pattern_hook` (may
/// be null) see the masked scores and the pattern, [b, h, p, key_pos]; when one is active, or on
/// LibTorch < 2.5, the explicit path runs, otherwise LibTorch's fused scaled_dot_product_attention.
inline at::Tensor scaled_dot_product(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                     const AttentionMask& mask, HookPoint* pattern_hook = nullptr,
                                     HookPoint* scores_hook = nullptr) {
  const int64_t b = q.size(0), h = q.size(1), p = q.size(2), d = q.size(3), kv = keys.size(1), kp = keys.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
#if MECHLENS_TORCH_AT_LEAST(2, 5)
  if ((!pattern_hook || !pattern_hook->active()) && (!scores_hook || !scores_hook->active())) {
    if (mask.defined())
      return at::scaled_dot_product_attention(q, keys, values, mask.bias.defined() ? mask.bias : mask.allowed, 0.0,
                                              false, scale, h != kv);
    return at::scaled_dot_product_attention(q, keys, values, {}, 0.0, /*is_causal=*/true, scale, h != kv);
  }
#endif
  // Explicit path: query heads are grouped over their KV head by a view, not a copy.
  at::Tensor qg = q.reshape({b, kv, h / kv, p, d});
  // In half precision both products are summed in float32 and rounded once, as transformers'
  // (cuBLAS, LibTorch 2.x on the CPU) are; LibTorch 1.13's CPU batched matmul is not (a third of
  // hook_z's entries came out one bfloat16 unit off), so there the sum is made in float32 here.
  // The scale is applied after that rounding, as transformers does.
  const bool detour = (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf) &&
                      !compat::half_ops_round_once(q);
  auto product = [detour](const at::Tensor& x, const at::Tensor& y) {
    return detour ? at::matmul(x.to(at::kFloat), y.to(at::kFloat)).to(x.scalar_type()) : at::matmul(x, y);
  };
  at::Tensor scores = product(qg, keys.unsqueeze(2).transpose(-1, -2)) * scale;  // [b, kv, g, p, k]
  scores = scores.view({b, h, p, kp});
  at::Tensor allowed = mask.defined()
                           ? mask.allowed
                           : at::ones({p, kp}, at::TensorOptions().dtype(at::kBool).device(q.device())).tril(kp - p);
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  if (scores_hook) scores = (*scores_hook)(scores);  // [b, h, p, k]
  at::Tensor pattern = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  if (pattern_hook) pattern = (*pattern_hook)(pattern);  // [b, h, p, k]
  at::Tensor z = product(pattern.reshape({b, kv, h / kv, p, kp}), values.unsqueeze(2));  // [b, kv, g, p, d]
  return z.view({b, h, p, d});
}

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& cfg, int64_t layer, HookRegistry& hooks, const at::TensorOptions& options)
      : layer_(layer), n_heads_(cfg.n_heads()), n_kv_heads_(cfg.n_kv_heads()), d_head_(cfg.d_head()) {
    const int64_t d = cfg.d_model();
    q_proj_ = register_module("q_proj", Linear(d, n_heads_ * d_head_, cfg.attention_bias, options));
    k_proj_ = register_module("k_proj", Linear(d, n_kv_heads_ * d_head_, cfg.attention_bias, options));
    v_proj_ = register_module("v_proj", Linear(d, n_kv_heads_ * d_head_, cfg.attention_bias, options));
    o_proj_ = register_module("o_proj", Linear(n_heads_ * d_head_, d, false, options));
    const std::string p = hook_name(layer, "attn.");
    hook_q_ = &hooks.add_point(p + "hook_q", layer, {kDimBatch, kDimPos, n_heads_, d_head_});
    hook_k_ = &hooks.add_point(p + "hook_k", layer, {kDimBatch, kDimPos, n_kv_heads_, d_head_});
    hook_v_ = &hooks.add_point(p + "hook_v", layer, {kDimBatch, kDimPos, n_kv_heads_, d_head_});
    hook_rot_q_ = &hooks.add_point(p + "hook_rot_q", layer, {kDimBatch, kDimPos, n_heads_, d_head_});
    hook_rot_k_ = &hooks.add_point(p + "hook_rot_k", layer, {kDimBatch, kDimPos, n_kv_heads_, d_head_});
    hook_attn_scores_ = &hooks.add_point(p + "hook_attn_scores", layer, {kDimBatch, n_heads_, kDimPos, kDimKeyPos});
    hook_pattern_ = &hooks.add_point(p + "hook_pattern", layer, {kDimBatch, n_heads_, kDimPos, kDimKeyPos});
    hook_z_ = &hooks.add_point(p + "hook_z", layer, {kDimBatch, kDimPos, n_heads_, d_head_});
    hook_result_ = &hooks.add_point(p + "hook_result", layer, {kDimBatch, kDimPos, n_heads_, d});
  }

  /// x [batch, pos, d_model] -> the o_proj output [batch, pos, d_model].
  /// `mask.allowed` is [batch, 1, pos, key_pos] (true = attend), or undefined for plain causal
  /// attention over exactly these positions. With a cache, the new keys and values are appended
  /// to it first and attention covers every slot it holds. With `slot` ([1] int64 on the device:
  /// the static-shape step CUDA graphs capture, one token per row) they are written at that slot
  /// and attention covers the cache's whole capacity, `mask` ruling out the slots not filled.
  at::Tensor forward(const at::Tensor& x, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                     const at::Tensor& slot = {}) {
    const int64_t b = x.size(0), p = x.size(1);
    at::Tensor q = (*hook_q_)(q_proj_(x).view({b, p, n_heads_, d_head_}));     // [b, p, h, d]
    at::Tensor k = (*hook_k_)(k_proj_(x).view({b, p, n_kv_heads_, d_head_}));  // [b, p, kv, d]
    at::Tensor v = (*hook_v_)(v_proj_(x).view({b, p, n_kv_heads_, d_head_}));  // [b, p, kv, d]
    q = (*hook_rot_q_)(apply_rotary(q, angles));
    k = (*hook_rot_k_)(apply_rotary(k, angles));

    at::Tensor keys = k.transpose(1, 2), values = v.transpose(1, 2);  // [b, kv, key_pos, d]
    if (cache && slot.defined())
      std::tie(keys, values) = cache->write_at(layer_, k, v, slot);  // the whole capacity
    else if (cache)
      std::tie(keys, values) = cache->write(layer_, k, v);  // every slot the cache holds
    at::Tensor z = scaled_dot_product(q.transpose(1, 2), keys, values, mask, hook_pattern_, hook_attn_scores_);
    z = (*hook_z_)(z.transpose(1, 2));  // [b, p, h, d]
    if (!hook_result_->active()) return o_proj_(z.reshape({b, p, n_heads_ * d_head_}));
    // Per head: z_h W_O[:, h]ᵀ, [b, p, h, d_model]; their sum over heads is o_proj's output.
    const at::Tensor& w = o_proj_->weight;  // [d_model, h * d_head]
    at::Tensor result = at::einsum("bphd,mhd->bphm", {z, w.view({w.size(0), n_heads_, d_head_})});
    result = (*hook_result_)(result);
    // Summed in float32 and rounded once, as o_proj's product is.
    at::Tensor out = result.sum(2, /*keepdim=*/false, at::kFloat).to(result.scalar_type());
    return o_proj_->bias.defined() ? out + o_proj_->bias : out;
  }

  int64_t layer() const { return layer_; }
  int64_t n_heads() const { return n_heads_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t d_head() const { return d_head_; }
  LinearImpl& q_proj() { return *q_proj_; }
  LinearImpl& k_proj() { return *k_proj_; }
  LinearImpl& v_proj() { return *v_proj_; }
  LinearImpl& o_proj() { return *o_proj_; }

  /// Whether any of this attention's hook points has a hook attached.
  bool any_hook_active() const {
    for (const HookPoint* h :
         {hook_q_, hook_k_, hook_v_, hook_rot_q_, hook_rot_k_, hook_attn_scores_, hook_pattern_, hook_z_, hook_result_})
      if (h->active()) return true;
    return false;
  }

 private:
  int64_t layer_, n_heads_, n_kv_heads_, d_head_;
  Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  HookPoint *hook_q_, *hook_k_, *hook_v_, *hook_rot_q_, *hook_rot_k_, *hook_attn_scores_, *hook_pattern_, *hook_z_,
      *hook_result_;
};
TORCH_MODULE(Attention);

}  // namespace mechlens
