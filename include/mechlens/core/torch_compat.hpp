#pragma once
/// \file
/// Every difference between Debian's LibTorch 1.13 (CPU) and upstream LibTorch 2.x lives here,
/// behind MECHLENS_TORCH_AT_LEAST(major, minor). Versions are compared as pairs.

#include <torch/version.h>

#include <ATen/ATen.h>

#define MECHLENS_TORCH_VERSION_PAIR(major, minor) ((major) * 1000 + (minor))
#define MECHLENS_TORCH_AT_LEAST(major, minor) \
  (MECHLENS_TORCH_VERSION_PAIR(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR) >= \
   MECHLENS_TORCH_VERSION_PAIR(major, minor))

namespace mechlens::compat {

/// True when at::scaled_dot_product_attention (fused attention) exists.
constexpr bool kHasFusedAttention = MECHLENS_TORCH_AT_LEAST(2, 0);

/// True when CPU matrix products exist for float16 (LibTorch 1.13's addmm has none).
constexpr bool kHasCpuHalfMatmul = MECHLENS_TORCH_AT_LEAST(2, 1);

/// True when bfloat16 / float16 results on `t`'s device are rounded once from a float32
/// computation, as transformers' (LibTorch 2.x) are: batched matrix products summed in float32,
/// silu evaluated in float32. CUDA always; the CPU from LibTorch 2.1 (1.13's CPU batched matmul
/// and silu in half precision are off by a unit in a third / a quarter of the entries). Where it
/// is false, mechlens computes in float32 and rounds itself.
inline bool half_ops_round_once(const at::Tensor& t) { return t.is_cuda() || MECHLENS_TORCH_AT_LEAST(2, 1); }

}  // namespace mechlens::compat

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#ifdef MECHLENS_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace mechlens::compat {

/// A seeded generator on `device` (CPU, or CUDA where this LibTorch has it): sampling with it
/// repeats exactly for the same seed.
inline at::Generator make_generator(uint64_t seed, at::Device device = at::kCPU) {
#ifdef MECHLENS_WITH_CUDA
  if (device.is_cuda()) {
    at::Generator gen = at::cuda::detail::createCUDAGenerator(device.index());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  (void)device;
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

}  // namespace mechlens::compat
