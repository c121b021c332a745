#pragma once
/// \file
/// The runtime compiler: CUDA kernels compiled at run time by NVRTC (once per device and source)
/// and launched through the CUDA driver API on LibTorch's current stream, so they join CUDA-graph
/// captures like any ATen kernel. mechlens stays header-only and no CUDA toolkit is needed to
/// build against it: the driver (libcuda.so.1) and NVRTC are opened at first use
/// (kernels/cuda_driver_api.hpp; kernels/nvrtc_api.hpp says where NVRTC is looked for), and
/// LibTorch's current device and stream are asked through c10's device-generic interface
/// (core/torch_compat.hpp), so no CUDA header is included here.
///
/// Compiled for the device's own architecture (sm_XY cubin). Where anything is missing (a
/// LibTorch without CUDA, no NVIDIA driver, no NVRTC, an architecture NVRTC cannot compile for),
/// `compile` returns nullptr, the reason printed once to stderr, and callers keep their ATen path.

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

#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/torch_compat.hpp"
#include "mechlens/kernels/cuda_driver_api.hpp"
#include "mechlens/kernels/nvrtc_api.hpp"

namespace mechlens::kernels {

/// The grid or block dimensions of a launch (CUDA's dim3).
struct Dim3 {
  unsigned int x, y, z;
  constexpr Dim3(unsigned int dim_x = 1, unsigned int dim_y = 1, unsigned int dim_z = 1)
      : x(dim_x), y(dim_y), z(dim_z) {}
};

/// A compiled module: its kernels by name (a short list searched by name; no allocation once a
/// kernel has been looked up, so a decoding step's launches allocate nothing on the host).
class CompiledModule {
 public:
  driver::Function function(const char* name) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [known, fn] : functions_)
      if (std::strcmp(known, name) == 0) return fn;
    driver::Function fn = nullptr;
    driver::Result r = api_->module_get_function(&fn, module_, name);
    MECHLENS_CHECK(r == driver::kSuccess, Error,
                   "runtime kernels: no kernel '{}' in the compiled module (CUresult {})", name, r);
    functions_.emplace_back(name, fn);  // `name` is a string literal of the caller
    return fn;
  }
  CompiledModule(const driver::Api& api, driver::Module m) : api_(&api), module_(m) {}

 private:
  const driver::Api* api_;
  driver::Module module_;
  std::mutex mutex_;
  std::vector<std::pair<const char*, driver::Function>> functions_;
};

namespace detail {

/// What the runtime compiler needs to know of a device.
struct DeviceInfo {
  bool ok = false;  ///< the driver answered
  int major = 0, minor = 0;        ///< compute capability
  int shared_per_block_optin = 0;  ///< the most shared memory a block may ask for, in bytes
};

inline DeviceInfo query_device(const driver::Api& cu, int ordinal) {
  DeviceInfo info;
  driver::Device dev = 0;
  info.ok = cu.device_get(&dev, ordinal) == driver::kSuccess &&
            cu.device_get_attribute(&info.major, driver::kComputeCapabilityMajor, dev) == driver::kSuccess &&
            cu.device_get_attribute(&info.minor, driver::kComputeCapabilityMinor, dev) == driver::kSuccess &&
            cu.device_get_attribute(&info.shared_per_block_optin, driver::kMaxSharedMemoryPerBlockOptin, dev) ==
                driver::kSuccess;
  return info;
}

/// DeviceInfo of CUDA device `ordinal` (LibTorch's numbering), asked once per device; not ok
/// where the driver is not loaded.
inline DeviceInfo device_info(int ordinal) {
  constexpr int kCached = 64;
  const driver::Api* cu = driver::api();
  if (!cu) return {};
  if (ordinal < 0 || ordinal >= kCached) return query_device(*cu, ordinal);
  static std::once_flag once[kCached];
  static DeviceInfo cached[kCached];
  std::call_once(once[ordinal], [&] { cached[ordinal] = query_device(*cu, ordinal); });
  return cached[ordinal];
}

/// LibTorch's CUDA device guard (c10's device-generic view of CUDA), or nullptr, with `why`,
/// where this LibTorch has no CUDA, cannot name its streams' handles, or sees no device.
inline const c10::impl::DeviceGuardImplInterface* cuda_guard(std::string& why) {
  if (!c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA)) {
    why = "this LibTorch has no CUDA";
    return nullptr;
  }
  if (!compat::kHasStreamNativeHandle) {
    why = "this LibTorch's c10 has no getStreamNativeHandle to launch on its CUDA streams";
    return nullptr;
  }
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  if (impl->deviceCount() <= 0) {
    why = "no CUDA device";
    return nullptr;
  }
  return impl;
}

/// Compiles `source` with NVRTC for architecture `arch` (e.g. "sm_90") into `cubin`; false,
/// with `error` (NVRTC's message and log), where it refuses. Needs NVRTC, not a GPU.
inline bool compile_to_cubin(const nvrtc::Api& rtc, const std::string& source, const std::string& name,
                             const std::string& arch, std::vector<char>& cubin, std::string& error) {
  const std::string arch_option = "--gpu-architecture=" + arch;
  // --fmad=false: products and sums round separately, as the ATen kernels they replace do.
  const char* options[] = {arch_option.c_str(), "--std=c++17", "--fmad=false"};
  nvrtc::Program program = nullptr;
  if (rtc.create_program(&program, source.c_str(), name.c_str(), 0, nullptr, nullptr) != nvrtc::kSuccess) {
    error = "nvrtcCreateProgram failed";
    return false;
  }
  const nvrtc::Result compiled = rtc.compile_program(program, 3, options);
  if (compiled != nvrtc::kSuccess) {
    size_t log_size = 0;
    rtc.get_program_log_size(program, &log_size);
    std::string log(log_size, '\0');
    if (log_size) rtc.get_program_log(program, log.data());
    rtc.destroy_program(&program);
    error = std::string("NVRTC: ") + rtc.error_string(compiled) + " for " + arch_option + "\n" + log;
    return false;
  }
  size_t size = 0;
  const bool got = rtc.get_cubin_size(program, &size) == nvrtc::kSuccess && size > 0 &&
                   (cubin.assign(size, '\0'), rtc.get_cubin(program, cubin.data()) == nvrtc::kSuccess);
  rtc.destroy_program(&program);
  if (!got) error = "NVRTC gave no cubin for " + arch_option;
  return got;
}

/// The driver API, for code that runs only once a module has been compiled.
inline const driver::Api& loaded_driver() {
  const driver::Api* cu = driver::api();
  MECHLENS_CHECK(cu, Error, "runtime kernels: the CUDA driver is not loaded (compile a module first)");
  return *cu;
}

}  // namespace detail

/// Whether the runtime compiler can work in this process: a LibTorch with CUDA and a device, the
/// CUDA driver and NVRTC. Where it cannot, `why` (if given) says what is missing.
inline bool runtime_compiler_available(std::string* why = nullptr) {
  std::string reason;
  const bool ok = detail::cuda_guard(reason) && driver::api(&reason) && nvrtc::api(&reason);
  if (!ok && why) *why = reason;
  return ok;
}

/// Compiles `source` for the current CUDA device (cached per device and `key`). Returns nullptr
/// where it cannot (see the file comment; the reason is printed once to stderr).
inline CompiledModule* compile(const std::string& key, const std::string& source) {
  static std::mutex mutex;
  static std::map<std::pair<int, std::string>, std::unique_ptr<CompiledModule>> modules;
  std::lock_guard<std::mutex> lock(mutex);
  std::string why;
  const c10::impl::DeviceGuardImplInterface* cuda = detail::cuda_guard(why);
  const int device = cuda ? static_cast<int>(cuda->getDevice().index()) : -1;
  auto slot = std::make_pair(device, key);
  auto it = modules.find(slot);
  if (it != modules.end()) return it->second.get();

  auto fail = [&](const std::string& reason) -> CompiledModule* {
    std::fprintf(stderr, "mechlens: fused CUDA kernels unavailable (%s); using ATen kernels\n", reason.c_str());
    modules[slot] = nullptr;
    return nullptr;
  };
  if (!cuda) return fail(why);
  const driver::Api* cu = driver::api(&why);
  if (!cu) return fail(why);
  const nvrtc::Api* rtc = nvrtc::api(&why);
  if (!rtc) return fail(why);
  const detail::DeviceInfo info = detail::device_info(device);
  if (!info.ok) return fail("the CUDA driver could not describe device " + std::to_string(device));
  const std::string arch = "sm_" + std::to_string(info.major) + std::to_string(info.minor);
  std::vector<char> cubin;
  std::string error;
  if (!detail::compile_to_cubin(*rtc, source, key + ".cu", arch, cubin, error)) return fail(error);
  // The driver API acts on the thread's current context: make it the primary context of
  // `device`, the one LibTorch's CUDA runtime works in.
  driver::Device dev = 0;
  driver::Context context = nullptr;
  driver::Result r = cu->device_get(&dev, device);
  if (r == driver::kSuccess) r = cu->primary_context_retain(&context, dev);
  if (r == driver::kSuccess) r = cu->context_set_current(context);
  if (r != driver::kSuccess)
    return fail("device " + std::to_string(device) + "'s primary context: CUresult " + std::to_string(r));
  driver::Module module = nullptr;
  driver::Result loaded = cu->module_load_data(&module, cubin.data());
  if (loaded != driver::kSuccess) return fail("cuModuleLoadData returned " + std::to_string(loaded));
  modules[slot] = std::make_unique<CompiledModule>(*cu, module);
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
/// A driver without cuLaunchKernelEx (before CUDA 12) launches plainly.
inline void launch(driver::Function fn, Dim3 grid, Dim3 block, std::initializer_list<void*> args,
                   unsigned shared_bytes = 0, bool early_start = false) {
  const driver::Api& cu = detail::loaded_driver();
  const c10::impl::DeviceGuardImplInterface* cuda = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  const c10::Device device = cuda->getDevice();
  const driver::Stream stream = compat::current_stream_handle(*cuda, device);
  if (early_start && cu.launch_kernel_ex && early_launch_switch().load(std::memory_order_relaxed) &&
      detail::device_info(device.index()).major >= 9) {
    driver::LaunchAttribute attr;
    std::memset(&attr, 0, sizeof(attr));
    attr.id = driver::kProgrammaticStreamSerialization;
    attr.value.programmatic_stream_serialization_allowed = 1;
    driver::LaunchConfig config;
    std::memset(&config, 0, sizeof(config));
    config.grid_dim_x = grid.x;
    config.grid_dim_y = grid.y;
    config.grid_dim_z = grid.z;
    config.block_dim_x = block.x;
    config.block_dim_y = block.y;
    config.block_dim_z = block.z;
    config.shared_mem_bytes = shared_bytes;
    config.stream = stream;
    config.attrs = &attr;
    config.num_attrs = 1;
    driver::Result r = cu.launch_kernel_ex(&config, fn, const_cast<void**>(args.begin()), nullptr);
    MECHLENS_CHECK(r == driver::kSuccess, Error, "runtime kernels: cuLaunchKernelEx returned {}", r);
    return;
  }
  driver::Result r = cu.launch_kernel(fn, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes, stream,
                                      const_cast<void**>(args.begin()), nullptr);
  MECHLENS_CHECK(r == driver::kSuccess, Error, "runtime kernels: cuLaunchKernel returned {}", r);
}

}  // namespace mechlens::kernels
