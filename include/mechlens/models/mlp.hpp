#pragma once
/// \file
/// The SwiGLU MLP of the Llama family, the readable path: down_proj(silu(gate_proj(x)) * up_proj(x)).
/// (Its neuron-level hook points are not there yet.) Layers with no active hook run in the fast
/// engine (models/fast_engine.hpp), which fuses gate and up into one GEMM.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/core/torch_compat.hpp"
#include "mechlens/models/linear.hpp"
#include "mechlens/models/model_config.hpp"

namespace mechlens {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& cfg, const at::TensorOptions& options) {
    gate_proj_ = register_module("gate_proj", Linear(cfg.d_model(), cfg.intermediate_size, false, options));
    up_proj_ = register_module("up_proj", Linear(cfg.d_model(), cfg.intermediate_size, false, options));
    down_proj_ = register_module("down_proj", Linear(cfg.intermediate_size, cfg.d_model(), false, options));
  }

  /// [batch, pos, d_model] -> same
  at::Tensor forward(const at::Tensor& x) { return down_proj_(silu(gate_proj_(x)) * up_proj_(x)); }

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
};
TORCH_MODULE(Mlp);

}  // namespace mechlens
