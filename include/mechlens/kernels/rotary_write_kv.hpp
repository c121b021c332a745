#pragma once
/// \file
/// The fused rotary + KV-cache write of one decoding step, `rotary_write_kv` (6 ATen kernels ->
/// 1): rotary on q and k as Hugging Face's Llama computes it (x * cos + rotate_half(x) * sin, each
/// product and the sum rounded to the activation dtype, cos / sin from float32 angles), and the
/// rotated k and the v written into the cache at a device-side slot (what a CUDA graph replays).
/// The CUDA source is kernels/source/rotary_write_kv.hpp. Call it where fused_available(qkv)
/// (kernels/fused_module.hpp).

#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"

namespace mechlens::kernels {

/// One decoding step's rotary and cache write: qkv [b, 1, (hq + 2 hkv) * d] (one GEMM's output),
/// positions [b, 1] (int64), inv_freq [d / 2] (float32), slot [1] (int64, the cache slot to
/// write); keys / values are one layer of the cache, [b, hkv, capacity, d], contiguous. Returns
/// the rotated queries [b, 1, hq, d]; rotated keys and the values land in the cache at `slot`.
inline at::Tensor rotary_write_kv(const at::Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, const at::Tensor& positions,
                                  const at::Tensor& inv_freq, const at::Tensor& slot, at::Tensor& keys, at::Tensor& values) {
  detail::require_fused_build("rotary_write_kv");
  detail::check_input(qkv, qkv, "rotary_write_kv", "qkv");
  detail::check_input(keys, qkv, "rotary_write_kv", "keys");
  detail::check_input(values, qkv, "rotary_write_kv", "values");
  const int64_t b = qkv.size(0), d = keys.size(-1);
  MECHLENS_CHECK(qkv.dim() == 3 && qkv.size(1) == 1 && qkv.size(2) == (n_heads + 2 * n_kv_heads) * d && d % 2 == 0,
                 ShapeError, "kernels::rotary_write_kv: qkv has shape {}, expected [{}, 1, {}]", shape_str(qkv.sizes()),
                 b, (n_heads + 2 * n_kv_heads) * d);
  MECHLENS_CHECK(keys.dim() == 4 && keys.size(0) == b && keys.size(1) == n_kv_heads && keys.is_contiguous() &&
                     values.sizes() == keys.sizes() && values.is_contiguous(),
                 ShapeError, "kernels::rotary_write_kv: cache layer {} / {} must be contiguous [{}, {}, capacity, {}]",
                 shape_str(keys.sizes()), shape_str(values.sizes()), b, n_kv_heads, d);
  MECHLENS_CHECK(positions.numel() == b && positions.scalar_type() == at::kLong && positions.device() == qkv.device() &&
                     inv_freq.numel() == d / 2 && inv_freq.scalar_type() == at::kFloat &&
                     inv_freq.device() == qkv.device() && slot.numel() == 1 && slot.scalar_type() == at::kLong &&
                     slot.device() == qkv.device(),
                 ArgumentError,
                 "kernels::rotary_write_kv: positions [{}] int64, inv_freq [{}] float32 and slot [1] int64 must be on {}",
                 b, d / 2, qkv.device().str());
  c10::DeviceGuard guard(qkv.device());  // launch on qkv's device and stream
  at::Tensor src = qkv.stride(-1) == 1 ? qkv : qkv.contiguous();
  at::Tensor pos = positions.contiguous(), freq = inv_freq.contiguous();
  at::Tensor q = at::empty({b, 1, n_heads, d}, qkv.options());
  void *pq = src.data_ptr(), *pp = pos.data_ptr(), *pf = freq.data_ptr(), *ps = slot.data_ptr(), *po = q.data_ptr(),
       *pk = keys.data_ptr(), *pv = values.data_ptr();
  long long row_stride = src.stride(0), cache_row = keys.stride(0), cache_head = keys.stride(1);
  int hq = static_cast<int>(n_heads), hkv = static_cast<int>(n_kv_heads), di = static_cast<int>(d);
  launch(detail::kernel(qkv.scalar_type(), "rotary_write_kv", "rotary_write_kv"),
         Dim3(static_cast<unsigned>(n_heads + 2 * n_kv_heads), static_cast<unsigned>(b)),
         Dim3(static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(((d / 2 + 31) / 32) * 32, 32), 1024))),
         {&pq, &row_stride, &pp, &pf, &ps, &po, &pk, &pv, &hq, &hkv, &di, &cache_row, &cache_head});
  return q;
}

}  // namespace mechlens::kernels
