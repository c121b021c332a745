#pragma once
/// \file
/// CUDA C++ source shared by every fused kernel, the first part of their NVRTC program
/// (kernels/fused_module.hpp puts the parts together): the element type T that ML_KIND selects
/// (0 float32, 1 bfloat16, 2 float16; defined before this part), its load to float32 (`ld`),
/// its store from float32 rounding to nearest even (`st`), `rnd` (the value as T holds it), and
/// `block_sum`, a block-wide float32 sum through one warp's shuffles.

namespace mechlens::kernels::source {

inline const char* common() {
  return R"CUDA(
#if ML_KIND == 0
typedef float T;
__device__ __forceinline__ float ld(T v) { return v; }
__device__ __forceinline__ T st(float f) { return f; }
#elif ML_KIND == 1
typedef unsigned short T;  // bfloat16 bits
__device__ __forceinline__ float ld(T v) { return __uint_as_float(((unsigned int)v) << 16); }
__device__ __forceinline__ T st(float f) {  // round to nearest even, as c10::BFloat16 does
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (T)0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (T)(u >> 16);
}
#else
typedef unsigned short T;  // float16 bits
__device__ __forceinline__ float ld(T v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v)); return f; }
__device__ __forceinline__ T st(float f) { T h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#endif
// The value as the activation dtype holds it.
__device__ __forceinline__ float rnd(float f) { return ld(st(f)); }

__device__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x >> 5) ? shared[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
)CUDA";
}

}  // namespace mechlens::kernels::source
