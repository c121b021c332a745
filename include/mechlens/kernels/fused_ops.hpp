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
///
/// Each computes what Hugging Face's Llama computes, rounding where it rounds: RMSNorm in float32
/// cast back to the activation dtype before the weight multiply; rotary as
/// x * cos + rotate_half(x) * sin with each product and the sum rounded to the activation dtype,
/// cos/sin from float32 angles; silu rounded before the multiply. The only difference is the order
/// of the float32 sum of squares in RMSNorm (a last-bit effect; tests/models/fused_kernels_test.cpp
/// states the tolerances).
///
/// They run where `fused_available(x)` says so: CUDA tensors of float32 / bfloat16 / float16, a
/// build with NVRTC (MECHLENS_WITH_NVRTC), no autograd needed, and not switched off
/// (`set_fused_enabled(false)`, or the environment variable MECHLENS_FUSED_KERNELS=0). Elsewhere
/// the model keeps its ATen path, which is also the reference the kernels are tested against.

#include <atomic>
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
)CUDA";
}

inline int dtype_kind(at::ScalarType t) {
  return t == at::kFloat ? 0 : t == at::kBFloat16 ? 1 : t == at::kHalf ? 2 : -1;
}

inline CompiledModule* module_for(at::ScalarType t) {
  const int kind = dtype_kind(t);
  if (kind < 0) return nullptr;
  return compile("mechlens_fused_" + std::to_string(kind),
                 "#define ML_KIND " + std::to_string(kind) + "\n" + kernel_source());
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
  return detail::module_for(x.scalar_type()) != nullptr;
}

/// RMSNorm of x [..., d] with weight [d] -> same shape (see the file comment for the rounding).
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  detail::check_input(x, x, "rms_norm", "x");
  detail::check_input(weight, x, "rms_norm", "weight");
  const int64_t d = x.size(-1);
  MECHLENS_CHECK(weight.dim() == 1 && weight.size(0) == d, ShapeError, "kernels::rms_norm: weight has {} entries, x rows {}",
                 weight.numel(), d);
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
inline at::Tensor rotary_write_kv(const at::Tensor&, int64_t, int64_t, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, at::Tensor&, at::Tensor&) {
  detail::no_fused("rotary_write_kv");
}

#endif

}  // namespace mechlens::kernels
