// Shared helpers of the metrics tests: the scipy/numpy reference files in tests/data/stats
// (made by tests/reference/make_stats_reference.py) and tolerance checks.
#pragma once

#include <cmath>
#include <fstream>
#include <iomanip>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <xtensor/xtensor.hpp>

#include <mechlens/metrics/test_result.hpp>

namespace mechlens_test {

/// Loads tests/data/stats/<name>; a missing file fails the test (never a skip).
inline const nlohmann::json& stats_reference(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  const std::string path = std::string(MECHLENS_TEST_DATA) + "/stats/" + name;
  std::ifstream in(path);
  INFO("reference file " << path << " (regenerate with tests/reference/make_stats_reference.py)");
  REQUIRE(in.good());
  nlohmann::json j = nlohmann::json::parse(in);
  INFO("errors recorded by the reference script: " << j.at("errors").dump());
  REQUIRE(j.at("errors").empty());
  return cache.emplace(name, std::move(j)).first->second;
}

inline mechlens::metrics::Sample sample(const nlohmann::json& values) {
  std::vector<double> v = values.get<std::vector<double>>();
  mechlens::metrics::Sample s = xt::empty<double>({v.size()});
  for (std::size_t i = 0; i < v.size(); ++i) s(i) = v[i];
  return s;
}

inline mechlens::metrics::Sample sample(std::initializer_list<double> values) {
  return sample(nlohmann::json(std::vector<double>(values)));
}

/// |actual − expected| ≤ rel · |expected| (or ≤ abs_floor when expected is 0).
inline bool close(double actual, double expected, double rel, double abs_floor = 1e-300) {
  if (std::isnan(expected)) return std::isnan(actual);
  return std::abs(actual - expected) <= std::max(rel * std::abs(expected), abs_floor);
}

}  // namespace mechlens_test

#define CHECK_REL(actual, expected, rel)                                                     \
  do {                                                                                       \
    const double a_ = (actual), e_ = (expected);                                             \
    INFO(#actual << " = " << std::setprecision(17) << a_ << ", expected " << e_ << " (rel " \
                 << (rel) << ")");                                                           \
    CHECK(::mechlens_test::close(a_, e_, (rel)));                                            \
  } while (false)
