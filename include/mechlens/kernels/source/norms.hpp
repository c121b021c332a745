#pragma once
/// \file
/// CUDA C++ source of the RMSNorm kernel `rms_norm` (with `delta`: the residual add + RMSNorm of
/// the sum), one part of the fused kernels' NVRTC program; kernels/norms.hpp launches it. Needs
/// source/common.hpp's T, ld, st, rnd and block_sum before it.

namespace mechlens::kernels::source {

inline const char* norms() {
  return R"CUDA(
// One block per row. With `delta`, the row is rounded(x + delta), also written to `sum_out`.
// Rows of up to ML_PER_THREAD * blockDim.x elements are held in registers, their loads all in
// flight at once (a row at batch 1 is latency-bound, not bandwidth-bound); longer rows loop.
#define ML_PER_THREAD 8
extern "C" __global__ void rms_norm(const T* x, const T* delta, T* sum_out, const T* w, T* out, int d,
                                    float inv_d, float eps) {
  __shared__ float shared[32];
  const long long base = (long long)blockIdx.x * d;
  const int step = blockDim.x;
  float ss = 0.f;
  if (d <= ML_PER_THREAD * step) {
    float h[ML_PER_THREAD], dv[ML_PER_THREAD], wv[ML_PER_THREAD];
#pragma unroll
    for (int k = 0; k < ML_PER_THREAD; ++k) {
      const int i = threadIdx.x + k * step;
      const bool in = i < d;
      h[k] = in ? ld(x[base + i]) : 0.f;
      dv[k] = in && delta ? ld(delta[base + i]) : 0.f;
      wv[k] = in ? ld(w[i]) : 0.f;
    }
#pragma unroll
    for (int k = 0; k < ML_PER_THREAD; ++k) {
      const int i = threadIdx.x + k * step;
      if (delta) {
        h[k] = rnd(h[k] + dv[k]);
        if (i < d) sum_out[base + i] = st(h[k]);
      }
      ss += h[k] * h[k];
    }
    ss = block_sum(ss, shared);
    const float rstd = rsqrtf(ss * inv_d + eps);
#pragma unroll
    for (int k = 0; k < ML_PER_THREAD; ++k) {
      const int i = threadIdx.x + k * step;
      if (i < d) out[base + i] = st(wv[k] * rnd(h[k] * rstd));
    }
    return;
  }
  for (int i = threadIdx.x; i < d; i += step) {
    float h = ld(x[base + i]);
    if (delta) {
      h = rnd(h + ld(delta[base + i]));
      sum_out[base + i] = st(h);
    }
    ss += h * h;
  }
  ss = block_sum(ss, shared);
  const float rstd = rsqrtf(ss * inv_d + eps);
  for (int i = threadIdx.x; i < d; i += step) {
    const float h = delta ? ld(sum_out[base + i]) : ld(x[base + i]);
    out[base + i] = st(ld(w[i]) * rnd(h * rstd));
  }
}
)CUDA";
}

}  // namespace mechlens::kernels::source
