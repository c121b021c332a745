#pragma once
/// \file
/// Random initialisation for models built in memory (benchmarks, tests, training the toy model):
/// linear and embedding weights ~ N(0, std²), biases 0, RMSNorm weights 1.

#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include "mechlens/core/torch_compat.hpp"

namespace mechlens {

inline void init_weights(torch::nn::Module& model, uint64_t seed, double std = 0.02) {
  at::NoGradGuard no_grad;
  auto gen = compat::make_generator(seed, at::kCPU);
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    at::Tensor values;
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      values = at::zeros(p.sizes(), at::kFloat);
    } else if (name.find("norm") != std::string::npos) {
      values = at::ones(p.sizes(), at::kFloat);
    } else {
      values = at::normal(0.0, std, p.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
    }
    p.copy_(values);
  }
}

}  // namespace mechlens
