#pragma once
/// \file
/// Fused CUDA kernels for the small steps between the GEMMs of a Llama layer, each replacing
/// several ATen kernels with one (what batch-1 decoding is short of; docs/performance.md):
///
///   rms_norm         RMSNorm                                  (8 ATen kernels -> 1)
///   add_rms_norm     residual add, then RMSNorm of the sum     (9 -> 1)
///   silu_mul         SwiGLU's silu(gate) * up                  (2 -> 1)
///   rotary_write_kv  rotary on q and k of one decoding step, k and v written into the KV cache
///                    at a device-side slot                     (6 -> 1)
///   matvec           y = x W^T (+ residual) for one row: batch-1 decoding's projections,
///                    streaming W in 16-byte loads (cuBLAS's GEMMs reach less of the bandwidth
///                    on one row), with the residual add after o_proj / down_proj folded in
///   rms_norm_matvec  RMSNorm(x) W^T: the norm before q/k/v, gate/up and lm_head made inside
///                    the matrix-vector kernel                  (norm + GEMM -> 1)
///   silu_mul_matvec  (silu(gate) * up) W^T (+ residual): down_proj with SwiGLU and the
///                    residual add inside                       (activation + GEMM + add -> 1)
///
/// Each computes what Hugging Face's Llama computes, rounding where it rounds: RMSNorm in float32
/// cast back to the activation dtype before the weight multiply; rotary as
/// x * cos + rotate_half(x) * sin with each product and the sum rounded to the activation dtype,
/// cos/sin from float32 angles; silu rounded before the multiply. The only differences are the
/// order of float32 sums (RMSNorm's sum of squares; the projections' dot products, which cuBLAS
/// also sums in float32 in an order of its own): last-bit effects, with the tolerances stated in
/// tests/models/test_fused_kernels.cpp.
///
/// They run where `fused_available(x)` says so: CUDA tensors of float32 / bfloat16 / float16, a
/// build with NVRTC (MECHLENS_WITH_NVRTC), no autograd needed, and not switched off
/// (`set_fused_enabled(false)`, or the environment variable MECHLENS_FUSED_KERNELS=0). Elsewhere
/// the model keeps its ATen path, which is also the reference the kernels are tested against.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"

namespace mechlens::kernels {

namespace detail {
inline std::atomic<bool>& fused_switch() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("MECHLENS_FUSED_KERNELS");
    return !(env && std::strcmp(env, "0") == 0);
  }()};
  return on;
}
}  // namespace detail

/// Switches the fused kernels on or off for the whole process (default on; MECHLENS_FUSED_KERNELS=0
/// starts with them off). For A/B measurements and tests.
inline void set_fused_enabled(bool on) { detail::fused_switch() = on; }
inline bool fused_enabled() { return detail::fused_switch(); }

#if defined(MECHLENS_WITH_CUDA) && defined(MECHLENS_WITH_NVRTC)

namespace detail {

inline const char* kernel_source() {
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

// One block per (head of q, k and v, row). qkv rows hold [hq + 2 hkv] heads of d; q goes to
// q_out [rows, hq, d], rotated k and v to the cache layer [rows, hkv, capacity, d] at slot[0].
extern "C" __global__ void rotary_write_kv(const T* qkv, long long qkv_row_stride, const long long* positions,
                                           const float* inv_freq, const long long* slot, T* q_out, T* keys,
                                           T* values, int hq, int hkv, int d, long long cache_row_stride,
                                           long long cache_head_stride) {
  const int head = blockIdx.x;
  const long long b = blockIdx.y;
  const T* src = qkv + b * qkv_row_stride + (long long)head * d;
  const long long s = slot[0];
  if (head >= hq + hkv) {
    T* dst = values + b * cache_row_stride + (head - hq - hkv) * cache_head_stride + s * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
    return;
  }
  T* dst = head < hq ? q_out + (b * hq + head) * d : keys + b * cache_row_stride + (head - hq) * cache_head_stride + s * d;
  const float pos = (float)positions[b];
  const int half = d / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * inv_freq[i];
    const float c = rnd(cosf(angle)), sn = rnd(sinf(angle));
    const float x1 = ld(src[i]), x2 = ld(src[i + half]);
    dst[i] = st(rnd(x1 * c) + rnd(-x2 * sn));
    dst[i + half] = st(rnd(x2 * c) + rnd(x1 * sn));
  }
}
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

inline int dtype_kind(at::ScalarType t) {
  return t == at::kFloat ? 0 : t == at::kBFloat16 ? 1 : t == at::kHalf ? 2 : -1;
}

/// The fused kernels compiled for dtype `t` on the current device, or nullptr where they cannot
/// be. Compiled on first use; later calls are two atomic loads (it runs several times a layer).
inline CompiledModule* module_for(at::ScalarType t) {
  const int kind = dtype_kind(t);
  if (kind < 0) return nullptr;
  constexpr int kDevices = 64;
  static std::atomic<CompiledModule*> ready[kDevices][3];  // static: zero-initialized
  static std::atomic<bool> failed[kDevices][3];
  const int device = static_cast<int>(c10::cuda::current_device());
  if (device < 0 || device >= kDevices) return nullptr;
  if (CompiledModule* m = ready[device][kind].load(std::memory_order_acquire)) return m;
  if (failed[device][kind].load(std::memory_order_acquire)) return nullptr;
  CompiledModule* m = compile("mechlens_fused_" + std::to_string(kind),
                              "#define ML_KIND " + std::to_string(kind) + "\n" + kernel_source());
  if (m)
    ready[device][kind].store(m, std::memory_order_release);
  else
    failed[device][kind].store(true, std::memory_order_release);
  return m;
}

inline void check_input(const at::Tensor& t, const at::Tensor& like, const char* op, const char* what) {
  MECHLENS_CHECK(t.defined() && t.is_cuda() && t.scalar_type() == like.scalar_type() && t.device() == like.device(),
                 ArgumentError, "kernels::{}: {} must be a defined {} tensor on {}", op, what,
                 c10::toString(like.scalar_type()), like.device().str());
}

/// Threads for one row of n: about 4 elements each, a multiple of 32, at most 1024.
inline unsigned threads_for(int64_t n) {
  int64_t t = ((n / 4 + 31) / 32) * 32;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(t, 32), 1024));
}

}  // namespace detail

/// Whether the fused kernels run for activations like `x` (see the file comment).
inline bool fused_available(const at::Tensor& x) {
  if (!fused_enabled() || !x.defined() || !x.is_cuda() || detail::dtype_kind(x.scalar_type()) < 0) return false;
  if (at::GradMode::is_enabled()) return false;  // the kernels have no backward
  c10::cuda::CUDAGuard guard(x.device());         // compiled for x's device
  return detail::module_for(x.scalar_type()) != nullptr;
}

/// RMSNorm of x [..., d] with weight [d] -> same shape (see the file comment for the rounding).
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  detail::check_input(x, x, "rms_norm", "x");
  detail::check_input(weight, x, "rms_norm", "weight");
  const int64_t d = x.size(-1);
  MECHLENS_CHECK(weight.dim() == 1 && weight.size(0) == d, ShapeError, "kernels::rms_norm: weight has {} entries, x rows {}",
                 weight.numel(), d);
  c10::cuda::CUDAGuard guard(x.device());  // launch on x's device and stream
  at::Tensor xc = x.contiguous(), wc = weight.contiguous(), out = at::empty_like(xc);
  const int64_t rows = xc.numel() / d;
  if (rows == 0) return out;
  void *px = xc.data_ptr(), *pd = nullptr, *ps = nullptr, *pw = wc.data_ptr(), *po = out.data_ptr();
  int di = static_cast<int>(d);
  float inv_d = 1.0f / static_cast<float>(d), e = static_cast<float>(eps);
  launch(detail::module_for(x.scalar_type())->function("rms_norm"), dim3(static_cast<unsigned>(rows)),
         dim3(detail::threads_for(d)), {&px, &pd, &ps, &pw, &po, &di, &inv_d, &e});
  return out;
}

/// (resid + delta, RMSNorm(resid + delta)) in one kernel; the sum is rounded to the activation
/// dtype before it is normalised, as two separate ops would.
inline std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& resid, const at::Tensor& delta,
                                                      const at::Tensor& weight, double eps) {
  detail::check_input(resid, resid, "add_rms_norm", "resid");
  detail::check_input(delta, resid, "add_rms_norm", "delta");
  detail::check_input(weight, resid, "add_rms_norm", "weight");
  MECHLENS_CHECK(resid.sizes() == delta.sizes(), ShapeError, "kernels::add_rms_norm: resid {} and delta {} differ",
                 shape_str(resid.sizes()), shape_str(delta.sizes()));
  const int64_t d = resid.size(-1);
  MECHLENS_CHECK(weight.dim() == 1 && weight.size(0) == d, ShapeError,
                 "kernels::add_rms_norm: weight has {} entries, rows have {}", weight.numel(), d);
  c10::cuda::CUDAGuard guard(resid.device());  // launch on resid's device and stream
  at::Tensor rc = resid.contiguous(), dc = delta.contiguous(), wc = weight.contiguous();
  at::Tensor sum = at::empty_like(rc), out = at::empty_like(rc);
  const int64_t rows = rc.numel() / d;
  if (rows == 0) return {sum, out};
  void *px = rc.data_ptr(), *pd = dc.data_ptr(), *ps = sum.data_ptr(), *pw = wc.data_ptr(), *po = out.data_ptr();
  int di = static_cast<int>(d);
  float inv_d = 1.0f / static_cast<float>(d), e = static_cast<float>(eps);
  launch(detail::module_for(resid.scalar_type())->function("rms_norm"), dim3(static_cast<unsigned>(rows)),
         dim3(detail::threads_for(d)), {&px, &pd, &ps, &pw, &po, &di, &inv_d, &e});
  return {sum, out};
}

/// gate_up [..., 2f] (gate first, as MlpImpl fuses them) -> silu(gate) * up [..., f].
inline at::Tensor silu_mul(const at::Tensor& gate_up) {
  detail::check_input(gate_up, gate_up, "silu_mul", "gate_up");
  MECHLENS_CHECK(gate_up.size(-1) % 2 == 0, ShapeError, "kernels::silu_mul: last dimension {} is odd", gate_up.size(-1));
  c10::cuda::CUDAGuard guard(gate_up.device());  // launch on gate_up's device and stream
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
  launch(detail::module_for(gu.scalar_type())->function("silu_mul"), dim3(static_cast<unsigned>(blocks)), dim3(256),
         {&pg, &po, &r, &fi});
  return out;
}

/// One decoding step's rotary and cache write: qkv [b, 1, (hq + 2 hkv) * d] (one GEMM's output),
/// positions [b, 1] (int64), inv_freq [d / 2] (float32), slot [1] (int64, the cache slot to
/// write); keys / values are one layer of the cache, [b, hkv, capacity, d], contiguous. Returns
/// the rotated queries [b, 1, hq, d]; rotated keys and the values land in the cache at `slot`.
inline at::Tensor rotary_write_kv(const at::Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, const at::Tensor& positions,
                                  const at::Tensor& inv_freq, const at::Tensor& slot, at::Tensor& keys, at::Tensor& values) {
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
  c10::cuda::CUDAGuard guard(qkv.device());  // launch on qkv's device and stream
  at::Tensor src = qkv.stride(-1) == 1 ? qkv : qkv.contiguous();
  at::Tensor pos = positions.contiguous(), freq = inv_freq.contiguous();
  at::Tensor q = at::empty({b, 1, n_heads, d}, qkv.options());
  void *pq = src.data_ptr(), *pp = pos.data_ptr(), *pf = freq.data_ptr(), *ps = slot.data_ptr(), *po = q.data_ptr(),
       *pk = keys.data_ptr(), *pv = values.data_ptr();
  long long row_stride = src.stride(0), cache_row = keys.stride(0), cache_head = keys.stride(1);
  int hq = static_cast<int>(n_heads), hkv = static_cast<int>(n_kv_heads), di = static_cast<int>(d);
  launch(detail::module_for(qkv.scalar_type())->function("rotary_write_kv"),
         dim3(static_cast<unsigned>(n_heads + 2 * n_kv_heads), static_cast<unsigned>(b)),
         dim3(static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(((d / 2 + 31) / 32) * 32, 32), 1024))),
         {&pq, &row_stride, &pp, &pf, &ps, &po, &pk, &pv, &hq, &hkv, &di, &cache_row, &cache_head});
  return q;
}

namespace detail {
inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

inline bool same_as(const at::Tensor& t, const at::Tensor& like, int64_t n) {
  return t.defined() && t.numel() == n && t.is_contiguous() && t.scalar_type() == like.scalar_type() &&
         t.device() == like.device() && aligned16(t);
}

/// Launches gemv (see the kernel) and returns y: x's shape with the last dimension N.
/// early_start: see kernels::matvec's `weights_settled`.
inline at::Tensor launch_gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& gamma, double eps,
                              const at::Tensor& resid, int mode, bool early_start) {
  c10::cuda::CUDAGuard guard(x.device());  // launch on x's device and stream
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
  CUfunction fn = module_for(x.scalar_type())->function(by_warp ? "gemv_rows" : "gemv_split");
  // x' staged in shared memory: mode 1 always, mode 2 in gemv_rows (gemv_split makes it inline)
  const bool staged = mode == 1 || (mode == 2 && by_warp);
  const auto shared = static_cast<unsigned>(staged ? w.size(1) * w.element_size() : 0);
  if (shared > 48 * 1024) {  // beyond the default: ask for it (within what staged_input_fits allowed)
    CUresult r = cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(shared));
    MECHLENS_CHECK(r == CUDA_SUCCESS, Error, "kernels::matvec: {} bytes of shared memory refused (CUresult {})", shared,
                   static_cast<int>(r));
  }
  launch(fn, dim3(blocks), dim3(256), {&pw, &px, &pg, &feps, &pr, &py, &n, &k, &m}, shared, early_start);
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
  MECHLENS_CHECK(matvec_applies(x, w) && (!residual.defined() || detail::same_as(residual, x, w.size(0))),
                 ArgumentError,
                 "kernels::matvec: x {} ({}), w {} ({}) and residual {} do not fit (one row, contiguous, 16-byte aligned)",
                 shape_str(x.sizes()), c10::toString(x.scalar_type()), shape_str(w.sizes()),
                 c10::toString(w.scalar_type()), residual.defined() ? shape_str(residual.sizes()) : "(none)");
  return detail::launch_gemv(x, w, {}, 0.0, residual, 0, weights_settled);
}

namespace detail {
/// rms_norm_matvec and silu_mul_matvec hold x' (K elements) in a block's shared memory: K must
/// fit what the device grants one block.
inline bool staged_input_fits(const at::Tensor& w, const at::Tensor& x) {
  c10::cuda::CUDAGuard guard(x.device());
  const auto limit = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin) - 1024;
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
  MECHLENS_CHECK(rms_norm_matvec_applies(x, norm_weight, w), ArgumentError,
                 "kernels::rms_norm_matvec: x {}, norm weight {}, w {} do not fit (one row, contiguous, 16-byte aligned)",
                 shape_str(x.sizes()), norm_weight.defined() ? shape_str(norm_weight.sizes()) : "(none)",
                 shape_str(w.sizes()));
  return detail::launch_gemv(x, w, norm_weight, eps, {}, 1, weights_settled);
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
  MECHLENS_CHECK(silu_mul_matvec_applies(gate_up, w) && (!residual.defined() || detail::same_as(residual, gate_up, w.size(0))),
                 ArgumentError, "kernels::silu_mul_matvec: gate_up {}, w {} and residual {} do not fit",
                 shape_str(gate_up.sizes()), shape_str(w.sizes()),
                 residual.defined() ? shape_str(residual.sizes()) : "(none)");
  return detail::launch_gemv(gate_up, w, {}, 0.0, residual, 2, weights_settled);
}

/// x w^T (+ bias): matvec where it applies, else at::linear.
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias = {}) {
  if (!bias.defined() && matvec_applies(x, w)) return matvec(x, w);
  return at::linear(x, w, bias);
}

#else  // no NVRTC: the ATen paths run everywhere

inline bool fused_available(const at::Tensor&) { return false; }
namespace detail {
[[noreturn]] inline void no_fused(const char* op) {
  throw ArgumentError(std::string("kernels::") + op +
                      ": this build has no fused CUDA kernels (needs a CUDA LibTorch and NVRTC); check "
                      "fused_available() first");
}
}  // namespace detail
inline at::Tensor rms_norm(const at::Tensor&, const at::Tensor&, double) { detail::no_fused("rms_norm"); }
inline std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  detail::no_fused("add_rms_norm");
}
inline at::Tensor silu_mul(const at::Tensor&) { detail::no_fused("silu_mul"); }
inline void set_early_launch_enabled(bool) {}  // nothing launches early without NVRTC
inline bool matvec_weight_fits(const at::Tensor&, const at::Tensor&) { return false; }
inline bool matvec_applies(const at::Tensor&, const at::Tensor&) { return false; }
inline at::Tensor matvec(const at::Tensor&, const at::Tensor&, const at::Tensor& = {}, bool = false) {
  detail::no_fused("matvec");
}
inline bool rms_norm_matvec_applies(const at::Tensor&, const at::Tensor&, const at::Tensor&) { return false; }
inline at::Tensor rms_norm_matvec(const at::Tensor&, const at::Tensor&, double, const at::Tensor&, bool = false) {
  detail::no_fused("rms_norm_matvec");
}
inline bool silu_mul_matvec_applies(const at::Tensor&, const at::Tensor&) { return false; }
inline at::Tensor silu_mul_matvec(const at::Tensor&, const at::Tensor&, const at::Tensor& = {}, bool = false) {
  detail::no_fused("silu_mul_matvec");
}
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias = {}) {
  return at::linear(x, w, bias);
}
inline at::Tensor rotary_write_kv(const at::Tensor&, int64_t, int64_t, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, at::Tensor&, at::Tensor&) {
  detail::no_fused("rotary_write_kv");
}

#endif

}  // namespace mechlens::kernels
