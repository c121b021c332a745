#pragma once
// Helpers shared by the tests.
#include <ATen/ATen.h>

namespace mechlens::test {

/// max |a - b| / max(max |b|, tiny): the "relative to the reference's scale" rule the parity
/// tests state (b is the reference).
inline double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kDouble).cpu(), y = b.to(at::kDouble).cpu();
  double scale = std::max(y.abs().max().item<double>(), 1e-30);
  return (x - y).abs().max().item<double>() / scale;
}

}  // namespace mechlens::test
