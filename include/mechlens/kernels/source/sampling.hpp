#pragma once
/// \file
/// CUDA C++ source of the sampler's `gumbel_argmax` kernel, one part of the fused kernels' NVRTC
/// program; kernels/sampling.hpp launches it. Self-contained (float32 scores, int64 keys).

namespace mechlens::kernels::source {

inline const char* sampling() {
  return R"CUDA(
// Sampler::gumbel's hash (generation/sampler.hpp), on 64-bit words holding values below 2^32.
__device__ __forceinline__ unsigned long long ml_mix32(unsigned long long x) {
  x ^= x >> 16;
  x = (x * 0x7FEB352DULL) & 0xFFFFFFFFULL;
  x ^= x >> 15;
  x = (x * 0x5BD1E995ULL) & 0xFFFFFFFFULL;
  return x ^ (x >> 16);
}
// Whether (a, ia) wins over (b, ib) in argmax: NaN first, then the larger value, then the lower index.
__device__ __forceinline__ bool ml_wins(float a, long long ia, float b, long long ib) {
  const bool na = a != a, nb = b != b;
  if (na || nb) return na && (!nb || ia < ib);
  return a > b || (a == b && ia < ib);
}
// One block per row: argmax over v of scores[row, v] + G(row, v), where G = -log(-log(u)) (in
// double, then float) and u = (hash + 1/2) / 2^32 from the row's keys k1, k2 (the step's words
// already mixed in) and the token id, exactly as Sampler::gumbel computes it with ATen ops.
extern "C" __global__ void gumbel_argmax(const float* scores, const long long* k1, const long long* k2,
                                         long long* out, int vocab) {
  __shared__ float best_v[1024];
  __shared__ long long best_i[1024];
  const long long row = blockIdx.x;
  const unsigned long long a = (unsigned long long)k1[row], b = (unsigned long long)k2[row];
  const float* s = scores + row * (long long)vocab;
  float bv = 0.f;
  long long bi = -1;
  for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
    const unsigned long long tok = ((unsigned long long)v * 0x9E3779B1ULL) & 0xFFFFFFFFULL;
    unsigned long long x = ml_mix32((a + tok) & 0xFFFFFFFFULL);
    x = ml_mix32(((x ^ b) + (a >> 7)) & 0xFFFFFFFFULL);
    const double u = ((double)x + 0.5) * (1.0 / 4294967296.0);
    const float g = (float)(-log(-log(u)));
    const float val = s[v] + g;
    if (bi < 0 || ml_wins(val, v, bv, bi)) { bv = val; bi = v; }
  }
  best_v[threadIdx.x] = bv;
  best_i[threadIdx.x] = bi;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) {
      const float ov = best_v[threadIdx.x + half];
      const long long oi = best_i[threadIdx.x + half];
      if (oi >= 0 && (best_i[threadIdx.x] < 0 || ml_wins(ov, oi, best_v[threadIdx.x], best_i[threadIdx.x]))) {
        best_v[threadIdx.x] = ov;
        best_i[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[row] = best_i[0];
}
)CUDA";
}

}  // namespace mechlens::kernels::source
