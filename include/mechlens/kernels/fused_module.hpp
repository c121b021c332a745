#pragma once
/// \file
/// The fused kernels' NVRTC program, and when the kernels run. The program is `#define ML_KIND k`
/// (0 float32, 1 bfloat16, 2 float16) followed by the CUDA C++ of each kernel family in
/// kernels/source/ (common, norms, activations, rotary_write_kv, matvec, sampling, in that order),
/// compiled once per dtype and device by the runtime compiler (kernels/runtime_compiler.hpp).
/// `fused_available(x)` says whether the kernels run for activations like x; the launchers
/// (kernels/norms.hpp, activations.hpp, rotary_write_kv.hpp, matvec.hpp, sampling.hpp) share the checks below.
///
/// The build has the kernels where MECHLENS_WITH_CUDA and MECHLENS_WITH_NVRTC are defined
/// (mechlens' CMake defines both wherever LibTorch has CUDA; NVRTC itself is found at run time).
/// Without them everything here still compiles, fused_available is false, and a launcher called
/// anyway throws ArgumentError.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/DeviceType.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "mechlens/core/error.hpp"
#include "mechlens/kernels/runtime_compiler.hpp"
#include "mechlens/kernels/source/activations.hpp"
#include "mechlens/kernels/source/common.hpp"
#include "mechlens/kernels/source/matvec.hpp"
#include "mechlens/kernels/source/norms.hpp"
#include "mechlens/kernels/source/rotary_write_kv.hpp"
#include "mechlens/kernels/source/sampling.hpp"
#include "mechlens/kernels/switch.hpp"

namespace mechlens::kernels {

namespace detail {

#if defined(MECHLENS_WITH_CUDA) && defined(MECHLENS_WITH_NVRTC)
constexpr bool kFusedKernelsBuilt = true;
#else
constexpr bool kFusedKernelsBuilt = false;
#endif

/// The CUDA C++ of every fused kernel (without ML_KIND's definition): the families' parts in
/// the order they build on each other.
inline std::string kernel_source() {
  std::string s = source::common();
  s += source::norms();
  s += source::activations();
  s += source::rotary_write_kv();
  s += source::matvec();
  s += source::sampling();
  return s;
}

/// ML_KIND of dtype `t`, or -1 where no kernel is compiled for it.
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
  const int device = static_cast<int>(c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getDevice().index());
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

[[noreturn]] inline void no_fused(const char* op) {
  throw ArgumentError(std::string("kernels::") + op +
                      ": this build has no fused CUDA kernels (needs a CUDA LibTorch and NVRTC); check "
                      "fused_available() first");
}

/// The first step of every launcher: in a build without the kernels, the error no_fused raises.
inline void require_fused_build(const char* op) {
  if (!kFusedKernelsBuilt) no_fused(op);
}

/// Kernel `name` of the module for dtype `t` on the current device (for launcher `op`).
inline driver::Function kernel(at::ScalarType t, const char* name, const char* op) {
  CompiledModule* m = module_for(t);
  MECHLENS_CHECK(m, ArgumentError,
                 "kernels::{}: the fused kernels are unavailable for {} on this device; check fused_available() first",
                 op, c10::toString(t));
  return m->function(name);
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

/// Whether the fused kernels run for activations like `x`: a CUDA tensor of float32 / bfloat16 /
/// float16, a build with the kernels, the runtime compiler working on x's device, no autograd
/// needed (the kernels have no backward), and not switched off (kernels/switch.hpp).
inline bool fused_available(const at::Tensor& x) {
  if (!detail::kFusedKernelsBuilt || !fused_enabled() || !x.defined() || !x.is_cuda() ||
      detail::dtype_kind(x.scalar_type()) < 0)
    return false;
  if (at::GradMode::is_enabled()) return false;  // the kernels have no backward
  c10::DeviceGuard guard(x.device());             // compiled for x's device
  return detail::module_for(x.scalar_type()) != nullptr;
}

}  // namespace mechlens::kernels
