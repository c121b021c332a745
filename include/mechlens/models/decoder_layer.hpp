#pragma once
/// \file
/// One pre-norm decoder block with its residual-stream hook points: hook_resid_pre,
/// ln1.hook_normalized, hook_attn_out, hook_resid_mid, ln2.hook_normalized, hook_mlp_out,
/// hook_resid_post (all [batch, pos, d_model]).

#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/kernels/fused_ops.hpp"
#include "mechlens/models/attention.hpp"
#include "mechlens/models/mlp.hpp"
#include "mechlens/models/rms_norm.hpp"

namespace mechlens {

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, int64_t layer, HookRegistry& hooks, const at::TensorOptions& options) {
    const std::string p = "blocks." + std::to_string(layer) + ".";
    const std::vector<int64_t> resid{kDimBatch, kDimPos, cfg.d_model()};
    hook_resid_pre_ = &hooks.add_point(p + "hook_resid_pre", layer, resid);
    hook_ln1_ = &hooks.add_point(p + "ln1.hook_normalized", layer, resid);
    self_attn_ = register_module("self_attn", Attention(cfg, layer, hooks, options));
    hook_attn_out_ = &hooks.add_point(p + "hook_attn_out", layer, resid);
    hook_resid_mid_ = &hooks.add_point(p + "hook_resid_mid", layer, resid);
    hook_ln2_ = &hooks.add_point(p + "ln2.hook_normalized", layer, resid);
    mlp_ = register_module("mlp", Mlp(cfg, options));
    hook_mlp_out_ = &hooks.add_point(p + "hook_mlp_out", layer, resid);
    hook_resid_post_ = &hooks.add_point(p + "hook_resid_post", layer, resid);
    input_layernorm_ = register_module("input_layernorm", RMSNorm(cfg.d_model(), cfg.rms_norm_eps, options));
    post_attention_layernorm_ =
        register_module("post_attention_layernorm", RMSNorm(cfg.d_model(), cfg.rms_norm_eps, options));
  }

  /// resid [batch, pos, d_model] -> same.
  at::Tensor forward(at::Tensor resid, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                     const at::Tensor& slot = {}) {
    if (fused_step_applies(resid, cache, slot)) return fused_step(resid, angles, mask, cache, slot);
    resid = (*hook_resid_pre_)(std::move(resid));
    at::Tensor attn_out = (*hook_attn_out_)(self_attn_((*hook_ln1_)(input_layernorm_(resid)), angles, mask, cache, slot));
    at::Tensor normed;
    if (hook_resid_mid_->active()) {
      resid = (*hook_resid_mid_)(resid + attn_out);
      normed = post_attention_layernorm_(resid);
    } else {
      std::tie(resid, normed) = post_attention_layernorm_->add_forward(resid, attn_out);  // one kernel on CUDA
    }
    at::Tensor mlp_out = (*hook_mlp_out_)(mlp_((*hook_ln2_)(normed)));
    return (*hook_resid_post_)(resid + mlp_out);
  }

  void fuse_projections() {
    self_attn_->fuse_projections();
    mlp_->fuse_projections();
  }

 private:
  /// Whether resid [1, 1, d_model] takes fused_step: one static-shape decoding step of batch 1 on
  /// CUDA (Attention::fused_step_applies), projections fused, matrices the matrix-vector kernels
  /// can stream, and no hook of the layer active (the fused step never makes the normed inputs,
  /// the attention and MLP outputs or resid_mid those hooks would see).
  bool fused_step_applies(const at::Tensor& resid, KVCache* cache, const at::Tensor& slot) const {
    if (resid.dim() != 3 || resid.size(0) != 1 || resid.size(1) != 1 || !resid.is_contiguous()) return false;
    for (const HookPoint* h : {hook_resid_pre_, hook_ln1_, hook_attn_out_, hook_resid_mid_, hook_ln2_, hook_mlp_out_,
                               hook_resid_post_})
      if (h->active()) return false;
    return self_attn_->fused_step_applies(resid, cache, slot) &&
           kernels::rms_norm_matvec_applies(resid, input_layernorm_->weight, self_attn_->qkv_weight()) &&
           kernels::matvec_weight_fits(self_attn_->o_weight(), resid) &&
           kernels::rms_norm_matvec_applies(resid, post_attention_layernorm_->weight, mlp_->gate_up_weight()) &&
           kernels::matvec_weight_fits(mlp_->down_weight(), resid) && self_attn_->o_weight().size(0) == resid.size(2) &&
           mlp_->down_weight().size(0) == resid.size(2);
  }

  /// The layer in six kernels, each rounding where transformers rounds: RMSNorm + q/k/v
  /// projection; rotary + KV-cache write; attention; o_proj + residual add; RMSNorm + gate/up
  /// projection; SwiGLU + down_proj + residual add (the norms and SwiGLU made inside the
  /// matrix-vector kernels). Batch-1 decoding is bound by reading the weights; this reads
  /// nothing else of note and launches about half the kernels of the general path.
  at::Tensor fused_step(const at::Tensor& resid, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                        const at::Tensor& slot) {
    // The kernel before each projection is one of this forward's own (weights_settled).
    at::Tensor qkv = kernels::rms_norm_matvec(resid, input_layernorm_->weight, input_layernorm_->eps(),
                                              self_attn_->qkv_weight(), /*weights_settled=*/true);
    at::Tensor z = self_attn_->step_from_qkv(qkv, angles, mask, cache, slot).contiguous();
    at::Tensor mid = kernels::matvec(z, self_attn_->o_weight(), resid, /*weights_settled=*/true);
    at::Tensor gate_up = kernels::rms_norm_matvec(mid, post_attention_layernorm_->weight,
                                                  post_attention_layernorm_->eps(), mlp_->gate_up_weight(), true);
    return kernels::silu_mul_matvec(gate_up, mlp_->down_weight(), mid, /*weights_settled=*/true);
  }

  Attention self_attn_{nullptr};
  Mlp mlp_{nullptr};
  RMSNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
  HookPoint *hook_resid_pre_, *hook_ln1_, *hook_attn_out_, *hook_resid_mid_, *hook_ln2_, *hook_mlp_out_,
      *hook_resid_post_;
};
TORCH_MODULE(DecoderLayer);

}  // namespace mechlens
