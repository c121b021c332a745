#pragma once
/// \file
/// Every difference between Debian's LibTorch 1.13 (CPU) and upstream LibTorch 2.x lives here,
/// behind MECHLENS_TORCH_AT_LEAST(major, minor) (versions compared as pairs) or, for a call
/// whose presence is easier to test than to date, a detection trait (HasStreamNativeHandle).

#include <type_traits>
#include <utility>

#include <torch/version.h>

#include <ATen/ATen.h>
#include <c10/core/Device.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

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

/// Whether c10 device guard implementation `Impl` has getStreamNativeHandle (see below).
template <class Impl, class = void>
struct HasStreamNativeHandle : std::false_type {};
template <class Impl>
struct HasStreamNativeHandle<
    Impl, std::void_t<decltype(std::declval<const Impl&>().getStreamNativeHandle(std::declval<c10::Stream>()))>>
    : std::true_type {};

/// True when c10 hands out a stream's native handle (a cudaStream_t for CUDA) without the CUDA
/// headers: DeviceGuardImplInterface::getStreamNativeHandle (LibTorch 2.x; 1.13 has none). The
/// runtime-compiled kernels (kernels/runtime_compiler.hpp) launch on LibTorch's current stream
/// through it; where it is false they report themselves unavailable.
constexpr bool kHasStreamNativeHandle = HasStreamNativeHandle<c10::impl::DeviceGuardImplInterface>::value;

/// The native handle of the current stream of `device` (CUDA: the cudaStream_t, nullptr for the
/// legacy default stream), through c10's device-generic interface. Only where
/// kHasStreamNativeHandle; elsewhere nullptr.
template <class Impl = c10::impl::DeviceGuardImplInterface>
void* current_stream_handle(const Impl& impl, c10::Device device) {
  if constexpr (HasStreamNativeHandle<Impl>::value) {
    return impl.getStreamNativeHandle(impl.getStream(device));
  } else {
    (void)impl;
    (void)device;
    return nullptr;
  }
}

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
