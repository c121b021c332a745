#pragma once
/// \file
/// One pre-norm decoder block, the readable path (as transformers' LlamaDecoderLayer reads),
/// with its residual-stream hook points, all [batch, pos, d_model]:
///   hook_resid_pre -> ln1.hook_normalized -> attn -> hook_attn_out -> hook_resid_mid
///   -> ln2.hook_normalized -> mlp -> hook_mlp_out -> hook_resid_post
/// (the attention's hook points are in attention.hpp, the MLP's neuron-level ones in mlp.hpp)
/// A layer with no active hook runs in the fast engine instead (models/fast_engine.hpp).

#include <string>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/models/attention.hpp"
#include "mechlens/models/mlp.hpp"
#include "mechlens/models/rms_norm.hpp"

namespace mechlens {

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, int64_t layer, HookRegistry& hooks, const at::TensorOptions& options) {
    const std::vector<int64_t> resid{kDimBatch, kDimPos, cfg.d_model()};
    hook_resid_pre_ = &hooks.add_point(hook_name(layer, "hook_resid_pre"), layer, resid);
    hook_ln1_ = &hooks.add_point(hook_name(layer, "ln1.hook_normalized"), layer, resid);
    self_attn_ = register_module("self_attn", Attention(cfg, layer, hooks, options));
    hook_attn_out_ = &hooks.add_point(hook_name(layer, "hook_attn_out"), layer, resid);
    hook_resid_mid_ = &hooks.add_point(hook_name(layer, "hook_resid_mid"), layer, resid);
    hook_ln2_ = &hooks.add_point(hook_name(layer, "ln2.hook_normalized"), layer, resid);
    mlp_ = register_module("mlp", Mlp(cfg, layer, hooks, options));
    hook_mlp_out_ = &hooks.add_point(hook_name(layer, "hook_mlp_out"), layer, resid);
    hook_resid_post_ = &hooks.add_point(hook_name(layer, "hook_resid_post"), layer, resid);
    input_layernorm_ = register_module("input_layernorm", RMSNorm(cfg.d_model(), cfg.rms_norm_eps, options));
    post_attention_layernorm_ =
        register_module("post_attention_layernorm", RMSNorm(cfg.d_model(), cfg.rms_norm_eps, options));
  }

  /// resid [batch, pos, d_model] -> same. `slot`: the static-shape step (AttentionImpl::forward).
  at::Tensor forward(at::Tensor resid, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                     const at::Tensor& slot = {}) {
    resid = (*hook_resid_pre_)(std::move(resid));
    at::Tensor attn_out =
        (*hook_attn_out_)(self_attn_->forward((*hook_ln1_)(input_layernorm_(resid)), angles, mask, cache, slot));
    resid = (*hook_resid_mid_)(resid + attn_out);
    at::Tensor mlp_out = (*hook_mlp_out_)(mlp_((*hook_ln2_)(post_attention_layernorm_(resid))));
    return (*hook_resid_post_)(resid + mlp_out);
  }

  AttentionImpl& self_attn() { return *self_attn_; }
  MlpImpl& mlp() { return *mlp_; }
  RMSNormImpl& input_layernorm() { return *input_layernorm_; }
  RMSNormImpl& post_attention_layernorm() { return *post_attention_layernorm_; }

  /// Whether any hook point of this block (its attention's included) has a hook attached.
  bool any_hook_active() const {
    for (const HookPoint* h : {hook_resid_pre_, hook_ln1_, hook_attn_out_, hook_resid_mid_, hook_ln2_, hook_mlp_out_,
                               hook_resid_post_})
      if (h->active()) return true;
    return self_attn_->any_hook_active() || mlp_->any_hook_active();
  }

 private:
  Attention self_attn_{nullptr};
  Mlp mlp_{nullptr};
  RMSNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
  HookPoint *hook_resid_pre_, *hook_ln1_, *hook_attn_out_, *hook_resid_mid_, *hook_ln2_, *hook_mlp_out_,
      *hook_resid_post_;
};
TORCH_MODULE(DecoderLayer);

}  // namespace mechlens
