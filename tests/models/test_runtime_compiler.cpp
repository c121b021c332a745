// The runtime compiler (include/mechlens/kernels/runtime_compiler.hpp) and what it opens at run
// time (kernels/cuda_driver_api.hpp, kernels/nvrtc_api.hpp): where it cannot work it says why and
// compiles nothing, and never aborts; the loaders refuse a missing library and one without their
// functions; the fused launchers refuse what they cannot run with mechlens' own error. The test
// cases tagged [nvrtc] compile the fused kernels' CUDA source with NVRTC (no GPU needed) for
// every dtype; they form the ctest `models_nvrtc`, registered where CMake finds an NVRTC library.
// tests/models/test_fused_kernels.cpp runs the kernels themselves ([cuda]).
#include <algorithm>
#include <string>
#include <vector>

#include <mechlens/kernels/fused_ops.hpp>
#include <mechlens/kernels/runtime_compiler.hpp>

#include "test_util.hpp"

using namespace mechlens;
using Catch::Matchers::Contains;

TEST_CASE("The runtime compiler reports itself unavailable, without crashing, where LibTorch has no CUDA") {
  if (at::hasCUDA()) return;  // a CUDA machine: the [cuda] tests compile and run the kernels
  std::string why;
  REQUIRE_FALSE(kernels::runtime_compiler_available(&why));
  CHECK_FALSE(why.empty());
  const std::string source = "extern \"C\" __global__ void nothing() {}";
  REQUIRE(kernels::compile("mechlens_test_unavailable", source) == nullptr);
  REQUIRE(kernels::compile("mechlens_test_unavailable", source) == nullptr);  // asked again: the same answer
  at::NoGradGuard no_grad;
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) REQUIRE_FALSE(kernels::fused_available(at::zeros({2, 8}, dtype)));
}

TEST_CASE("The CUDA driver and NVRTC loaders refuse a missing library and one without their functions") {
  std::string why;
  kernels::driver::Api driver;
  REQUIRE_FALSE(kernels::driver::load("/nonexistent/libcuda.so.1", driver, why));
  CHECK_THAT(why, Contains("/nonexistent/libcuda.so.1"));
  REQUIRE_FALSE(kernels::driver::load("libm.so.6", driver, why));  // opens, but is no driver
  CHECK(why == "no cuInit in libm.so.6");

  kernels::nvrtc::Api nvrtc;
  REQUIRE_FALSE(kernels::nvrtc::load({"/nonexistent/libnvrtc.so", "/also/missing/libnvrtc.so.12"}, nvrtc, why));
  CHECK_THAT(why, Contains("/nonexistent/libnvrtc.so") && Contains("/also/missing/libnvrtc.so.12"));
  REQUIRE_FALSE(kernels::nvrtc::load({"libm.so.6"}, nvrtc, why));
  CHECK(why == "no nvrtcVersion in libm.so.6");
}

TEST_CASE("NVRTC is looked for beside LibTorch, where PyTorch's wheels put it, before the loader's search") {
  const std::vector<std::string> names = kernels::nvrtc::library_names();
  REQUIRE(names.front() == "libnvrtc.so");
  REQUIRE(kernels::nvrtc::search_list("") == names);
  const std::vector<std::string> list = kernels::nvrtc::search_list("/py/torch/lib");
  REQUIRE(list.front() == "/py/torch/lib/../../nvidia/cu13/lib/libnvrtc.so");
  REQUIRE(std::find(list.begin(), list.end(), "/py/torch/lib/../../nvidia/cuda_nvrtc/lib/libnvrtc.so.12") != list.end());
  REQUIRE(std::equal(names.begin(), names.end(), list.end() - static_cast<std::ptrdiff_t>(names.size())));
  // This program links LibTorch's libc10.so, so its folder is known.
  CHECK_FALSE(kernels::libtorch_folder().empty());
}

TEST_CASE("The fused launchers refuse what they cannot run with mechlens' ArgumentError") {
  at::NoGradGuard no_grad;
  at::Tensor x = at::randn({1, 1, 8}), w = at::randn({4, 8}), gamma = at::ones({8}), gate_up = at::randn({1, 1, 16});
  at::Tensor longs = at::zeros({1, 1}, at::kLong), inv_freq = at::ones({2}), slot = at::zeros({1}, at::kLong);
  at::Tensor keys = at::zeros({1, 1, 4, 4}), values = at::zeros({1, 1, 4, 4}), qkv = at::randn({1, 1, 12});
  // CPU tensors: no fused kernel runs on them, in any build.
  CHECK_THROWS_AS(kernels::rms_norm(x, gamma, 1e-5), ArgumentError);
  CHECK_THROWS_AS(kernels::add_rms_norm(x, x, gamma, 1e-5), ArgumentError);
  CHECK_THROWS_AS(kernels::silu_mul(gate_up), ArgumentError);
  CHECK_THROWS_AS(kernels::rotary_write_kv(qkv, 1, 1, longs, inv_freq, slot, keys, values), ArgumentError);
  CHECK_THROWS_AS(kernels::matvec(x, w), ArgumentError);
  CHECK_THROWS_AS(kernels::rms_norm_matvec(x, gamma, 1e-5, w), ArgumentError);
  CHECK_THROWS_AS(kernels::silu_mul_matvec(gate_up, w), ArgumentError);
  if (!kernels::detail::kFusedKernelsBuilt)
    CHECK_THROWS_WITH(kernels::matvec(x, w), Contains("kernels::matvec: this build has no fused CUDA kernels"));
  // What asks whether a kernel runs says no, and linear takes at::linear.
  CHECK_FALSE(kernels::matvec_weight_fits(w, x));
  CHECK_FALSE(kernels::matvec_applies(x, w));
  CHECK_FALSE(kernels::rms_norm_matvec_applies(x, gamma, w));
  CHECK_FALSE(kernels::silu_mul_matvec_applies(gate_up, w));
  REQUIRE(at::equal(kernels::linear(x, w), at::linear(x, w)));
}

TEST_CASE("The fused kernels' program holds every kernel the launchers look up") {
  const std::string source = kernels::detail::kernel_source();
  for (const char* kernel : {"void rms_norm(", "void silu_mul(", "void rotary_write_kv(", "void gemv_rows(", "\ngemv_split("})
    CHECK(source.find(kernel) != std::string::npos);
  // Each family's part once, in the order they build on each other.
  const size_t common = source.find(kernels::source::common()), norms = source.find(kernels::source::norms()),
               activations = source.find(kernels::source::activations()),
               rotary = source.find(kernels::source::rotary_write_kv()), matvec = source.find(kernels::source::matvec());
  REQUIRE(common == 0);
  REQUIRE((common < norms && norms < activations && activations < rotary && rotary < matvec &&
           matvec != std::string::npos));
}

TEST_CASE("NVRTC compiles the fused kernels for every dtype, for Ampere and Hopper", "[nvrtc]") {
  std::string why;
  const kernels::nvrtc::Api* rtc = kernels::nvrtc::api(&why);
  INFO(why);
  REQUIRE(rtc);
  int major = 0, minor = 0;
  REQUIRE(rtc->version(&major, &minor) == kernels::nvrtc::kSuccess);
  std::vector<std::string> archs = {"sm_80"};
  if (major > 11 || (major == 11 && minor >= 8)) archs.push_back("sm_90");  // Hopper from CUDA 11.8
  for (const std::string& arch : archs)
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<char> cubin;
      std::string error;
      INFO("NVRTC " << major << "." << minor << " (" << rtc->library << "), " << arch << ", ML_KIND " << kind);
      const bool ok = kernels::detail::compile_to_cubin(
          *rtc, "#define ML_KIND " + std::to_string(kind) + "\n" + kernels::detail::kernel_source(),
          "mechlens_fused_" + std::to_string(kind) + ".cu", arch, cubin, error);
      INFO(error);
      REQUIRE(ok);
      REQUIRE(cubin.size() > 1000);
    }
  // A program NVRTC refuses comes back as NVRTC's message and log, not as a crash.
  std::vector<char> cubin;
  std::string error;
  REQUIRE_FALSE(kernels::detail::compile_to_cubin(*rtc, "not CUDA at all", "broken.cu", "sm_80", cubin, error));
  CHECK_THAT(error, Contains("NVRTC_ERROR_COMPILATION") && Contains("broken.cu"));
}
