#pragma once
/// \file
/// Opening a shared library at run time (dlopen) and resolving its C functions (dlsym), for the
/// CUDA driver and NVRTC (kernels/cuda_driver_api.hpp, kernels/nvrtc_api.hpp): mechlens links
/// neither, so a build needs no CUDA toolkit and a missing library makes the fused kernels
/// unavailable instead of stopping the program at load time. A library opened here is never
/// closed (the functions taken from it live as long as the process).

#include <dlfcn.h>
#include <link.h>

#include <cstring>
#include <string>
#include <vector>


namespace mechlens::kernels {

/// The first of `candidates` (file names the dynamic loader searches for, or paths) that opens;
/// nullptr if none does, with `why` naming them and the loader's (last) complaint. `opened` gets
/// the candidate that opened.
inline void* open_first_library(const std::vector<std::string>& candidates, std::string& opened, std::string& why) {
  std::string last_error;
  for (const std::string& name : candidates) {
    if (void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      opened = name;
      return handle;
    }
    const char* e = dlerror();
    last_error = e ? e : "dlopen failed";
  }
  if (candidates.size() == 1) {
    why = last_error;  // the loader's message names the file
  } else {
    why = "none of ";
    for (size_t i = 0; i < candidates.size(); ++i) why += (i ? ", " : "") + candidates[i];
    why += " could be opened (the last: " + last_error + ")";
  }
  return nullptr;
}

/// The library among `names` that this process has already loaded (someone else opened it:
/// LibTorch, for one), or nullptr. Opens nothing new.
inline void* find_loaded_library(const std::vector<std::string>& names, std::string& opened) {
  for (const std::string& name : names)
    if (void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD)) {
      opened = name;
      return handle;
    }
  dlerror();  // clear the failed look-ups' messages
  return nullptr;
}

/// Sets `fn` to the function `symbol` of `library`; false (and `why`) where it has none.
template <class Fn>
bool resolve_function(void* library, const char* symbol, Fn& fn, const std::string& library_name, std::string& why) {
  static_assert(sizeof(Fn) == sizeof(void*), "a function pointer the size of a data pointer (POSIX)");
  dlerror();
  void* address = dlsym(library, symbol);
  if (!address) {
    why = std::string("no ") + symbol + " in " + library_name;
    fn = nullptr;
    return false;
  }
  std::memcpy(&fn, &address, sizeof(fn));  // POSIX: dlsym's void* is the function's address
  return true;
}

/// The folder of the loaded LibTorch (of libc10.so: `.../torch/lib` in a PyTorch installation),
/// or "" where no libc10.so is loaded (c10 linked statically).
inline std::string libtorch_folder() {
  std::string folder;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        const char* path = info->dlpi_name;
        const char* slash = path ? std::strrchr(path, '/') : nullptr;
        if (!slash || std::strncmp(slash + 1, "libc10.so", 9) != 0) return 0;
        *static_cast<std::string*>(out) = std::string(path, slash);
        return 1;  // found: stop
      },
      &folder);
  return folder;
}

}  // namespace mechlens::kernels
