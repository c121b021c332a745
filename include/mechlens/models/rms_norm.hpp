#pragma once
/// \file
/// RMSNorm as Hugging Face's Llama computes it: normalise in float32, cast back to the input
/// dtype, then multiply by the weight (the order matters in bfloat16). The fast engine
/// (models/fast_engine.hpp) computes the same in one CUDA kernel where it can.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace mechlens {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", at::empty({dim}, options));
  }
  /// [..., dim] -> same
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor x32 = x.to(at::kFloat);
    at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
    x32 = x32 * at::rsqrt(variance + eps_);
    return weight * x32.to(x.scalar_type());
  }

  double eps() const { return eps_; }

  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace mechlens
