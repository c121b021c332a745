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

}  // namespace mechlens::compat

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

namespace mechlens::compat {

/// A seeded CPU generator (the same call on 1.13 and 2.x).
inline at::Generator make_generator(uint64_t seed, at::Device device = at::kCPU) {
  (void)device;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return gen;
}

}  // namespace mechlens::compat
