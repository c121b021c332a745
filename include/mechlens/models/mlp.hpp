#pragma once
/// \file
/// The SwiGLU MLP of the Llama family, the readable path: down_proj(silu(gate_proj(x)) * up_proj(x)),
/// with TransformerLens' gated-MLP hook points, all [batch, pos, d_mlp], firing in this order:
///   mlp.hook_pre         gate_proj(x), before the activation
///   mlp.hook_pre_linear  up_proj(x)
///   mlp.hook_post        silu(hook_pre) * hook_pre_linear, the input of down_proj (the neurons)
/// Layers with no active hook run in the fast engine (models/fast_engine.hpp), which fuses gate
/// and up into one GEMM.

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/core/torch_compat.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/models/linear.hpp"
#include "mechlens/models/model_config.hpp"

namespace mechlens {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& cfg, int64_t layer, HookRegistry& hooks, const at::TensorOptions& options) {
    gate_proj_ = register_module("gate_proj", Linear(cfg.d_model(), cfg.intermediate_size, false, options));
    up_proj_ = register_module("up_proj", Linear(cfg.d_model(), cfg.intermediate_size, false, options));
    down_proj_ = register_module("down_proj", Linear(cfg.intermediate_size, cfg.d_model(), false, options));
    const std::vector<int64_t> neurons{kDimBatch, kDimPos, cfg.intermediate_size};
    hook_pre_ = &hooks.add_point(hook_name(layer, "mlp.hook_pre"), layer, neurons);
    hook_pre_linear_ = &hooks.add_point(hook_name(layer, "mlp.hook_pre_linear"), layer, neurons);
    hook_post_ = &hooks.add_point(hook_name(layer, "mlp.hook_post"), layer, neurons);
  }

  /// [batch, pos, d_model] -> same
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor pre = (*hook_pre_)(gate_proj_(x));
    at::Tensor pre_linear = (*hook_pre_linear_)(up_proj_(x));
    return down_proj_((*hook_post_)(silu(pre) * pre_linear));
  }

  /// Whether any of the MLP's hook points has a hook attached.
  bool any_hook_active() const { return hook_pre_->active() || hook_pre_linear_->active() || hook_post_->active(); }

  /// SiLU rounded once from its float32 value, as transformers computes it in bfloat16 / float16
  /// (compat::half_ops_round_once: LibTorch 1.13's CPU silu needs the float32 detour).
  static at::Tensor silu(const at::Tensor& x) {
    const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
    if (!half || compat::half_ops_round_once(x)) return at::silu(x);
    return at::silu(x.to(at::kFloat)).to(x.scalar_type());
  }

  LinearImpl& gate_proj() { return *gate_proj_; }
  LinearImpl& up_proj() { return *up_proj_; }
  LinearImpl& down_proj() { return *down_proj_; }

 private:
  Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
  HookPoint *hook_pre_, *hook_pre_linear_, *hook_post_;
};
TORCH_MODULE(Mlp);

}  // namespace mechlens
