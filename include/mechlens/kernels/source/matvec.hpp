#pragma once
/// \file
/// CUDA C++ source of the matrix-vector kernels `gemv_rows` and `gemv_split` (one row's x W^T,
/// with RMSNorm or SwiGLU before and the residual add after, by `mode`) and their helpers
/// (16-byte unpack / pack, programmatic dependent launch), the last part of the fused kernels'
/// NVRTC program; kernels/matvec.hpp launches them. Needs source/common.hpp before it.

namespace mechlens::kernels::source {

inline const char* matvec() {
  return R"CUDA(
// 16 bytes of T as floats: 4 float32 or 8 bfloat16 / float16 (little-endian halves).
#if ML_KIND == 0
#define ML_VEC 4
__device__ __forceinline__ void unpack(const uint4& q, float* f) {
  f[0] = __uint_as_float(q.x); f[1] = __uint_as_float(q.y); f[2] = __uint_as_float(q.z); f[3] = __uint_as_float(q.w);
}
#else
#define ML_VEC 8
__device__ __forceinline__ void unpack(const uint4& q, float* f) {
  const unsigned int u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = ld((T)(u[i] & 0xffffu));
    f[2 * i + 1] = ld((T)(u[i] >> 16));
  }
}
#endif

// Programmatic dependent launch (sm_90 and later; no-ops before): a matrix-vector kernel launched
// with it may start while the kernel before it finishes, loading its first weights (which no
// kernel writes) before waiting for that kernel's output; it lets the next kernel start once its
// own weight loads are done.
__device__ __forceinline__ void wait_for_prior_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// y [N] = W [N, K] x' [K] for one row (batch-1 decoding), where x' is, by `mode`:
//   0: x itself;
//   1: RMSNorm(x) with weight `gamma` and `eps`, rounded as the rms_norm kernel rounds;
//   2: silu(x[:K]) * x[K:2K] (x holds gate and up), rounded as the silu_mul kernel rounds.
// With `resid`, y = resid + rounded(W x'), rounded again: transformers' residual add after o_proj
// and down_proj. Every row's sum is in float32, rounded once. Each block makes x' itself (into
// shared memory, K elements, or chunk by chunk in gemv_split's mode 2; cheap beside streaming
// W), so the norm or activation needs no kernel of its own. Needs K % ML_VEC == 0, 16-byte
// aligned W, x and gamma, and the shared memory of the staged x' (the host checks and sets it).
//
// Two layouts of the same sums: gemv_rows gives each warp ML_ROWS_PER_WARP whole rows (many
// rows, K of a few thousand: q/k/v, gate/up, lm_head); gemv_split gives each block of
// ML_SPLIT_THREADS threads ML_SPLIT_ROWS rows, its warps splitting K (few, long rows: o_proj,
// down_proj), so that either way enough 16-byte loads are in flight on every SM.
#if ML_KIND == 0
__device__ __forceinline__ uint4 pack(const float* f) {
  return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
}
#else
__device__ __forceinline__ uint4 pack(const float* f) {
  unsigned int u[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) u[i] = (unsigned int)st(f[2 * i]) | ((unsigned int)st(f[2 * i + 1]) << 16);
  return make_uint4(u[0], u[1], u[2], u[3]);
}
#endif

template <int R>
struct GemvPart {
  const uint4* w[R];
  float acc[R];
  __device__ __forceinline__ void init(const T* W, int row0, int N, int K) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      w[r] = (const uint4*)(W + (long long)min(row0 + r, N - 1) * K);
      acc[r] = 0.f;
    }
  }
  __device__ __forceinline__ void load(int i, uint4* q) const {
#pragma unroll
    for (int r = 0; r < R; ++r) q[r] = __ldg(w[r] + i);
  }
  // acc += W[:, chunk i] . x'[chunk i]; with `silu`, x' = silu(xs[chunk i]) * xs[chunk kv + i]
  // made here (mode 2 without staging: gemv_split's rows share it four ways).
  __device__ __forceinline__ void add(int i, const uint4* q, const uint4* xs, bool silu = false, int kv = 0) {
    float xf[ML_VEC];
    unpack(xs[i], xf);
    if (silu) {
      float uf[ML_VEC];
      unpack(xs[kv + i], uf);
#pragma unroll
      for (int e = 0; e < ML_VEC; ++e) xf[e] = rnd(rnd(xf[e] / (1.0f + expf(-xf[e]))) * uf[e]);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float wf[ML_VEC];
      unpack(q[r], wf);
#pragma unroll
      for (int e = 0; e < ML_VEC; ++e) acc[r] = fmaf(wf[e], xf[e], acc[r]);
    }
  }
};

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ void write_row(T* y, const T* resid, int row, float v) {
  float out = rnd(v);
  if (resid) out += ld(resid[row]);
  y[row] = st(out);
}

// The block's x' for modes 1 and 2, made once into shared memory `xs` (K elements of T) by all
// the block's threads; returns what the rows read: xs, or x itself in mode 0.
__device__ const uint4* block_input(const T* x, const T* gamma, float eps, int K, int mode, uint4* xs, float* red) {
  const uint4* xv = (const uint4*)x;
  if (mode == 0) return xv;
  const int kv = K / ML_VEC;
  float rstd = 1.f;
  if (mode == 1) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < kv; i += blockDim.x) {
      float xf[ML_VEC];
      unpack(xv[i], xf);
#pragma unroll
      for (int e = 0; e < ML_VEC; ++e) ss += xf[e] * xf[e];
    }
    rstd = rsqrtf(block_sum(ss, red) * (1.0f / (float)K) + eps);
  }
  for (int i = threadIdx.x; i < kv; i += blockDim.x) {
    float xf[ML_VEC], other[ML_VEC];
    unpack(xv[i], xf);
    if (mode == 1) {
      unpack(((const uint4*)gamma)[i], other);
#pragma unroll
      for (int e = 0; e < ML_VEC; ++e) xf[e] = rnd(other[e] * rnd(xf[e] * rstd));
    } else {
      unpack(xv[kv + i], other);
#pragma unroll
      for (int e = 0; e < ML_VEC; ++e) xf[e] = rnd(rnd(xf[e] / (1.0f + expf(-xf[e]))) * other[e]);
    }
    xs[i] = pack(xf);
  }
  __syncthreads();
  return xs;
}

#define ML_ROWS_PER_WARP 2
extern "C" __global__ void gemv_rows(const T* __restrict__ W, const T* __restrict__ x, const T* __restrict__ gamma,
                                     float eps, const T* __restrict__ resid, T* __restrict__ y, int N, int K,
                                     int mode) {
  extern __shared__ uint4 staged[];
  __shared__ float red[32];
  const int warp = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  const bool spare = warp * ML_ROWS_PER_WARP >= N;  // a spare warp of the last block: computes, writes nothing
  const int row0 = spare ? 0 : warp * ML_ROWS_PER_WARP;
  const int kv = K / ML_VEC;
  GemvPart<ML_ROWS_PER_WARP> part;
  part.init(W, row0, N, K);
  uint4 q0[ML_ROWS_PER_WARP];
  if (lane < kv) part.load(lane, q0);
  wait_for_prior_kernel();
  const uint4* xs = block_input(x, gamma, eps, K, mode, staged, red);
  if (lane < kv) part.add(lane, q0, xs);
#pragma unroll 4
  for (int i = lane + 32; i < kv; i += 32) {
    uint4 q[ML_ROWS_PER_WARP];
    part.load(i, q);
    part.add(i, q, xs);
  }
  allow_next_kernel();
  if (spare) return;
#pragma unroll
  for (int r = 0; r < ML_ROWS_PER_WARP; ++r) {
    const float v = warp_sum(part.acc[r]);
    if (lane == 0 && row0 + r < N) write_row(y, resid, row0 + r, v);
  }
}

#define ML_SPLIT_ROWS 4
#define ML_SPLIT_THREADS 256
extern "C" __global__ void __launch_bounds__(ML_SPLIT_THREADS)
gemv_split(const T* __restrict__ W, const T* __restrict__ x, const T* __restrict__ gamma, float eps,
           const T* __restrict__ resid, T* __restrict__ y, int N, int K, int mode) {
  extern __shared__ uint4 staged[];
  __shared__ float red[32];
  __shared__ float partial[ML_SPLIT_THREADS / 32][ML_SPLIT_ROWS];
  const int row0 = blockIdx.x * ML_SPLIT_ROWS;
  const int kv = K / ML_VEC;
  GemvPart<ML_SPLIT_ROWS> part;
  part.init(W, row0, N, K);
  uint4 q0[ML_SPLIT_ROWS];
  const int first = threadIdx.x;
  if (first < kv) part.load(first, q0);
  wait_for_prior_kernel();
  // Mode 2 is made in the loop (no staging: the 4 rows share it), mode 1 staged.
  const bool silu = mode == 2;
  const uint4* xs = silu ? (const uint4*)x : block_input(x, gamma, eps, K, mode, staged, red);
  if (first < kv) part.add(first, q0, xs, silu, kv);
#pragma unroll 2
  for (int i = first + ML_SPLIT_THREADS; i < kv; i += ML_SPLIT_THREADS) {
    uint4 q[ML_SPLIT_ROWS];
    part.load(i, q);
    part.add(i, q, xs, silu, kv);
  }
  allow_next_kernel();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < ML_SPLIT_ROWS; ++r) {
    const float v = warp_sum(part.acc[r]);
    if (lane == 0) partial[warp][r] = v;
  }
  __syncthreads();
  if (threadIdx.x < ML_SPLIT_ROWS && row0 + (int)threadIdx.x < N) {
    float v = 0.f;
    for (int w = 0; w < ML_SPLIT_THREADS / 32; ++w) v += partial[w][threadIdx.x];
    write_row(y, resid, row0 + threadIdx.x, v);
  }
}
)CUDA";
}

}  // namespace mechlens::kernels::source
