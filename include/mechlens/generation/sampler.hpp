#pragma once
/// \file
/// Token samplers that run on the logits' device (no host round trip): greedy, temperature,
/// top-k and top-p, with an explicit seed so a run repeats exactly.

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/torch_compat.hpp"

namespace mechlens {

struct SamplingOptions {
  double temperature = 0.0;  ///< 0: greedy (argmax); > 0: sample from softmax(logits / T)
  int64_t top_k = 0;         ///< keep the k most likely tokens (0: all)
  double top_p = 1.0;        ///< keep the smallest set whose probability reaches p (1: all)
  uint64_t seed = 0;         ///< seeds the sampler's own generator

  bool greedy() const { return temperature <= 0.0; }
  void check() const {
    MECHLENS_CHECK(temperature >= 0.0, ArgumentError, "sampling: temperature {} is negative", temperature);
    MECHLENS_CHECK(top_k >= 0, ArgumentError, "sampling: top_k {} is negative", top_k);
    MECHLENS_CHECK(top_p > 0.0 && top_p <= 1.0, ArgumentError, "sampling: top_p {} outside (0, 1]", top_p);
  }
};

class Sampler {
 public:
  Sampler(const SamplingOptions& options, at::Device device) : options_(options) {
    options_.check();
    if (!options_.greedy()) generator_ = compat::make_generator(options_.seed, device);
  }

  /// logits [batch, vocab] -> token ids [batch] (int64, same device).
  at::Tensor operator()(const at::Tensor& logits) {
    if (options_.greedy()) return logits.argmax(-1);
    at::Tensor scores = logits.to(at::kFloat) / options_.temperature;
    if (options_.top_k > 0 && options_.top_k < scores.size(-1)) {
      at::Tensor kth = std::get<0>(scores.topk(options_.top_k, -1)).narrow(-1, options_.top_k - 1, 1);
      scores = scores.masked_fill(scores < kth, -std::numeric_limits<double>::infinity());
    }
    if (options_.top_p < 1.0) {
      auto sorted = scores.sort(-1, /*descending=*/true);
      at::Tensor probs = at::softmax(std::get<0>(sorted), -1);
      // Drop a token when the probability of the tokens before it already reaches top_p.
      at::Tensor drop_sorted = (probs.cumsum(-1) - probs) >= options_.top_p;
      at::Tensor drop = at::zeros_like(drop_sorted).scatter(-1, std::get<1>(sorted), drop_sorted);
      scores = scores.masked_fill(drop, -std::numeric_limits<double>::infinity());
    }
    at::Tensor probs = at::softmax(scores, -1);
    return at::multinomial(probs, 1, /*replacement=*/false, *generator_).squeeze(-1);
  }

  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  std::optional<at::Generator> generator_;
};

}  // namespace mechlens
