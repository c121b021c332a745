#pragma once
/// \file
/// Token samplers that run on the logits' device (no host round trip): greedy, temperature,
/// top-k and top-p, with explicit seeds so a run repeats exactly.
///
/// **Every row has its own random stream.** Row r draws its token at step t by the Gumbel-max
/// rule, argmax over the vocabulary of logits/T + G, where each G = -log(-log(u)) comes from a
/// counter-based hash of (row seed, t, token id) — not from a generator shared by the batch. So a
/// row's tokens depend only on its seed and its own logits: the same prompt with the same row seed
/// gives the same generation alone, in a batch of 32 or of 400, in any row, or on another rank
/// (batch size and order are speed settings, not part of the sampling). Row r's seed is
/// `row_seed(seed, r)` unless `row_seeds` gives one per row (a study gives each pair its own).
///
/// The uniform u of each (row, step, token) has 32 bits (u in [2^-33, 1 - 2^-33]), so G lies in
/// [-3.1, 22.9]: a token whose logit/T is more than ~26 below the row's largest is never drawn
/// (its probability is below e^-26 ~ 5e-12). Top-k and top-p remove tokens first, as
/// transformers' TopKLogitsWarper and TopPLogitsWarper do (ties at the k-th value are kept).
///
/// On CUDA the noise, the add and the argmax run as one fused kernel (kernels/sampling.hpp) with
/// the same arithmetic: the tokens are those of the ATen ops below, which run elsewhere.

#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/torch_compat.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/sampling.hpp"

namespace mechlens {

struct SamplingOptions {
  double temperature = 0.0;  ///< 0: greedy (argmax); > 0: sample from softmax(logits / T)
  int64_t top_k = 0;         ///< keep the k most likely tokens (0: all)
  double top_p = 1.0;        ///< keep the smallest set whose probability reaches p (1: all)
  uint64_t seed = 0;         ///< row r samples with row_seed(seed, r) (unless row_seeds is given)
  /// One seed per row (empty: row_seed(seed, r)). Rows with equal seeds and equal logits draw
  /// equal tokens.
  std::vector<uint64_t> row_seeds;

  bool greedy() const { return temperature <= 0.0; }
  void check() const {
    MECHLENS_CHECK(temperature >= 0.0, ArgumentError, "sampling: temperature {} is negative", temperature);
    MECHLENS_CHECK(top_k >= 0, ArgumentError, "sampling: top_k {} is negative", top_k);
    MECHLENS_CHECK(top_p > 0.0 && top_p <= 1.0, ArgumentError, "sampling: top_p {} outside (0, 1]", top_p);
  }
};

/// SplitMix64's finaliser: a bijection of 64-bit words that mixes every input bit into every
/// output bit.
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// The seed of row (or unit) `row` of a run seeded with `seed`.
inline uint64_t row_seed(uint64_t seed, int64_t row) {
  return splitmix64(seed ^ splitmix64(0x6D65636866656E73ULL + static_cast<uint64_t>(row)));
}

namespace detail {

constexpr int64_t kLow32 = 0xFFFFFFFFLL;

/// One round of a 32-bit xorshift-multiply hash on int64 tensors holding values below 2^32. The
/// multipliers are below 2^31, so no product overflows int64 (no wrapping is relied on).
inline at::Tensor mix32(at::Tensor x) {
  x = x.bitwise_xor(x.bitwise_right_shift(16));
  x = x.mul(int64_t{0x7FEB352D}).bitwise_and(kLow32);
  x = x.bitwise_xor(x.bitwise_right_shift(15));
  x = x.mul(int64_t{0x5BD1E995}).bitwise_and(kLow32);
  return x.bitwise_xor(x.bitwise_right_shift(16));
}

}  // namespace detail

class Sampler {
 public:
  Sampler(const SamplingOptions& options, at::Device device) : options_(options), device_(device) { options_.check(); }

  /// logits [batch, vocab] -> token ids [batch] (int64, same device). Each call is one step of
  /// every row's stream.
  at::Tensor operator()(const at::Tensor& logits) {
    MECHLENS_CHECK(logits.dim() == 2, ShapeError, "sampler: logits must be [batch, vocab], got {} dims", logits.dim());
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
    at::Tensor pick;
    if (kernels::fused_available(logits)) {  // one pass instead of ~25 (kernels/sampling.hpp)
      prepare(scores.size(0), scores.size(1));
      auto [k1, k2] = step_keys();
      pick = kernels::gumbel_argmax(scores, k1, k2, logits.scalar_type());
    } else {
      pick = (scores + gumbel(scores.size(0), scores.size(1))).argmax(-1);
    }
    ++step_;
    return pick;
  }

  /// The Gumbel noise of the current step, [batch, vocab] float32 (exposed for tests; on CUDA
  /// the sampler draws the same noise inside one fused kernel).
  at::Tensor gumbel(int64_t batch, int64_t vocab) {
    prepare(batch, vocab);
    using detail::kLow32;
    auto [k1, k2] = step_keys();  // [batch, 1]
    at::Tensor x = detail::mix32(k1.add(token_key_).bitwise_and(kLow32));
    x = detail::mix32(x.bitwise_xor(k2).add(k1.bitwise_right_shift(7)).bitwise_and(kLow32));
    // u = (x + 1/2) / 2^32 in (0, 1); G = -log(-log(u)), in double, then float.
    at::Tensor u = x.to(at::kDouble).add_(0.5).mul_(1.0 / 4294967296.0);
    return u.log_().neg_().log_().neg_().to(at::kFloat);
  }

  const SamplingOptions& options() const { return options_; }
  int64_t step() const { return step_; }

 private:
  /// Each row's two key words with the current step mixed in ([batch, 1] int64, below 2^32);
  /// the token id enters through `token_key_`.
  std::pair<at::Tensor, at::Tensor> step_keys() const {
    using detail::kLow32;
    const auto step = static_cast<uint64_t>(step_);
    const auto s1 = static_cast<int64_t>(splitmix64(step) & kLow32);
    const auto s2 = static_cast<int64_t>(splitmix64(step ^ 0xA5A5A5A5A5A5A5A5ULL) & kLow32);
    return {key1_.bitwise_xor(s1), key2_.bitwise_xor(s2)};
  }

  void prepare(int64_t batch, int64_t vocab) {
    if (key1_.defined() && key1_.size(0) == batch && token_key_.size(1) == vocab) return;
    MECHLENS_CHECK(!key1_.defined(), ShapeError, "sampler: the batch changed from {} x {} to {} x {} rows x tokens",
                   key1_.size(0), token_key_.size(1), batch, vocab);
    MECHLENS_CHECK(options_.row_seeds.empty() || static_cast<int64_t>(options_.row_seeds.size()) == batch,
                   ArgumentError, "sampling: {} row_seeds for a batch of {} rows", options_.row_seeds.size(), batch);
    std::vector<int64_t> k1(batch), k2(batch);
    for (int64_t r = 0; r < batch; ++r) {
      const uint64_t seed = options_.row_seeds.empty() ? row_seed(options_.seed, r) : options_.row_seeds[r];
      const uint64_t key = splitmix64(seed);
      k1[r] = static_cast<int64_t>(key & detail::kLow32);
      k2[r] = static_cast<int64_t>(key >> 32);
    }
    const auto longs = at::TensorOptions().dtype(at::kLong);
    key1_ = at::tensor(k1, longs).view({batch, 1}).to(device_);
    key2_ = at::tensor(k2, longs).view({batch, 1}).to(device_);
    // Token v's key: v * golden ratio (mod 2^32); v < 2^31, the product stays below 2^63.
    token_key_ = at::arange(vocab, longs.device(device_)).mul(int64_t{0x9E3779B1}).bitwise_and(detail::kLow32).view({1, vocab});
  }

  SamplingOptions options_;
  at::Device device_;
  int64_t step_ = 0;
  at::Tensor key1_, key2_, token_key_;
};

}  // namespace mechlens
