#pragma once
/// \file
/// The fused SwiGLU kernel `silu_mul`: silu(gate) * up from the fused gate/up projection's output
/// (2 ATen kernels -> 1), silu rounded to the activation dtype before the multiply, as Hugging
/// Face's Llama rounds. The CUDA source is kernels/source/activations.hpp. Call it where
/// fused_available(gate_up) (kernels/fused_module.hpp).

#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "mechlens/core/error.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"

namespace mechlens::kernels {

/// gate_up [..., 2f] (gate first, as MlpImpl fuses them) -> silu(gate) * up [..., f].
inline at::Tensor silu_mul(const at::Tensor& gate_up) {
  detail::require_fused_build("silu_mul");
  detail::check_input(gate_up, gate_up, "silu_mul", "gate_up");
  MECHLENS_CHECK(gate_up.size(-1) % 2 == 0, ShapeError, "kernels::silu_mul: last dimension {} is odd", gate_up.size(-1));
  c10::DeviceGuard guard(gate_up.device());  // launch on gate_up's device and stream
  at::Tensor gu = gate_up.contiguous();
  const int64_t f = gu.size(-1) / 2, rows = gu.numel() / std::max<int64_t>(gu.size(-1), 1);
  auto sizes = gu.sizes().vec();
  sizes.back() = f;
  at::Tensor out = at::empty(sizes, gu.options());
  if (rows == 0 || f == 0) return out;
  void *pg = gu.data_ptr(), *po = out.data_ptr();
  long long r = rows;
  int fi = static_cast<int>(f);
  const int64_t blocks = std::min<int64_t>((rows * f + 255) / 256, 65535);
  launch(detail::kernel(gu.scalar_type(), "silu_mul", "silu_mul"), Dim3(static_cast<unsigned>(blocks)), Dim3(256),
         {&pg, &po, &r, &fi});
  return out;
}

}  // namespace mechlens::kernels
