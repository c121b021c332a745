#pragma once
/// \file
/// Multiple-comparison adjustments of p-values, for sweeps that test many layer ranges:
/// Holm's step-down family-wise correction and Benjamini–Hochberg's false-discovery-rate
/// correction. Both return adjusted p-values in the input order (compare them with α directly),
/// as statsmodels' multipletests(method='holm' / 'fdr_bh') and scipy's false_discovery_control.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include "mechlens/core/error.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

namespace detail {
inline std::vector<std::size_t> check_p_values(const Sample& p, const char* fn) {
  MECHLENS_CHECK(p.size() >= 1, ArgumentError, "{}: no p-values given", fn);
  for (std::size_t i = 0; i < p.size(); ++i)
    MECHLENS_CHECK(p(i) >= 0.0 && p(i) <= 1.0, ArgumentError,
                   "{}: p-value {} is {}; expected a number in [0, 1]", fn, i, p(i));
  std::vector<std::size_t> order(p.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p(a) < p(b); });
  return order;
}
}  // namespace detail

/// Holm's step-down adjustment: with p sorted ascending, adj_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
inline Sample holm(const Sample& p) {
  const auto order = detail::check_p_values(p, "holm");
  const std::size_t m = p.size();
  Sample out = xt::empty<double>({m});
  double running = 0.0;
  for (std::size_t k = 0; k < m; ++k) {
    running = std::max(running, std::min(1.0, static_cast<double>(m - k) * p(order[k])));
    out(order[k]) = running;
  }
  return out;
}

/// Benjamini–Hochberg step-up adjustment: adj_(i) = min_{j ≥ i} min(1, m p_(j) / j).
inline Sample benjamini_hochberg(const Sample& p) {
  const auto order = detail::check_p_values(p, "benjamini_hochberg");
  const std::size_t m = p.size();
  Sample out = xt::empty<double>({m});
  double running = 1.0;
  for (std::size_t k = m; k-- > 0;) {
    running = std::min(running, std::min(1.0, p(order[k]) * static_cast<double>(m) / static_cast<double>(k + 1)));
    out(order[k]) = running;
  }
  return out;
}

}  // namespace mechlens::metrics
