#pragma once
/// \file
/// CUDA C++ source of SwiGLU's `silu_mul` kernel, one part of the fused kernels' NVRTC program;
/// kernels/activations.hpp launches it. Needs source/common.hpp's T, ld, st and rnd before it.

namespace mechlens::kernels::source {

inline const char* activations() {
  return R"CUDA(
// gate_up [rows, 2f] -> out [rows, f] = silu(gate) * up.
extern "C" __global__ void silu_mul(const T* gu, T* out, long long rows, int f) {
  const long long n = rows * f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / f;
    const int c = (int)(i - r * f);
    const float g = ld(gu[r * 2 * f + c]), u = ld(gu[r * 2 * f + f + c]);
    out[i] = st(rnd(g / (1.0f + expf(-g))) * u);
  }
}
)CUDA";
}

}  // namespace mechlens::kernels::source
