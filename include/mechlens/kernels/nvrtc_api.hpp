#pragma once
/// \file
/// NVRTC, CUDA's run-time compiler, declared here with its C ABI (as nvrtc.h of CUDA 11.2 to 13
/// defines it) and taken from its shared library with dlopen/dlsym at first use: no toolkit
/// header, no link. Where no NVRTC is found, `nvrtc::api()` says why and the fused kernels are
/// unavailable.
///
/// Where NVRTC is looked for, in this order:
///   1. the file MECHLENS_NVRTC_LIBRARY names, if that environment variable is set (then only it);
///   2. an NVRTC this process has already loaded (LibTorch's own, when it has used it);
///   3. beside the loaded LibTorch, where PyTorch's wheels put it:
///      <torch/lib>/../../nvidia/cu13/lib (CUDA 13 wheels), .../nvidia/cuda_nvrtc/lib (CUDA 11, 12);
///   4. the dynamic loader's search (LD_LIBRARY_PATH, ldconfig's cache): libnvrtc.so, then
///      libnvrtc.so.13, .12 and .11.2.
/// tests/compile_checks/cuda_abi.cpp checks the declarations against nvrtc.h wherever a CUDA
/// toolkit is installed.

#include <cstddef>
#include <cstdlib>
#include <string>
#include <vector>

#include "mechlens/kernels/shared_library.hpp"

namespace mechlens::kernels::nvrtc {

using Result = int;       ///< nvrtcResult (an enum, passed as an int); kSuccess is NVRTC_SUCCESS
using Program = void*;    ///< nvrtcProgram
constexpr Result kSuccess = 0;  ///< NVRTC_SUCCESS

/// The NVRTC functions, named by what they do (the C names in the comments).
struct Api {
  Result (*version)(int* major, int* minor);  ///< nvrtcVersion
  const char* (*error_string)(Result result);  ///< nvrtcGetErrorString
  Result (*create_program)(Program* program, const char* source, const char* name, int num_headers,
                           const char* const* headers, const char* const* include_names);  ///< nvrtcCreateProgram
  Result (*compile_program)(Program program, int num_options, const char* const* options);  ///< nvrtcCompileProgram
  Result (*get_program_log_size)(Program program, size_t* size);  ///< nvrtcGetProgramLogSize
  Result (*get_program_log)(Program program, char* log);          ///< nvrtcGetProgramLog
  Result (*get_cubin_size)(Program program, size_t* size);        ///< nvrtcGetCUBINSize
  Result (*get_cubin)(Program program, char* cubin);              ///< nvrtcGetCUBIN
  Result (*destroy_program)(Program* program);                    ///< nvrtcDestroyProgram
  std::string library;  ///< the file it came from, as opened
};

/// NVRTC's library names for the dynamic loader, newest first after the unversioned link.
inline std::vector<std::string> library_names() {
  return {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"};
}

/// Where NVRTC is looked for when MECHLENS_NVRTC_LIBRARY is not set (steps 3 and 4 of the file
/// comment), given the loaded LibTorch's folder ("" for none).
inline std::vector<std::string> search_list(const std::string& libtorch_dir) {
  std::vector<std::string> list;
  if (!libtorch_dir.empty())
    for (const char* sub : {"/../../nvidia/cu13/lib/", "/../../nvidia/cuda_nvrtc/lib/"})
      for (const std::string& name : library_names()) list.push_back(libtorch_dir + sub + name);
  for (const std::string& name : library_names()) list.push_back(name);
  return list;
}

/// Takes NVRTC's functions from the opened `lib`; false, with `why`, where one is missing.
inline bool resolve(void* lib, const std::string& name, Api& api, std::string& why) {
  api = Api{};
  api.library = name;
  return resolve_function(lib, "nvrtcVersion", api.version, name, why) &&
         resolve_function(lib, "nvrtcGetErrorString", api.error_string, name, why) &&
         resolve_function(lib, "nvrtcCreateProgram", api.create_program, name, why) &&
         resolve_function(lib, "nvrtcCompileProgram", api.compile_program, name, why) &&
         resolve_function(lib, "nvrtcGetProgramLogSize", api.get_program_log_size, name, why) &&
         resolve_function(lib, "nvrtcGetProgramLog", api.get_program_log, name, why) &&
         resolve_function(lib, "nvrtcGetCUBINSize", api.get_cubin_size, name, why) &&
         resolve_function(lib, "nvrtcGetCUBIN", api.get_cubin, name, why) &&
         resolve_function(lib, "nvrtcDestroyProgram", api.destroy_program, name, why);
}

/// Loads NVRTC from the first of `candidates` that opens; false, with `why`, where none opens
/// or the one that does lacks a function.
inline bool load(const std::vector<std::string>& candidates, Api& api, std::string& why) {
  std::string opened;
  void* lib = open_first_library(candidates, opened, why);
  return lib && resolve(lib, opened, api, why);
}

/// NVRTC for this process, found as the file comment says at first use; nullptr where it
/// cannot be (`why` then says why).
inline const Api* api(std::string* why = nullptr) {
  struct Loaded {
    Api api;
    bool ok = false;
    std::string why;
  };
  static const Loaded loaded = [] {
    Loaded l;
    const char* named = std::getenv("MECHLENS_NVRTC_LIBRARY");
    if (named && *named) {
      l.ok = load({named}, l.api, l.why);
      if (!l.ok) l.why = "MECHLENS_NVRTC_LIBRARY: " + l.why;
      return l;
    }
    std::string opened;
    if (void* lib = find_loaded_library(library_names(), opened)) {
      l.ok = resolve(lib, opened, l.api, l.why);
      if (l.ok) return l;
    }
    l.ok = load(search_list(libtorch_folder()), l.api, l.why);
    if (!l.ok) l.why += "; set MECHLENS_NVRTC_LIBRARY to the path of libnvrtc.so";
    return l;
  }();
  if (!loaded.ok && why) *why = "NVRTC: " + loaded.why;
  return loaded.ok ? &loaded.api : nullptr;
}

}  // namespace mechlens::kernels::nvrtc
