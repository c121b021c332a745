#pragma once
/// \file
/// The fused RMSNorm kernels: `rms_norm` (8 ATen kernels -> 1) and `add_rms_norm`, the residual
/// add and the RMSNorm of the sum (9 -> 1). RMSNorm in float32, cast back to the activation dtype
/// before the weight multiply, as Hugging Face's Llama rounds; the sum of squares in another order
/// than ATen's (tests/models/test_fused_kernels.cpp states the tolerance). The CUDA source is
/// kernels/source/norms.hpp. Call them where fused_available(x) (kernels/fused_module.hpp).

#include <cstdint>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"

namespace mechlens::kernels {

/// RMSNorm of x [..., d] with weight [d] -> same shape (see the file comment for the rounding).
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  detail::require_fused_build("rms_norm");
  detail::check_input(x, x, "rms_norm", "x");
  detail::check_input(weight, x, "rms_norm", "weight");
  const int64_t d = x.size(-1);
  MECHLENS_CHECK(weight.dim() == 1 && weight.size(0) == d, ShapeError, "kernels::rms_norm: weight has {} entries, x rows {}",
                 weight.numel(), d);
  c10::DeviceGuard guard(x.device());  // launch on x's device and stream
  at::Tensor xc = x.contiguous(), wc = weight.contiguous(), out = at::empty_like(xc);
  const int64_t rows = xc.numel() / d;
  if (rows == 0) return out;
  void *px = xc.data_ptr(), *pd = nullptr, *ps = nullptr, *pw = wc.data_ptr(), *po = out.data_ptr();
  int di = static_cast<int>(d);
  float inv_d = 1.0f / static_cast<float>(d), e = static_cast<float>(eps);
  launch(detail::kernel(x.scalar_type(), "rms_norm", "rms_norm"), Dim3(static_cast<unsigned>(rows)),
         Dim3(detail::threads_for(d)), {&px, &pd, &ps, &pw, &po, &di, &inv_d, &e});
  return out;
}

/// (resid + delta, RMSNorm(resid + delta)) in one kernel; the sum is rounded to the activation
/// dtype before it is normalised, as two separate ops would.
inline std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& resid, const at::Tensor& delta,
                                                      const at::Tensor& weight, double eps) {
  detail::require_fused_build("add_rms_norm");
  detail::check_input(resid, resid, "add_rms_norm", "resid");
  detail::check_input(delta, resid, "add_rms_norm", "delta");
  detail::check_input(weight, resid, "add_rms_norm", "weight");
  MECHLENS_CHECK(resid.sizes() == delta.sizes(), ShapeError, "kernels::add_rms_norm: resid {} and delta {} differ",
                 shape_str(resid.sizes()), shape_str(delta.sizes()));
  const int64_t d = resid.size(-1);
  MECHLENS_CHECK(weight.dim() == 1 && weight.size(0) == d, ShapeError,
                 "kernels::add_rms_norm: weight has {} entries, rows have {}", weight.numel(), d);
  c10::DeviceGuard guard(resid.device());  // launch on resid's device and stream
  at::Tensor rc = resid.contiguous(), dc = delta.contiguous(), wc = weight.contiguous();
  at::Tensor sum = at::empty_like(rc), out = at::empty_like(rc);
  const int64_t rows = rc.numel() / d;
  if (rows == 0) return {sum, out};
  void *px = rc.data_ptr(), *pd = dc.data_ptr(), *ps = sum.data_ptr(), *pw = wc.data_ptr(), *po = out.data_ptr();
  int di = static_cast<int>(d);
  float inv_d = 1.0f / static_cast<float>(d), e = static_cast<float>(eps);
  launch(detail::kernel(resid.scalar_type(), "rms_norm", "add_rms_norm"), Dim3(static_cast<unsigned>(rows)),
         Dim3(detail::threads_for(d)), {&px, &pd, &ps, &pw, &po, &di, &inv_d, &e});
  return {sum, out};
}

}  // namespace mechlens::kernels
