#pragma once
/// \file
/// The mechlens version, and the LibTorch version it was compiled against. This file is the one
/// place the mechlens version is written: CMakeLists.txt reads the three numbers below for
/// project(mechlens VERSION ...), so the package version and these macros cannot drift apart.
///
///   mechlens::version()           // "0.3.0"
///   mechlens::libtorch_version()  // e.g. "1.13.0" (TORCH_VERSION of <torch/version.h>)

#include <string>

#include <torch/version.h>

#define MECHLENS_VERSION_MAJOR 0
#define MECHLENS_VERSION_MINOR 3
#define MECHLENS_VERSION_PATCH 0

#define MECHLENS_DETAIL_STRINGIFY2(x) #x
#define MECHLENS_DETAIL_STRINGIFY(x) MECHLENS_DETAIL_STRINGIFY2(x)
/// "MAJOR.MINOR.PATCH"
#define MECHLENS_VERSION_STRING                                                        \
  MECHLENS_DETAIL_STRINGIFY(MECHLENS_VERSION_MAJOR)                                    \
  "." MECHLENS_DETAIL_STRINGIFY(MECHLENS_VERSION_MINOR) "." MECHLENS_DETAIL_STRINGIFY( \
      MECHLENS_VERSION_PATCH)

namespace mechlens {

/// The mechlens version, "MAJOR.MINOR.PATCH".
inline std::string version() { return MECHLENS_VERSION_STRING; }

/// The LibTorch version mechlens was compiled against, "MAJOR.MINOR.PATCH".
inline std::string libtorch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace mechlens
