#pragma once
/// \file
/// The CUDA driver API entry points the runtime compiler uses, declared here with their C ABI
/// (types, enum values and struct layouts as CUDA 12 and 13's cuda.h define them) and taken
/// from libcuda.so.1 with dlopen/dlsym at first use. So no CUDA toolkit header reaches a user's
/// translation unit and nothing links the driver: where it is missing (a machine without an
/// NVIDIA driver), `driver::api()` says why and the fused kernels are unavailable.
/// tests/compile_checks/cuda_abi.cpp checks every declaration here against cuda.h wherever a
/// CUDA toolkit is installed.

#include <cstddef>
#include <string>

#include "mechlens/kernels/shared_library.hpp"

namespace mechlens::kernels::driver {

using Result = int;      ///< CUresult (an enum, passed as an int); kSuccess is CUDA_SUCCESS
using Device = int;      ///< CUdevice: a device ordinal
using Context = void*;   ///< CUcontext
using Module = void*;    ///< CUmodule
using Function = void*;  ///< CUfunction
using Stream = void*;    ///< CUstream (a cudaStream_t is the same pointer)

constexpr Result kSuccess = 0;                  ///< CUDA_SUCCESS
constexpr int kComputeCapabilityMajor = 75;     ///< CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kComputeCapabilityMinor = 76;     ///< CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
constexpr int kMaxSharedMemoryPerBlockOptin = 97;  ///< CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
constexpr int kMaxDynamicSharedSizeBytes = 8;   ///< CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
constexpr int kProgrammaticStreamSerialization = 6;  ///< CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION

/// CUlaunchAttribute: the attribute's id, padding to 8 bytes, and a 64-byte union of values
/// (8-byte aligned: some of its members hold pointers).
struct LaunchAttribute {
  int id;  ///< CUlaunchAttributeID
  char pad[4];
  union Value {
    char pad[64];
    int programmatic_stream_serialization_allowed;  ///< programmaticStreamSerializationAllowed
    void* pointer_alignment;
  } value;
};
static_assert(sizeof(LaunchAttribute) == 72 && alignof(LaunchAttribute) == 8, "CUlaunchAttribute's layout");

/// CUlaunchConfig.
struct LaunchConfig {
  unsigned int grid_dim_x, grid_dim_y, grid_dim_z;
  unsigned int block_dim_x, block_dim_y, block_dim_z;
  unsigned int shared_mem_bytes;
  Stream stream;  ///< hStream
  LaunchAttribute* attrs;
  unsigned int num_attrs;
};
static_assert(sizeof(LaunchConfig) == 56 && alignof(LaunchConfig) == 8, "CUlaunchConfig's layout");

/// The driver functions, named by what they do (the C names in the comments).
struct Api {
  Result (*init)(unsigned int flags);                       ///< cuInit
  Result (*device_get)(Device* device, int ordinal);        ///< cuDeviceGet
  Result (*device_get_attribute)(int* value, int attribute, Device device);  ///< cuDeviceGetAttribute
  Result (*primary_context_retain)(Context* context, Device device);         ///< cuDevicePrimaryCtxRetain
  Result (*context_set_current)(Context context);           ///< cuCtxSetCurrent
  Result (*module_load_data)(Module* module, const void* image);             ///< cuModuleLoadData
  Result (*module_get_function)(Function* function, Module module, const char* name);  ///< cuModuleGetFunction
  Result (*function_set_attribute)(Function function, int attribute, int value);       ///< cuFuncSetAttribute
  Result (*launch_kernel)(Function function, unsigned int grid_x, unsigned int grid_y, unsigned int grid_z,
                          unsigned int block_x, unsigned int block_y, unsigned int block_z, unsigned int shared_bytes,
                          Stream stream, void** params, void** extra);  ///< cuLaunchKernel
  /// cuLaunchKernelEx (drivers of CUDA 12.0 and later); nullptr where the driver lacks it, and
  /// launches then never start early.
  Result (*launch_kernel_ex)(const LaunchConfig* config, Function function, void** params, void** extra);
  /// cuMemGetInfo_v2 (cuda.h's cuMemGetInfo): free and total bytes of the current context's device;
  /// nullptr where the driver lacks it.
  Result (*mem_get_info)(size_t* free_bytes, size_t* total_bytes);
};

/// Loads the driver API from `library` (a file name or path) and initialises it (cuInit);
/// false, with `why`, where the library, a function or the initialisation fails.
inline bool load(const std::string& library, Api& api, std::string& why) {
  api = Api{};
  std::string opened;
  void* lib = open_first_library({library}, opened, why);
  if (!lib) return false;
  const bool all = resolve_function(lib, "cuInit", api.init, library, why) &&
                   resolve_function(lib, "cuDeviceGet", api.device_get, library, why) &&
                   resolve_function(lib, "cuDeviceGetAttribute", api.device_get_attribute, library, why) &&
                   resolve_function(lib, "cuDevicePrimaryCtxRetain", api.primary_context_retain, library, why) &&
                   resolve_function(lib, "cuCtxSetCurrent", api.context_set_current, library, why) &&
                   resolve_function(lib, "cuModuleLoadData", api.module_load_data, library, why) &&
                   resolve_function(lib, "cuModuleGetFunction", api.module_get_function, library, why) &&
                   resolve_function(lib, "cuFuncSetAttribute", api.function_set_attribute, library, why) &&
                   resolve_function(lib, "cuLaunchKernel", api.launch_kernel, library, why);
  if (!all) return false;
  std::string optional;
  resolve_function(lib, "cuLaunchKernelEx", api.launch_kernel_ex, library, optional);
  resolve_function(lib, "cuMemGetInfo_v2", api.mem_get_info, library, optional);
  // A no-op where LibTorch has initialised CUDA already; fails without a usable device.
  const Result r = api.init(0);
  if (r != kSuccess) {
    why = "cuInit returned CUresult " + std::to_string(r);
    return false;
  }
  return true;
}

/// The driver API of this process, loaded from libcuda.so.1 at first use; nullptr where it
/// cannot be (`why` then says why).
inline const Api* api(std::string* why = nullptr) {
  struct Loaded {
    Api api;
    bool ok = false;
    std::string why;
  };
  static const Loaded loaded = [] {
    Loaded l;
    l.ok = load("libcuda.so.1", l.api, l.why);
    return l;
  }();
  if (!loaded.ok && why) *why = "CUDA driver: " + loaded.why;
  return loaded.ok ? &loaded.api : nullptr;
}

}  // namespace mechlens::kernels::driver
