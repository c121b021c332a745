#pragma once
/// \file
/// The process-wide on/off switch of the fused CUDA kernels (kernels/fused_ops.hpp lists them).
/// On by default; the environment variable MECHLENS_FUSED_KERNELS=0 starts the process with them
/// off. Off, every caller takes its ATen path (what A/B measurements and tests compare against).

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mechlens::kernels {

namespace detail {
inline std::atomic<bool>& fused_switch() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("MECHLENS_FUSED_KERNELS");
    return !(env && std::strcmp(env, "0") == 0);
  }()};
  return on;
}
}  // namespace detail

/// Switches the fused kernels on or off for the whole process (default on; MECHLENS_FUSED_KERNELS=0
/// starts with them off). For A/B measurements and tests.
inline void set_fused_enabled(bool on) { detail::fused_switch() = on; }
inline bool fused_enabled() { return detail::fused_switch(); }

}  // namespace mechlens::kernels
