#pragma once
// Helpers shared by the tests.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace mechlens::test {

/// The device the model tests run on: MECHLENS_TEST_DEVICE (e.g. "cuda"), default CPU. The GPU
/// recipe in docs/gpu.md runs the suite once more with MECHLENS_TEST_DEVICE=cuda.
inline at::Device device();

}  // namespace mechlens::test

#include <mechlens/models/model.hpp>

namespace mechlens::test {

inline ForwardOptions with_mask(const at::Tensor& mask) {
  ForwardOptions o;
  o.attention_mask = mask;
  return o;
}
inline ForwardOptions with_cache(KVCache& cache) {
  ForwardOptions o;
  o.cache = &cache;
  return o;
}

inline at::Device device() {
  const char* env = std::getenv("MECHLENS_TEST_DEVICE");
  return at::Device(env && *env ? std::string(env) : std::string("cpu"));
}

/// max |a - b| / max(max |b|, tiny): the "relative to the reference's scale" rule the parity
/// tests state (b is the reference).
inline double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kDouble).cpu(), y = b.to(at::kDouble).cpu();
  double scale = std::max(y.abs().max().item<double>(), 1e-30);
  return (x - y).abs().max().item<double>() / scale;
}

/// Number of leading generated tokens whose reference top-1 minus top-2 margins are all above
/// 1e-3 (generation.json's rule): beyond a near-tie, float rounding may pick either token.
inline size_t comparable(const nlohmann::json& margins) {
  size_t n = 0;
  for (const auto& m : margins) {
    if (m.get<double>() <= 1e-3) break;
    ++n;
  }
  return n;
}

/// Greedy tokens against a generation.json record (tests/reference/make_model_reference.py):
/// token k is compared while every reference margin up to it is above 1e-3.
inline void require_same_prefix(const std::vector<int64_t>& ours, const nlohmann::json& record) {
  const auto expected = record.at("new_ids").get<std::vector<int64_t>>();
  const size_t n = comparable(record.at("margins"));
  REQUIRE(n > 0);
  REQUIRE(ours.size() >= n);
  for (size_t i = 0; i < n; ++i) {
    INFO("token " << i);
    REQUIRE(ours[i] == expected[i]);
  }
}

}  // namespace mechlens::test
