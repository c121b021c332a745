#pragma once
/// \file
/// RMSNorm as Hugging Face's Llama computes it: normalise in float32, cast back to the input
/// dtype, then multiply by the weight (the order matters in bfloat16).

#include <utility>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "mechlens/kernels/fused_ops.hpp"

namespace mechlens {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", at::empty({dim}, options));
  }
  /// [..., dim] -> same
  at::Tensor forward(const at::Tensor& x) const {
    if (fused_for(x)) return kernels::rms_norm(x, weight, eps_);
    at::Tensor x32 = x.to(at::kFloat);
    at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
    x32 = x32 * at::rsqrt(variance + eps_);
    return weight * x32.to(x.scalar_type());
  }

  /// (resid + delta, forward(resid + delta)): the residual add and the norm after it, one
  /// kernel where the fused kernels run.
  std::pair<at::Tensor, at::Tensor> add_forward(const at::Tensor& resid, const at::Tensor& delta) const {
    if (fused_for(resid) && delta.sizes() == resid.sizes() && delta.scalar_type() == resid.scalar_type() &&
        delta.device() == resid.device())
      return kernels::add_rms_norm(resid, delta, weight, eps_);
    at::Tensor sum = resid + delta;
    return {sum, forward(sum)};
  }

  double eps() const { return eps_; }

  at::Tensor weight;

 private:
  /// The fused kernel runs for x when it can and the weight is in x's dtype, on x's device.
  bool fused_for(const at::Tensor& x) const {
    return kernels::fused_available(x) && weight.scalar_type() == x.scalar_type() && weight.device() == x.device();
  }

  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace mechlens
