#pragma once
/// \file
/// The SwiGLU MLP of the Llama family: down_proj(silu(gate_proj(x)) * up_proj(x)).

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

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
  at::Tensor forward(const at::Tensor& x) { return down_proj_(at::silu(gate_proj_(x)) * up_proj_(x)); }

 private:
  Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace mechlens
