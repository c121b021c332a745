#pragma once
/// \file
/// Formatting shapes for error messages: "[1, 12, 4, 16]".

#include <cstdint>
#include <string>
#include <vector>

#include <c10/util/ArrayRef.h>

namespace mechlens {

inline std::string shape_str(c10::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

inline std::string shape_str(const std::vector<int64_t>& shape) { return shape_str(c10::ArrayRef<int64_t>(shape)); }

}  // namespace mechlens
