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

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
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

/// A compiled module: its kernels by name (a short list searched by name; no allocation once a
/// kernel has been looked up, so a decoding step's launches allocate nothing on the host).
class CompiledModule {
 public:
  CUfunction function(const char* name) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [known, fn] : functions_)
      if (std::strcmp(known, name) == 0) return fn;
    CUfunction fn = nullptr;
    CUresult r = cuModuleGetFunction(&fn, module_, name);
    MECHLENS_CHECK(r == CUDA_SUCCESS, Error, "runtime kernels: no kernel '{}' in the compiled module (CUresult {})",
                   name, static_cast<int>(r));
    functions_.emplace_back(name, fn);  // `name` is a string literal of the caller
    return fn;
  }
  explicit CompiledModule(CUmodule m) : module_(m) {}

 private:
  CUmodule module_;
  std::mutex mutex_;
  std::vector<std::pair<const char*, CUfunction>> functions_;
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

/// Whether kernels that support it are launched with programmatic dependent launch (Hopper and
/// later): they may start while the kernel before them finishes (see launch). On by default;
/// off with set_early_launch_enabled(false) or the environment variable
/// MECHLENS_EARLY_LAUNCH=0 (to measure what it gains).
inline std::atomic<bool>& early_launch_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("MECHLENS_EARLY_LAUNCH");
    return !(v && std::string(v) == "0");
  }()};
  return on;
}
inline void set_early_launch_enabled(bool on) { early_launch_switch().store(on); }

/// Launches `fn` on the current stream of the current device with `args` (pointers to the
/// arguments, in the kernel's order). With `early_start` (for kernels that wait for their
/// predecessor themselves: PTX griddepcontrol.wait before reading its output) and a device of
/// compute capability 9.0 or later, the launch allows programmatic stream serialization: the
/// kernel's blocks may start once the previous kernel's blocks have all signalled
/// (griddepcontrol.launch_dependents) or exited. CUDA graphs capture this as a programmatic edge.
inline void launch(CUfunction fn, dim3 grid, dim3 block, std::initializer_list<void*> args,
                   unsigned shared_bytes = 0, bool early_start = false) {
  CUstream stream = at::cuda::getCurrentCUDAStream().stream();
  if (early_start && early_launch_switch().load(std::memory_order_relaxed) &&
      at::cuda::getCurrentDeviceProperties()->major >= 9) {
    CUlaunchAttribute attr;
    std::memset(&attr, 0, sizeof(attr));
    attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig config;
    std::memset(&config, 0, sizeof(config));
    config.gridDimX = grid.x;
    config.gridDimY = grid.y;
    config.gridDimZ = grid.z;
    config.blockDimX = block.x;
    config.blockDimY = block.y;
    config.blockDimZ = block.z;
    config.sharedMemBytes = shared_bytes;
    config.hStream = stream;
    config.attrs = &attr;
    config.numAttrs = 1;
    CUresult r = cuLaunchKernelEx(&config, fn, const_cast<void**>(args.begin()), nullptr);
    MECHLENS_CHECK(r == CUDA_SUCCESS, Error, "runtime kernels: cuLaunchKernelEx returned {}", static_cast<int>(r));
    return;
  }
  CUresult r = cuLaunchKernel(fn, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes, stream,
                              const_cast<void**>(args.begin()), nullptr);
  MECHLENS_CHECK(r == CUDA_SUCCESS, Error, "runtime kernels: cuLaunchKernel returned {}", static_cast<int>(r));
}

}  // namespace mechlens::kernels

#endif  // MECHLENS_WITH_CUDA && MECHLENS_WITH_NVRTC
