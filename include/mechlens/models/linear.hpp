#pragma once
/// \file
/// Linear and Embedding layers that allocate their parameters in the requested dtype and device
/// without initialising them: a checkpoint fills them (load_model checks every one is filled), so
/// an 8B model is never built in float32 on the CPU first. Parameter names are `weight` / `bias`,
/// as in Hugging Face checkpoints.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace mechlens {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({out_features, in_features}, options));
    if (bias) this->bias = register_parameter("bias", at::empty({out_features}, options));
  }
  /// [..., in] -> [..., out]
  at::Tensor forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }

  at::Tensor weight;
  at::Tensor bias;  ///< undefined when the layer has no bias
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({num_embeddings, dim}, options));
  }
  /// ids [...] (int64) -> [..., dim]
  at::Tensor forward(const at::Tensor& ids) const { return at::embedding(weight, ids); }

  at::Tensor weight;
};
TORCH_MODULE(Embedding);

}  // namespace mechlens
