#pragma once
/// \file
/// RuntimeKernels: CUDA kernels compiled at run time by NVRTC (once per device and source) and
/// launched with the driver API on LibTorch's current stream, so they join CUDA-graph captures
/// like any ATen kernel. This keeps mechlens header-only: no nvcc, no CUDA language in the
/// user's build; only the CUDA toolkit's NVRTC and driver libraries, found next to a CUDA
/// LibTorch (MECHLENS_WITH_NVRTC is defined by mechlens' CMake when both are there).
///
/// Compiled for the device's own architecture (sm_XY cubin). Where NVRTC cannot compile for it,
/// `compile` returns nullptr and callers keep their ATen path.

#if defined(MECHLENS_WITH_CUDA) && defined(MECHLENS_WITH_NVRTC)

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <cuda.h>
#include <nvrtc.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "mechlens/core/error.hpp"

namespace mechlens::kernels {

/// A compiled module: its kernels by name.
class CompiledModule {
 public:
  CUfunction function(const std::string& name) {
    auto it = functions_.find(name);
    if (it != functions_.end()) return it->second;
    CUfunction fn = nullptr;
    CUresult r = cuModuleGetFunction(&fn, module_, name.c_str());
    MECHLENS_CHECK(r == CUDA_SUCCESS, Error, "runtime kernels: no kernel '{}' in the compiled module (CUresult {})",
                   name, static_cast<int>(r));
    functions_[name] = fn;
    return fn;
  }
  explicit CompiledModule(CUmodule m) : module_(m) {}

 private:
  CUmodule module_;
  std::map<std::string, CUfunction> functions_;
};

/// Compiles `source` for the current CUDA device (cached per device and `key`). Returns nullptr
/// when NVRTC or the driver refuses (the reason is printed once to stderr).
inline CompiledModule* compile(const std::string& key, const std::string& source) {
  static std::mutex mutex;
  static std::map<std::pair<int, std::string>, std::unique_ptr<CompiledModule>> modules;
  std::lock_guard<std::mutex> lock(mutex);
  const int device = static_cast<int>(c10::cuda::current_device());
  auto slot = std::make_pair(device, key);
  auto it = modules.find(slot);
  if (it != modules.end()) return it->second.get();

  auto fail = [&](const std::string& why) -> CompiledModule* {
    std::fprintf(stderr, "mechlens: fused CUDA kernels unavailable (%s); using ATen kernels\n", why.c_str());
    modules[slot] = nullptr;
    return nullptr;
  };
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(device);
  const std::string arch = "--gpu-architecture=sm_" + std::to_string(prop->major) + std::to_string(prop->minor);
  // --fmad=false: products and sums round separately, as the ATen kernels they replace do.
  const char* options[] = {arch.c_str(), "--std=c++17", "--fmad=false"};
  nvrtcProgram program = nullptr;
  if (nvrtcCreateProgram(&program, source.c_str(), (key + ".cu").c_str(), 0, nullptr, nullptr) != NVRTC_SUCCESS)
    return fail("nvrtcCreateProgram failed");
  nvrtcResult compiled = nvrtcCompileProgram(program, 3, options);
  if (compiled != NVRTC_SUCCESS) {
    size_t log_size = 0;
    nvrtcGetProgramLogSize(program, &log_size);
    std::string log(log_size, '\0');
    if (log_size) nvrtcGetProgramLog(program, log.data());
    nvrtcDestroyProgram(&program);
    return fail(std::string("NVRTC: ") + nvrtcGetErrorString(compiled) + " for " + arch + "\n" + log);
  }
  size_t size = 0;
  nvrtcGetCUBINSize(program, &size);
  std::vector<char> cubin(size);
  nvrtcGetCUBIN(program, cubin.data());
  nvrtcDestroyProgram(&program);
  // The driver API acts on the current context: make it the runtime's primary context of `device`.
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  cudaFree(nullptr);
  CUmodule module = nullptr;
  CUresult loaded = cuModuleLoadData(&module, cubin.data());
  if (loaded != CUDA_SUCCESS) return fail("cuModuleLoadData returned " + std::to_string(static_cast<int>(loaded)));
  modules[slot] = std::make_unique<CompiledModule>(module);
  return modules[slot].get();
}

/// Launches `fn` on the current stream of the current device with `args` (pointers to the
/// arguments, in the kernel's order).
inline void launch(CUfunction fn, dim3 grid, dim3 block, std::vector<void*> args, unsigned shared_bytes = 0) {
  CUresult r = cuLaunchKernel(fn, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes,
                              at::cuda::getCurrentCUDAStream().stream(), args.data(), nullptr);
  MECHLENS_CHECK(r == CUDA_SUCCESS, Error, "runtime kernels: cuLaunchKernel returned {}", static_cast<int>(r));
}

}  // namespace mechlens::kernels

#endif  // MECHLENS_WITH_CUDA && MECHLENS_WITH_NVRTC
