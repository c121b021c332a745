#pragma once
/// \file
/// Rotary position embeddings (rope types default, linear and llama3), computed as Hugging Face
/// transformers computes them: inverse frequencies in float32, angles = position × inv_freq in
/// float32, cos/sin cast to the activation dtype, rotate-half convention.

#include <cmath>

#include <ATen/ATen.h>

#include "mechlens/models/model_config.hpp"

namespace mechlens {

/// The inverse frequencies [d_head / 2] (float32) for a rope configuration.
inline at::Tensor rope_inverse_frequencies(const RopeConfig& rope, int64_t d_head, at::Device device = at::kCPU) {
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor exponents = at::arange(0, d_head, 2, opts.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(d_head);
  at::Tensor inv_freq = 1.0 / at::pow(rope.theta, exponents);
  if (rope.type == "linear") return inv_freq / rope.factor;
  if (rope.type != "llama3") return inv_freq;
  // llama3: long wavelengths are slowed by `factor`, short ones kept, the band between them
  // interpolated smoothly (Meta's Llama 3.1 recipe).
  const double old_len = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / rope.low_freq_factor;
  const double high_freq_wavelen = old_len / rope.high_freq_factor;
  at::Tensor wavelen = 2.0 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  at::Tensor smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

/// cos and sin for positions [batch, pos]: each [batch, pos, 1, d_head] in `dtype`, ready to
/// broadcast over heads. `sin_signed` is sin with its first half negated, so that
/// rotate_half(x) * sin == roll(x, d/2) * sin_signed (one kernel fewer per rotation).
struct RotaryAngles {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor sin_signed;
  /// What they were made from ([batch, pos] int64, [d_head / 2] float32), for kernels that
  /// compute the angles themselves (kernels::rotary_write_kv).
  at::Tensor positions;
  at::Tensor inv_freq;
};

inline RotaryAngles rotary_angles(const at::Tensor& inv_freq, const at::Tensor& positions, at::ScalarType dtype) {
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [b, p, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(2);              // [b, p, 1, d]
  at::Tensor sin = emb.sin();
  at::Tensor sign = at::cat({at::full_like(freqs, -1.0), at::ones_like(freqs)}, -1).unsqueeze(2);
  return {emb.cos().to(dtype), sin.to(dtype), (sin * sign).to(dtype), positions, inv_freq};
}

/// Applies rotary embeddings (HF's rotate-half form, x * cos + rotate_half(x) * sin) to
/// x [batch, pos, heads, d_head].
inline at::Tensor apply_rotary(const at::Tensor& x, const RotaryAngles& angles) {
  const int64_t half = x.size(-1) / 2;
  // Two products, each rounded to x's dtype, then their sum: transformers' q*cos + rotate_half(q)*sin
  // (an addcmul would round once, which differs in bfloat16 / float16).
  return x * angles.cos + x.roll(half, -1) * angles.sin_signed;
}

}  // namespace mechlens
