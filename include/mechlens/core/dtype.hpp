#pragma once
/// \file
/// dtype and device names as users type them ("float32", "bf16", "cuda:0").

#include <string>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"

namespace mechlens {

/// "float32"/"fp32"/"float", "bfloat16"/"bf16", "float16"/"fp16"/"half", "float64"/"double".
inline at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float" || name == "f32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half" || name == "f16") return at::kHalf;
  if (name == "float64" || name == "fp64" || name == "double") return at::kDouble;
  detail::raise<ArgumentError>("unknown dtype '{}' (expected float32, bfloat16, float16 or float64)", name);
}

inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: return c10::toString(t);
  }
}

/// "cpu", "cuda", "cuda:1". CUDA asked for on a build or machine without it is an ArgumentError.
inline at::Device parse_device(const std::string& name) {
  at::Device d = [&] {
    try {
      return at::Device(name);
    } catch (const std::exception&) {
      detail::raise<ArgumentError>("unknown device '{}' (expected cpu, cuda or cuda:N)", name);
    }
  }();
  MECHLENS_CHECK(!d.is_cuda() || at::hasCUDA(), ArgumentError,
                 "device '{}' was asked for but this LibTorch has no usable CUDA", name);
  return d;
}

}  // namespace mechlens
