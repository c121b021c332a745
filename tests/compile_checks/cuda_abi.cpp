// mechlens declares the CUDA driver and NVRTC functions it opens at run time itself
// (include/mechlens/kernels/cuda_driver_api.hpp, nvrtc_api.hpp), so that no CUDA toolkit header
// reaches a user's build. This translation unit, built only where CMake finds a CUDA toolkit's
// cuda.h and nvrtc.h, checks those declarations against the toolkit's: every constant, the
// launch structs' layouts, and each function's signature (the same number of parameters, each
// of the same size and kind; pointers to opaque handles count as pointers). It has no main: that
// it compiles is the test.
#include <cuda.h>
#include <nvrtc.h>

#include <cstddef>
#include <type_traits>

#include <mechlens/kernels/cuda_driver_api.hpp>
#include <mechlens/kernels/nvrtc_api.hpp>

namespace driver = mechlens::kernels::driver;
namespace nvrtc = mechlens::kernels::nvrtc;

namespace {

// Two parameter (or result) types are passed alike: both pointers, or integers / enums of one size.
template <class A, class B>
constexpr bool passed_alike() {
  if constexpr (std::is_pointer_v<A> || std::is_pointer_v<B>)
    return std::is_pointer_v<A> && std::is_pointer_v<B>;
  else if constexpr (std::is_enum_v<A> || std::is_enum_v<B>)
    return sizeof(A) == sizeof(B) && (std::is_integral_v<A> || std::is_enum_v<A>) &&
           (std::is_integral_v<B> || std::is_enum_v<B>);
  else
    return std::is_same_v<A, B>;
}

template <class F, class G>
struct SameAbi : std::false_type {};
template <class R1, class... A1, class R2, class... A2>
struct SameAbi<R1 (*)(A1...), R2 (*)(A2...)> {
  static constexpr bool check() {
    if constexpr (sizeof...(A1) != sizeof...(A2))
      return false;
    else
      return passed_alike<R1, R2>() && (true && ... && passed_alike<A1, A2>());
  }
  static constexpr bool value = check();
};
template <class Mine, class Theirs>
constexpr bool same_abi = SameAbi<Mine, Theirs>::value;

}  // namespace

// The names the driver API is looked up by are the functions themselves (cuda.h maps none of
// them to a versioned symbol unless per-thread default streams are asked for).
#if defined(cuInit) || defined(cuDeviceGet) || defined(cuDeviceGetAttribute) || defined(cuDevicePrimaryCtxRetain) || \
    defined(cuCtxSetCurrent) || defined(cuModuleLoadData) || defined(cuModuleGetFunction) ||                    \
    defined(cuFuncSetAttribute) || defined(cuLaunchKernel) || defined(cuLaunchKernelEx)
#error "cuda.h maps a driver function mechlens resolves by its plain name to another symbol"
#endif

static_assert(same_abi<decltype(driver::Api::init), decltype(&::cuInit)>);
static_assert(same_abi<decltype(driver::Api::device_get), decltype(&::cuDeviceGet)>);
static_assert(same_abi<decltype(driver::Api::device_get_attribute), decltype(&::cuDeviceGetAttribute)>);
static_assert(same_abi<decltype(driver::Api::primary_context_retain), decltype(&::cuDevicePrimaryCtxRetain)>);
static_assert(same_abi<decltype(driver::Api::context_set_current), decltype(&::cuCtxSetCurrent)>);
static_assert(same_abi<decltype(driver::Api::module_load_data), decltype(&::cuModuleLoadData)>);
static_assert(same_abi<decltype(driver::Api::module_get_function), decltype(&::cuModuleGetFunction)>);
static_assert(same_abi<decltype(driver::Api::function_set_attribute), decltype(&::cuFuncSetAttribute)>);
static_assert(same_abi<decltype(driver::Api::launch_kernel), decltype(&::cuLaunchKernel)>);
static_assert(same_abi<decltype(driver::Api::launch_kernel_ex), decltype(&::cuLaunchKernelEx)>);
static_assert(same_abi<decltype(driver::Api::mem_get_info), decltype(&::cuMemGetInfo)>);

static_assert(sizeof(driver::Result) == sizeof(CUresult) && driver::kSuccess == CUDA_SUCCESS);
static_assert(std::is_same_v<driver::Device, CUdevice>);
static_assert(sizeof(driver::Context) == sizeof(CUcontext) && sizeof(driver::Module) == sizeof(CUmodule) &&
              sizeof(driver::Function) == sizeof(CUfunction) && sizeof(driver::Stream) == sizeof(CUstream));
static_assert(driver::kComputeCapabilityMajor == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
static_assert(driver::kComputeCapabilityMinor == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
static_assert(driver::kMaxSharedMemoryPerBlockOptin == CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
static_assert(driver::kMaxDynamicSharedSizeBytes == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
static_assert(driver::kProgrammaticStreamSerialization == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);

static_assert(sizeof(driver::LaunchAttribute) == sizeof(CUlaunchAttribute) &&
              alignof(driver::LaunchAttribute) == alignof(CUlaunchAttribute));
static_assert(offsetof(driver::LaunchAttribute, id) == offsetof(CUlaunchAttribute, id) &&
              sizeof(driver::LaunchAttribute::id) == sizeof(CUlaunchAttribute::id));
static_assert(offsetof(driver::LaunchAttribute, value) == offsetof(CUlaunchAttribute, value) &&
              sizeof(driver::LaunchAttribute::value) == sizeof(CUlaunchAttribute::value));
static_assert(offsetof(driver::LaunchAttribute::Value, programmatic_stream_serialization_allowed) ==
                  offsetof(CUlaunchAttributeValue, programmaticStreamSerializationAllowed) &&
              sizeof(driver::LaunchAttribute::Value::programmatic_stream_serialization_allowed) ==
                  sizeof(CUlaunchAttributeValue::programmaticStreamSerializationAllowed));

static_assert(sizeof(driver::LaunchConfig) == sizeof(CUlaunchConfig) &&
              alignof(driver::LaunchConfig) == alignof(CUlaunchConfig));
static_assert(offsetof(driver::LaunchConfig, grid_dim_x) == offsetof(CUlaunchConfig, gridDimX) &&
              offsetof(driver::LaunchConfig, grid_dim_y) == offsetof(CUlaunchConfig, gridDimY) &&
              offsetof(driver::LaunchConfig, grid_dim_z) == offsetof(CUlaunchConfig, gridDimZ) &&
              offsetof(driver::LaunchConfig, block_dim_x) == offsetof(CUlaunchConfig, blockDimX) &&
              offsetof(driver::LaunchConfig, block_dim_y) == offsetof(CUlaunchConfig, blockDimY) &&
              offsetof(driver::LaunchConfig, block_dim_z) == offsetof(CUlaunchConfig, blockDimZ) &&
              offsetof(driver::LaunchConfig, shared_mem_bytes) == offsetof(CUlaunchConfig, sharedMemBytes) &&
              offsetof(driver::LaunchConfig, stream) == offsetof(CUlaunchConfig, hStream) &&
              offsetof(driver::LaunchConfig, attrs) == offsetof(CUlaunchConfig, attrs) &&
              offsetof(driver::LaunchConfig, num_attrs) == offsetof(CUlaunchConfig, numAttrs));

static_assert(same_abi<decltype(nvrtc::Api::version), decltype(&::nvrtcVersion)>);
static_assert(same_abi<decltype(nvrtc::Api::error_string), decltype(&::nvrtcGetErrorString)>);
static_assert(same_abi<decltype(nvrtc::Api::create_program), decltype(&::nvrtcCreateProgram)>);
static_assert(same_abi<decltype(nvrtc::Api::compile_program), decltype(&::nvrtcCompileProgram)>);
static_assert(same_abi<decltype(nvrtc::Api::get_program_log_size), decltype(&::nvrtcGetProgramLogSize)>);
static_assert(same_abi<decltype(nvrtc::Api::get_program_log), decltype(&::nvrtcGetProgramLog)>);
static_assert(same_abi<decltype(nvrtc::Api::get_cubin_size), decltype(&::nvrtcGetCUBINSize)>);
static_assert(same_abi<decltype(nvrtc::Api::get_cubin), decltype(&::nvrtcGetCUBIN)>);
static_assert(same_abi<decltype(nvrtc::Api::destroy_program), decltype(&::nvrtcDestroyProgram)>);
static_assert(sizeof(nvrtc::Result) == sizeof(nvrtcResult) && nvrtc::kSuccess == NVRTC_SUCCESS);
static_assert(sizeof(nvrtc::Program) == sizeof(nvrtcProgram));
