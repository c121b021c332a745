#pragma once
/// \file
/// The fused matrix-vector kernels, for batch-1 decoding's projections (one row x against a
/// weight matrix W [N, K], streaming W in 16-byte loads: cuBLAS's GEMMs reach less of the memory
/// bandwidth on one row):
///
///   matvec           y = x W^T (+ residual): the residual add after o_proj / down_proj folded in
///   rms_norm_matvec  RMSNorm(x) W^T: the norm before q/k/v, gate/up and lm_head made inside the
///                    matrix-vector kernel                       (norm + GEMM -> 1)
///   silu_mul_matvec  (silu(gate) * up) W^T (+ residual): down_proj with SwiGLU and the residual
///                    add inside                                 (activation + GEMM + add -> 1)
///   linear           x W^T (+ bias): matvec where it applies, else at::linear
///
/// Each `*_applies` (and matvec_weight_fits) says whether its kernel runs; it is false wherever
/// fused_available is (kernels/fused_module.hpp). Every row's dot product is summed in float32
/// (as cuBLAS sums, in another order) and rounded once. The CUDA source is
/// kernels/source/matvec.hpp.

#include <cstdint>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/kernels/cuda_driver_api.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"

namespace mechlens::kernels {

namespace detail {
inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

inline bool same_as(const at::Tensor& t, const at::Tensor& like, int64_t n) {
  return t.defined() && t.numel() == n && t.is_contiguous() && t.scalar_type() == like.scalar_type() &&
         t.device() == like.device() && aligned16(t);
}

/// Launches gemv (see the kernel) and returns y: x's shape with the last dimension N.
/// early_start: see kernels::matvec's `weights_settled`; `op` names the launcher in errors.
inline at::Tensor launch_gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& gamma, double eps,
                              const at::Tensor& resid, int mode, bool early_start, const char* op) {
  c10::DeviceGuard guard(x.device());  // launch on x's device and stream
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  at::Tensor y = at::empty(sizes, x.options());
  void *pw = w.data_ptr(), *px = x.data_ptr(), *py = y.data_ptr();
  void* pg = gamma.defined() ? gamma.data_ptr() : nullptr;
  void* pr = resid.defined() ? resid.data_ptr() : nullptr;
  float feps = static_cast<float>(eps);
  int n = static_cast<int>(w.size(0)), k = static_cast<int>(w.size(1)), m = mode;
  // Many rows (more than columns): a warp per 2 rows (gemv_rows); else a block of 256 threads
  // per 4 rows (gemv_split). Measured on an H200 at Llama-3-8B shapes (docs/performance.md).
  const bool by_warp = w.size(0) > w.size(1);
  const int64_t rows_per_block = by_warp ? 8 * 2 : 4;
  const auto blocks = static_cast<unsigned>((w.size(0) + rows_per_block - 1) / rows_per_block);
  driver::Function fn = kernel(x.scalar_type(), by_warp ? "gemv_rows" : "gemv_split", op);
  // x' staged in shared memory: mode 1 always, mode 2 in gemv_rows (gemv_split makes it inline)
  const bool staged = mode == 1 || (mode == 2 && by_warp);
  const auto shared = static_cast<unsigned>(staged ? w.size(1) * w.element_size() : 0);
  if (shared > 48 * 1024) {  // beyond the default: ask for it (within what staged_input_fits allowed)
    driver::Result r = loaded_driver().function_set_attribute(fn, driver::kMaxDynamicSharedSizeBytes,
                                                             static_cast<int>(shared));
    MECHLENS_CHECK(r == driver::kSuccess, Error, "kernels::{}: {} bytes of shared memory refused (CUresult {})", op,
                   shared, r);
  }
  launch(fn, Dim3(blocks), Dim3(256), {&pw, &px, &pg, &feps, &pr, &py, &n, &k, &m}, shared, early_start);
  return y;
}
}  // namespace detail

/// Whether w [N, K] can be the matrix of the matrix-vector kernels for activations like `like`:
/// fused kernels available for `like`, same dtype and device, contiguous, 16-byte aligned, K a
/// whole number of 16-byte chunks.
inline bool matvec_weight_fits(const at::Tensor& w, const at::Tensor& like) {
  if (!fused_available(like) || !w.defined() || w.dim() != 2 || w.scalar_type() != like.scalar_type() ||
      w.device() != like.device() || !w.is_contiguous() || w.size(0) >= (int64_t{1} << 31) ||
      w.size(1) >= (int64_t{1} << 31))
    return false;
  const int64_t per16 = 16 / static_cast<int64_t>(w.element_size());
  return w.size(1) % per16 == 0 && detail::aligned16(w);
}

namespace detail {
/// x holds one row of `x_len` elements, contiguous and 16-byte aligned, and w suits it
/// (matvec_weight_fits).
inline bool matvec_fits(const at::Tensor& x, const at::Tensor& w, int64_t x_len) {
  return matvec_weight_fits(w, x) && x.numel() == x_len && x.is_contiguous() && aligned16(x);
}
}  // namespace detail

/// Whether matvec runs for x [..., K] (one row in all) and w [N, K]: fused kernels available,
/// same dtype and device, both contiguous and 16-byte aligned, K a whole number of 16 bytes.
inline bool matvec_applies(const at::Tensor& x, const at::Tensor& w) {
  return w.defined() && w.dim() == 2 && detail::matvec_fits(x, w, w.size(1));
}

/// y = x w^T (+ residual) for one row x [..., K] (batch-1 decoding) -> [..., N]: a
/// matrix-vector kernel streaming w in 16-byte loads, summing in float32 (as cuBLAS does, in
/// another order). With `residual` [..., N]: residual + rounded(x w^T), rounded (the residual
/// add after a projection, as transformers rounds it). Check matvec_applies first.
///
/// `weights_settled`: the caller knows that no kernel still running on the stream writes w (the
/// model's own decoding step, where the kernel before is a norm, an attention or another
/// projection). Then, on Hopper and later, the kernel may start before the previous one ends
/// and load its first weights meanwhile (programmatic dependent launch; runtime_compiler.hpp).
/// Leave it false after editing a weight in place.
inline at::Tensor matvec(const at::Tensor& x, const at::Tensor& w, const at::Tensor& residual = {},
                         bool weights_settled = false) {
  detail::require_fused_build("matvec");
  MECHLENS_CHECK(matvec_applies(x, w) && (!residual.defined() || detail::same_as(residual, x, w.size(0))),
                 ArgumentError,
                 "kernels::matvec: x {} ({}), w {} ({}) and residual {} do not fit (one row, contiguous, 16-byte aligned)",
                 shape_str(x.sizes()), c10::toString(x.scalar_type()), shape_str(w.sizes()),
                 c10::toString(w.scalar_type()), residual.defined() ? shape_str(residual.sizes()) : "(none)");
  return detail::launch_gemv(x, w, {}, 0.0, residual, 0, weights_settled, "matvec");
}

namespace detail {
/// rms_norm_matvec and silu_mul_matvec hold x' (K elements) in a block's shared memory: K must
/// fit what the device grants one block.
inline bool staged_input_fits(const at::Tensor& w, const at::Tensor& x) {
  const auto limit = static_cast<int64_t>(device_info(x.device().index()).shared_per_block_optin) - 1024;
  return w.size(1) * static_cast<int64_t>(w.element_size()) <= limit;
}
}  // namespace detail

/// Whether rms_norm_matvec runs: matvec_applies(x, w), a norm weight like x, and K elements of x'
/// within a block's shared memory (K up to ~113,000 in bfloat16 on an H100/H200).
inline bool rms_norm_matvec_applies(const at::Tensor& x, const at::Tensor& norm_weight, const at::Tensor& w) {
  return matvec_applies(x, w) && detail::same_as(norm_weight, x, w.size(1)) && detail::staged_input_fits(w, x);
}

/// RMSNorm(x) w^T for one row x [..., K] -> [..., N], the norm (rounded as kernels::rms_norm
/// rounds) made inside the matrix-vector kernel: the norm's output never goes to memory.
/// `weights_settled` as in matvec.
inline at::Tensor rms_norm_matvec(const at::Tensor& x, const at::Tensor& norm_weight, double eps, const at::Tensor& w,
                                  bool weights_settled = false) {
  detail::require_fused_build("rms_norm_matvec");
  MECHLENS_CHECK(rms_norm_matvec_applies(x, norm_weight, w), ArgumentError,
                 "kernels::rms_norm_matvec: x {}, norm weight {}, w {} do not fit (one row, contiguous, 16-byte aligned)",
                 shape_str(x.sizes()), norm_weight.defined() ? shape_str(norm_weight.sizes()) : "(none)",
                 shape_str(w.sizes()));
  return detail::launch_gemv(x, w, norm_weight, eps, {}, 1, weights_settled, "rms_norm_matvec");
}

/// Whether silu_mul_matvec runs: gate_up one row of 2 K, w [N, K], as matvec_applies, and x'
/// within shared memory as for rms_norm_matvec.
inline bool silu_mul_matvec_applies(const at::Tensor& gate_up, const at::Tensor& w) {
  return w.defined() && w.dim() == 2 && detail::matvec_fits(gate_up, w, 2 * w.size(1)) &&
         detail::staged_input_fits(w, gate_up);
}

/// (silu(gate) * up) w^T (+ residual) for one row gate_up [..., 2 K] -> [..., N], the activation
/// (rounded as kernels::silu_mul rounds) made inside the matrix-vector kernel; `residual` as in
/// matvec, and `weights_settled`.
inline at::Tensor silu_mul_matvec(const at::Tensor& gate_up, const at::Tensor& w, const at::Tensor& residual = {},
                                  bool weights_settled = false) {
  detail::require_fused_build("silu_mul_matvec");
  MECHLENS_CHECK(silu_mul_matvec_applies(gate_up, w) && (!residual.defined() || detail::same_as(residual, gate_up, w.size(0))),
                 ArgumentError, "kernels::silu_mul_matvec: gate_up {}, w {} and residual {} do not fit",
                 shape_str(gate_up.sizes()), shape_str(w.sizes()),
                 residual.defined() ? shape_str(residual.sizes()) : "(none)");
  return detail::launch_gemv(gate_up, w, {}, 0.0, residual, 2, weights_settled, "silu_mul_matvec");
}

/// x w^T (+ bias): matvec where it applies, else at::linear.
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias = {}) {
  if (!bias.defined() && matvec_applies(x, w)) return matvec(x, w);
  return at::linear(x, w, bias);
}

}  // namespace mechlens::kernels
