#pragma once
/// \file
/// The SwiGLU MLP of the Llama family: down_proj(silu(gate_proj(x)) * up_proj(x)).

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/kernels/fused_ops.hpp"
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
  at::Tensor forward(const at::Tensor& x) {
    if (gate_up_weight_.defined()) {
      at::Tensor gu = kernels::linear(x, gate_up_weight_);  // [b, p, 2 * d_mlp], one GEMM
      if (kernels::silu_mul_matvec_applies(gu, down_proj_->weight)) return kernels::silu_mul_matvec(gu, down_proj_->weight);
      if (kernels::fused_available(gu)) return down_proj_(kernels::silu_mul(gu));
      const int64_t f = gu.size(-1) / 2;
      return down_proj_(silu(gu.narrow(-1, 0, f)) * gu.narrow(-1, f, f));
    }
    return down_proj_(silu(gate_proj_(x)) * up_proj_(x));
  }

  /// SiLU rounded once from its float32 value, as LibTorch 2.x (hence transformers) computes it
  /// in bfloat16 / float16; LibTorch 1.13's CPU half-precision silu is off by a unit in about a
  /// quarter of the entries.
  static at::Tensor silu(const at::Tensor& x) {
    if (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kHalf) return at::silu(x);
    return at::silu(x.to(at::kFloat)).to(x.scalar_type());
  }

  /// The fused gate/up weight [2 * d_mlp, d_model] (undefined before fuse_projections) and
  /// down_proj's weight.
  const at::Tensor& gate_up_weight() const { return gate_up_weight_; }
  const at::Tensor& down_weight() const { return down_proj_->weight; }

  /// Inference speed-up: gate and up weights become views of one matrix (one GEMM for both); see
  /// AttentionImpl::fuse_projections.
  void fuse_projections() {
    at::NoGradGuard no_grad;
    const int64_t f = gate_proj_->weight.size(0);
    gate_up_weight_ = at::cat({gate_proj_->weight, up_proj_->weight}, 0);
    gate_proj_->weight.set_data(gate_up_weight_.narrow(0, 0, f));
    up_proj_->weight.set_data(gate_up_weight_.narrow(0, f, f));
  }

 private:
  Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
  at::Tensor gate_up_weight_;  // defined after fuse_projections()
};
TORCH_MODULE(Mlp);

}  // namespace mechlens
