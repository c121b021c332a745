#pragma once
/// \file
/// The sampler's fused kernel `gumbel_argmax`: Gumbel noise from the per-row counter-based hash
/// (generation/sampler.hpp), added to the scores, and the argmax, in one pass over [rows, vocab]
/// (the ATen ops it replaces make about 25 passes over int64 and double copies of that size:
/// at 400 rows x 128,256 tokens, 6 ms of every decoding step). The same integer hash, the same
/// double-precision logarithms and the same float32 add as Sampler::gumbel's ATen ops, and
/// argmax's tie rule (the lowest index; NaN wins), so the tokens are the ATen path's
/// (tests/models/test_fused_kernels.cpp). The CUDA source is kernels/source/sampling.hpp. Call it
/// where fused_available(logits) (kernels/fused_module.hpp).

#include <cstdint>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"

namespace mechlens::kernels {

/// argmax over the vocabulary of scores + G: scores [rows, vocab] float32; k1, k2 [rows] or
/// [rows, 1] int64, each row's two key words (below 2^32) with the step's words already mixed
/// in. `module_dtype`: the dtype whose compiled module to use (the logits'; the kernel itself
/// reads float32). Returns [rows] int64.
inline at::Tensor gumbel_argmax(const at::Tensor& scores, const at::Tensor& k1, const at::Tensor& k2,
                                at::ScalarType module_dtype) {
  detail::require_fused_build("gumbel_argmax");
  MECHLENS_CHECK(scores.defined() && scores.is_cuda() && scores.scalar_type() == at::kFloat && scores.dim() == 2,
                 ArgumentError, "kernels::gumbel_argmax: scores must be a [rows, vocab] float32 CUDA tensor");
  const int64_t rows = scores.size(0), vocab = scores.size(1);
  for (const at::Tensor* k : {&k1, &k2})
    MECHLENS_CHECK(k->defined() && k->device() == scores.device() && k->scalar_type() == at::kLong &&
                       k->numel() == rows,
                   ArgumentError, "kernels::gumbel_argmax: keys must be {} int64 values on {}", rows,
                   scores.device().str());
  MECHLENS_CHECK(vocab > 0 && vocab < (int64_t{1} << 31), ShapeError, "kernels::gumbel_argmax: vocabulary of {}", vocab);
  c10::DeviceGuard guard(scores.device());  // launch on the scores' device and stream
  at::Tensor s = scores.contiguous(), a = k1.contiguous(), b = k2.contiguous();
  at::Tensor out = at::empty({rows}, scores.options().dtype(at::kLong));
  if (rows == 0) return out;
  void *ps = s.data_ptr(), *pa = a.data_ptr(), *pb = b.data_ptr(), *po = out.data_ptr();
  int v = static_cast<int>(vocab);
  launch(detail::kernel(module_dtype, "gumbel_argmax", "gumbel_argmax"), Dim3(static_cast<unsigned>(rows)), Dim3(1024),
         {&ps, &pa, &pb, &po, &v});
  return out;
}

}  // namespace mechlens::kernels
