// version.hpp: the one place the mechlens version is written (CMake reads it), and the LibTorch
// version mechlens was compiled against.

#include <catch2/catch.hpp>

#include <torch/version.h>

#include <mechlens/version.hpp>

TEST_CASE("The mechlens version is the CMake project's, and LibTorch's is TORCH_VERSION", "[core][version]") {
  CHECK(mechlens::version() == MECHLENS_CMAKE_VERSION);  // CMakeLists.txt read it from version.hpp
  CHECK(mechlens::version() == std::string(MECHLENS_VERSION_STRING));
  CHECK(mechlens::version() == std::to_string(MECHLENS_VERSION_MAJOR) + "." + std::to_string(MECHLENS_VERSION_MINOR) +
                                   "." + std::to_string(MECHLENS_VERSION_PATCH));
  CHECK(mechlens::libtorch_version() == std::string(TORCH_VERSION));
}
