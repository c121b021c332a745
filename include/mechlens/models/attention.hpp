#pragma once
/// \file
/// Grouped-query self-attention of the Llama family with its hook points:
/// hook_q / hook_k / hook_v (projections before rotary, [batch, pos, heads, d_head]),
/// hook_rot_q / hook_rot_k (after rotary), hook_pattern ([batch, heads, pos, key_pos], only
/// computed when hooked: it forces the explicit path), hook_z ([batch, pos, heads, d_head], the
/// input of o_proj). On LibTorch 2.x the fused scaled_dot_product_attention runs whenever no hook
/// needs the pattern; LibTorch 1.13 always takes the explicit path.

#include <cmath>
#include <limits>
#include <tuple>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/core/torch_compat.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/kernels/fused_ops.hpp"
#include "mechlens/models/attention_mask.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/linear.hpp"
#include "mechlens/models/model_config.hpp"
#include "mechlens/models/rotary.hpp"

namespace mechlens {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& cfg, int64_t layer, HookRegistry& hooks, const at::TensorOptions& options)
      : layer_(layer), n_heads_(cfg.n_heads()), n_kv_heads_(cfg.n_kv_heads()), d_head_(cfg.d_head()) {
    const int64_t d = cfg.d_model();
    q_proj_ = register_module("q_proj", Linear(d, n_heads_ * d_head_, cfg.attention_bias, options));
    k_proj_ = register_module("k_proj", Linear(d, n_kv_heads_ * d_head_, cfg.attention_bias, options));
    v_proj_ = register_module("v_proj", Linear(d, n_kv_heads_ * d_head_, cfg.attention_bias, options));
    o_proj_ = register_module("o_proj", Linear(n_heads_ * d_head_, d, false, options));
    const std::string p = "blocks." + std::to_string(layer) + ".attn.";
    hook_q_ = &hooks.add_point(p + "hook_q", layer, {kDimBatch, kDimPos, n_heads_, d_head_});
    hook_k_ = &hooks.add_point(p + "hook_k", layer, {kDimBatch, kDimPos, n_kv_heads_, d_head_});
    hook_v_ = &hooks.add_point(p + "hook_v", layer, {kDimBatch, kDimPos, n_kv_heads_, d_head_});
    hook_rot_q_ = &hooks.add_point(p + "hook_rot_q", layer, {kDimBatch, kDimPos, n_heads_, d_head_});
    hook_rot_k_ = &hooks.add_point(p + "hook_rot_k", layer, {kDimBatch, kDimPos, n_kv_heads_, d_head_});
    hook_pattern_ = &hooks.add_point(p + "hook_pattern", layer, {kDimBatch, n_heads_, kDimPos, kDimKeyPos});
    hook_z_ = &hooks.add_point(p + "hook_z", layer, {kDimBatch, kDimPos, n_heads_, d_head_});
  }

  /// x [batch, pos, d_model] -> [batch, pos, d_model] (the o_proj output).
  /// `mask.allowed` is [batch, 1, pos, key_pos] (true = attend) or undefined for plain causal attention
  /// over exactly these positions; with a cache, keys and values are appended to it first (at the
  /// device index `slot` with attention over the whole capacity when `slot` is defined: the
  /// static-shape step CUDA graphs capture).
  at::Tensor forward(const at::Tensor& x, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                     const at::Tensor& slot = {}) {
    const int64_t b = x.size(0), p = x.size(1);
    const int64_t nq = n_heads_ * d_head_, nk = n_kv_heads_ * d_head_;
    at::Tensor q, k, v;
    if (fused_step_applies(x, cache, slot))  // one decoding step on CUDA: rotary and the cache write in one kernel
      return o_proj_(step_from_qkv(kernels::linear(x, qkv_weight_), angles, mask, cache, slot));
    if (qkv_weight_.defined()) {
      // Hooks fire in one order on every path: q, k, v, rot_q, rot_k (TransformerLens' order).
      at::Tensor qkv = kernels::linear(x, qkv_weight_, qkv_bias_);  // [b, p, (h + 2 kv) * d], one GEMM
      if (!hook_q_->active() && !hook_k_->active()) {
        // q and k rotated together (their hooks are empty, so skipping them changes nothing).
        v = (*hook_v_)(qkv.narrow(-1, nq + nk, nk).view({b, p, n_kv_heads_, d_head_}));
        at::Tensor qk = apply_rotary(qkv.narrow(-1, 0, nq + nk).view({b, p, n_heads_ + n_kv_heads_, d_head_}), angles);
        q = (*hook_rot_q_)(qk.narrow(2, 0, n_heads_));
        k = (*hook_rot_k_)(qk.narrow(2, n_heads_, n_kv_heads_));
      } else {
        q = (*hook_q_)(qkv.narrow(-1, 0, nq).view({b, p, n_heads_, d_head_}));
        k = (*hook_k_)(qkv.narrow(-1, nq, nk).view({b, p, n_kv_heads_, d_head_}));
        v = (*hook_v_)(qkv.narrow(-1, nq + nk, nk).view({b, p, n_kv_heads_, d_head_}));
        q = (*hook_rot_q_)(apply_rotary(q, angles));
        k = (*hook_rot_k_)(apply_rotary(k, angles));
      }
    } else {
      q = (*hook_q_)(q_proj_(x).view({b, p, n_heads_, d_head_}));     // [b, p, h, d]
      k = (*hook_k_)(k_proj_(x).view({b, p, n_kv_heads_, d_head_}));  // [b, p, kv, d]
      v = (*hook_v_)(v_proj_(x).view({b, p, n_kv_heads_, d_head_}));  // [b, p, kv, d]
      q = (*hook_rot_q_)(apply_rotary(q, angles));
      k = (*hook_rot_k_)(apply_rotary(k, angles));
    }

    at::Tensor keys, values;  // [b, kv, key_pos, d]
    if (cache && slot.defined()) {
      std::tie(keys, values) = cache->write_at(layer_, k, v, slot);
    } else if (cache) {
      std::tie(keys, values) = cache->write(layer_, k, v);
    } else {
      keys = k.transpose(1, 2);
      values = v.transpose(1, 2);
    }
    at::Tensor z = attend(q.transpose(1, 2), keys, values, mask);  // [b, h, p, d]
    z = (*hook_z_)(z.transpose(1, 2));                            // [b, p, h, d]
    return o_proj_(z.reshape({b, p, n_heads_ * d_head_}));
  }

  int64_t layer() const { return layer_; }

  /// Whether x [b, 1, d_model] can take the fused decoding step (step_from_qkv): a static-shape
  /// step (cache and slot) on CUDA with the fused kernels, q/k/v fused without bias, and no hook on
  /// the projections (the fused kernel never writes the unrotated q and k they would see).
  bool fused_step_applies(const at::Tensor& x, KVCache* cache, const at::Tensor& slot) const {
    return cache && slot.defined() && qkv_weight_.defined() && !qkv_bias_.defined() && x.dim() == 3 &&
           x.size(1) == 1 && !projection_hooks_active() && kernels::fused_available(x);
  }

  /// One decoding step from the fused projection's output qkv [b, 1, (h + 2 kv) * d] (check
  /// fused_step_applies): rotary and the cache write at `slot` in one kernel, then attention over
  /// the cache -> z [b, 1, h * d] after hook_z, the input of o_proj.
  at::Tensor step_from_qkv(const at::Tensor& qkv, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                           const at::Tensor& slot) {
    const int64_t b = qkv.size(0);
    at::Tensor keys = cache->key_storage().select(0, layer_), values = cache->value_storage().select(0, layer_);
    at::Tensor q =
        kernels::rotary_write_kv(qkv, n_heads_, n_kv_heads_, angles.positions, angles.inv_freq, slot, keys, values);
    at::Tensor z = (*hook_z_)(attend(q.transpose(1, 2), keys, values, mask).transpose(1, 2));
    return z.reshape({b, 1, n_heads_ * d_head_});
  }

  /// The fused q/k/v weight [(h + 2 kv) * d, d_model] (undefined before fuse_projections) and
  /// o_proj's weight.
  const at::Tensor& qkv_weight() const { return qkv_weight_; }
  const at::Tensor& o_weight() const { return o_proj_->weight; }

  /// Inference speed-up: q/k/v weights become views of one [(h + 2 kv) * d, d_model] matrix so the
  /// three projections run as one GEMM. Parameters keep their names and shapes (in-place edits of
  /// them still act); the fused layer is for inference (autograd does not reach the views).
  void fuse_projections() {
    at::NoGradGuard no_grad;
    const int64_t nq = n_heads_ * d_head_, nk = n_kv_heads_ * d_head_;
    qkv_weight_ = at::cat({q_proj_->weight, k_proj_->weight, v_proj_->weight}, 0);
    q_proj_->weight.set_data(qkv_weight_.narrow(0, 0, nq));
    k_proj_->weight.set_data(qkv_weight_.narrow(0, nq, nk));
    v_proj_->weight.set_data(qkv_weight_.narrow(0, nq + nk, nk));
    if (q_proj_->bias.defined()) {
      qkv_bias_ = at::cat({q_proj_->bias, k_proj_->bias, v_proj_->bias}, 0);
      q_proj_->bias.set_data(qkv_bias_.narrow(0, 0, nq));
      k_proj_->bias.set_data(qkv_bias_.narrow(0, nq, nk));
      v_proj_->bias.set_data(qkv_bias_.narrow(0, nq + nk, nk));
    }
  }

 private:
  bool projection_hooks_active() const {
    return hook_q_->active() || hook_k_->active() || hook_v_->active() || hook_rot_q_->active() ||
           hook_rot_k_->active();
  }

  /// q [b, h, p, d], keys/values [b, kv, k, d] -> [b, h, p, d].
  at::Tensor attend(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const AttentionMask& mask) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(d_head_));
#if MECHLENS_TORCH_AT_LEAST(2, 5)
    if (!hook_pattern_->active()) {
      if (mask.defined())
        return at::scaled_dot_product_attention(q, keys, values, mask.bias.defined() ? mask.bias : mask.allowed, 0.0,
                                                false, scale, n_heads_ != n_kv_heads_);
      return at::scaled_dot_product_attention(q, keys, values, {}, 0.0, /*is_causal=*/true, scale,
                                              n_heads_ != n_kv_heads_);
    }
#endif
    // Explicit path: query heads are grouped over their KV head by a view, not a copy.
    const int64_t b = q.size(0), p = q.size(2), kp = keys.size(2), g = n_heads_ / n_kv_heads_;
    at::Tensor qg = q.reshape({b, n_kv_heads_, g, p, d_head_});
    const bool half = q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf;
    // In half precision both products are summed in float32 and rounded once, as a
    // float-accumulating GEMM (cuBLAS, LibTorch 2.x on the CPU, hence transformers) rounds;
    // LibTorch 1.13's CPU half-precision batched matmul does not (a third of hook_z's entries
    // came out one bfloat16 unit off). The scale is applied after that rounding, as transformers does.
    auto product = [half](const at::Tensor& a, const at::Tensor& b) {
      return half ? at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type()) : at::matmul(a, b);
    };
    at::Tensor scores = product(qg, keys.unsqueeze(2).transpose(-1, -2)) * scale;  // [b, kv, g, p, k]
    scores = scores.view({b, n_heads_, p, kp});
    at::Tensor allowed = mask.defined() ? mask.allowed : causal_mask(p, kp, q.device());
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    at::Tensor pattern = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    pattern = (*hook_pattern_)(pattern);  // [b, h, p, k]
    at::Tensor z = product(pattern.reshape({b, n_kv_heads_, g, p, kp}), values.unsqueeze(2));  // [b, kv, g, p, d]
    return z.view({b, n_heads_, p, d_head_});
  }

  static at::Tensor causal_mask(int64_t p, int64_t kp, at::Device device) {
    return at::ones({p, kp}, at::TensorOptions().dtype(at::kBool).device(device)).tril(kp - p);
  }

  int64_t layer_, n_heads_, n_kv_heads_, d_head_;
  Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  at::Tensor qkv_weight_, qkv_bias_;  // defined after fuse_projections()
  HookPoint *hook_q_, *hook_k_, *hook_v_, *hook_rot_q_, *hook_rot_k_, *hook_pattern_, *hook_z_;
};
TORCH_MODULE(Attention);

}  // namespace mechlens
