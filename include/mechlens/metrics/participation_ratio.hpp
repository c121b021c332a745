#pragma once
/// \file
/// Geometry of a window of activations: participation ratio, effective rank and R_V.
///
/// For a matrix X [W, D] (W token rows, D features) with singular values σ_1..σ_k:
///  * participation ratio   PR(X) = (Σ σ_i²)² / Σ σ_i⁴, between 1 (one direction) and k (all
///    equal); it equals the PR of the eigenvalues λ_i = σ_i² of XᵀX;
///  * effective rank        erank(X) = exp(−Σ p_i ln p_i), p_i = σ_i / Σ σ_j (Roy & Vetterli,
///    2007: the singular values themselves, not their squares, normalised to sum to 1; 0 ln 0 = 0);
///  * R_V                   PR(late) / PR(early), both windows of the same prompt's `hook_v`
///    output with all KV heads concatenated (W = 16 by default).
///
/// By default X is used as it is (uncentred), as the DEC7 study did. `centered = true` first
/// subtracts the mean row (the mean over the W tokens of each feature), which turns PR into the
/// PR of the covariance spectrum; results computed that way are labelled so by the caller.
///
/// Every function takes a batch x [..., W, D] and returns one value per matrix, [...], in
/// float64 on x's device: x is converted to float64 and the singular values are computed there
/// (at::linalg_svdvals), so a CUDA batch never leaves the GPU.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"

namespace mechlens::metrics {

namespace detail {

/// Validates x [..., W, D] and returns it in float64, centred over W when asked.
inline at::Tensor prepare_windows(const at::Tensor& x, bool centered, const char* fn, const char* arg) {
  MECHLENS_CHECK(x.defined(), ArgumentError, "{}: argument '{}' is an undefined tensor", fn, arg);
  MECHLENS_CHECK(x.dim() >= 2, ShapeError, "{}: argument '{}' must be [..., W, D] (at least 2 dims); got {}", fn,
                 arg, shape_str(x.sizes()));
  MECHLENS_CHECK(x.size(-2) >= 1 && x.size(-1) >= 1, ShapeError,
                 "{}: argument '{}' must have W >= 1 rows and D >= 1 columns; got {}", fn, arg, shape_str(x.sizes()));
  MECHLENS_CHECK(at::isFloatingType(x.scalar_type()), ArgumentError,
                 "{}: argument '{}' must be a floating-point tensor; got {}", fn, arg,
                 std::string(c10::toString(x.scalar_type())));
  at::Tensor x64 = x.to(at::kDouble);
  MECHLENS_CHECK(at::isfinite(x64).all().item<bool>(), ArgumentError,
                 "{}: argument '{}' {} holds NaN or infinite values", fn, arg, shape_str(x.sizes()));
  if (centered) {
    MECHLENS_CHECK(x.size(-2) >= 2, ShapeError,
                   "{}: a centred window needs W >= 2 rows (one row centres to zero); '{}' is {}", fn, arg,
                   shape_str(x.sizes()));
    x64 = x64 - x64.mean({-2}, /*keepdim=*/true);
  }
  return x64;
}

/// Throws when some matrix of the batch is all zeros (PR and effective rank are 0/0 there),
/// naming the first such matrix's batch index.
inline void check_nonzero_energy(const at::Tensor& sum_sq, const at::Tensor& x, bool centered, const char* fn,
                                 const char* arg) {
  const at::Tensor zero = (sum_sq <= 0).reshape({-1});
  if (!zero.any().item<bool>()) return;
  int64_t rest = zero.nonzero()[0][0].item<int64_t>();
  std::string index;
  for (int64_t d = x.dim() - 3; d >= 0; --d) {
    index = std::to_string(rest % x.size(d)) + (index.empty() ? "" : ", ") + index;
    rest /= x.size(d);
  }
  ::mechlens::detail::raise<ArgumentError>(
      "{}: the {} matrix at batch index [{}] of '{}' {} is all zeros; its participation ratio is undefined", fn,
      centered ? "centred" : "uncentred", index, arg, shape_str(x.sizes()));
}

}  // namespace detail

/// Singular values of each [W, D] matrix of x [..., W, D] in float64 on x's device,
/// [..., min(W, D)], descending. Centred over W when `centered`.
inline at::Tensor singular_values(const at::Tensor& x, bool centered = false) {
  return at::linalg_svdvals(detail::prepare_windows(x, centered, "singular_values", "x"));
}

/// Participation ratio (Σσ²)²/Σσ⁴ of each matrix of x [..., W, D] → [...] float64 on x's device.
/// Throws ShapeError for fewer than 2 dims, ArgumentError for NaN/inf or an all-zero matrix.
inline at::Tensor participation_ratio(const at::Tensor& x, bool centered = false) {
  const at::Tensor x64 = detail::prepare_windows(x, centered, "participation_ratio", "x");
  // No SVD needed: Σσ² = ||X||_F² and Σσ⁴ = ||G||_F², G the smaller Gram matrix (XXᵀ or XᵀX),
  // whose eigenvalues are the σ². Exact, and far cheaper for thousands of 16-row windows.
  const bool rows = x64.size(-2) <= x64.size(-1);
  const at::Tensor g = rows ? at::matmul(x64, x64.transpose(-1, -2)) : at::matmul(x64.transpose(-1, -2), x64);
  const at::Tensor sum_sq = x64.pow(2).sum({-2, -1});
  detail::check_nonzero_energy(sum_sq, x, centered, "participation_ratio", "x");
  return sum_sq * sum_sq / g.pow(2).sum({-2, -1});
}

/// Effective rank exp(−Σ p ln p), p = σ/Σσ (Roy & Vetterli), of each matrix of x [..., W, D]
/// → [...] float64 on x's device.
inline at::Tensor effective_rank(const at::Tensor& x, bool centered = false) {
  const at::Tensor s = at::linalg_svdvals(detail::prepare_windows(x, centered, "effective_rank", "x"));
  const at::Tensor total = s.sum(-1, /*keepdim=*/true);
  detail::check_nonzero_energy(total.squeeze(-1), x, centered, "effective_rank", "x");
  const at::Tensor p = s / total;
  return at::exp(-at::xlogy(p, p).sum(-1));  // xlogy(0, 0) = 0
}

/// R_V = PR(late) / PR(early) for windows early, late [..., W, D] of the same prompts (leading
/// dims equal; W and D may differ between the two) → [...] float64.
inline at::Tensor rv_from_values(const at::Tensor& early, const at::Tensor& late, bool centered = false) {
  MECHLENS_CHECK(early.defined() && late.defined() && early.dim() >= 2 && late.dim() >= 2 &&
                     early.sizes().slice(0, early.dim() - 2) == late.sizes().slice(0, late.dim() - 2),
                 ShapeError, "rv_from_values: 'early' and 'late' must be [..., W, D] with the same leading dims; got {} and {}",
                 early.defined() ? shape_str(early.sizes()) : "undefined",
                 late.defined() ? shape_str(late.sizes()) : "undefined");
  return participation_ratio(late, centered) / participation_ratio(early, centered).to(late.device());
}

/// PR of each KV head separately: x [..., W, H·d_head] with heads concatenated head-major (as
/// `hook_v` flattened) → [..., H].
inline at::Tensor participation_ratio_per_head(const at::Tensor& x, int64_t n_heads, bool centered = false) {
  MECHLENS_CHECK(x.defined() && x.dim() >= 2, ShapeError,
                 "participation_ratio_per_head: 'x' must be [..., W, H*d_head]; got {}",
                 x.defined() ? shape_str(x.sizes()) : "undefined");
  MECHLENS_CHECK(n_heads >= 1 && x.size(-1) % n_heads == 0, ShapeError,
                 "participation_ratio_per_head: the last dim of 'x' {} is not divisible into {} heads",
                 shape_str(x.sizes()), n_heads);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(n_heads);
  shape.push_back(x.size(-1) / n_heads);
  // [..., W, H, dh] -> [..., H, W, dh]
  const at::Tensor per_head = x.reshape(shape).transpose(-3, -2);
  return participation_ratio(per_head, centered);
}

/// R_V per KV head: early, late [..., W, H·d_head] → [..., H].
inline at::Tensor rv_per_head_from_values(const at::Tensor& early, const at::Tensor& late, int64_t n_heads,
                                          bool centered = false) {
  return participation_ratio_per_head(late, n_heads, centered) /
         participation_ratio_per_head(early, n_heads, centered).to(late.device());
}

/// The R_V window of a `hook_v` output: the last `window` positions with all KV heads
/// concatenated. v is [batch, pos, kv_heads, d_head] (or already flat, [batch, pos, D]);
/// returns [batch, window, kv_heads·d_head] (a view when possible). Prompts are left-padded, so
/// the last positions are real tokens as long as every prompt has at least `window` tokens:
/// pass each row's token count in `lengths` to have that checked. A prompt shorter than the
/// window is an error that says so.
inline at::Tensor value_window(const at::Tensor& v, int64_t window = 16, const std::vector<int64_t>& lengths = {}) {
  MECHLENS_CHECK(v.defined() && (v.dim() == 3 || v.dim() == 4), ShapeError,
                 "value_window: 'v' must be [batch, pos, kv_heads, d_head] or [batch, pos, D]; got {}",
                 v.defined() ? shape_str(v.sizes()) : "undefined");
  MECHLENS_CHECK(window >= 1, ArgumentError, "value_window: window must be >= 1; got {}", window);
  MECHLENS_CHECK(v.size(1) >= window, ShapeError,
                 "value_window: the prompts have {} positions, fewer than the R_V window of {} tokens", v.size(1),
                 window);
  MECHLENS_CHECK(lengths.empty() || static_cast<int64_t>(lengths.size()) == v.size(0), ArgumentError,
                 "value_window: 'lengths' must give one token count per batch row ({}); got {}", v.size(0),
                 lengths.size());
  for (std::size_t b = 0; b < lengths.size(); ++b)
    MECHLENS_CHECK(lengths[b] >= window, ShapeError,
                   "value_window: prompt {} has {} tokens, fewer than the R_V window of {} tokens", b, lengths[b],
                   window);
  const at::Tensor last = v.narrow(1, v.size(1) - window, window);
  return last.reshape({v.size(0), window, -1});
}

}  // namespace mechlens::metrics
