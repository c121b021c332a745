#pragma once
/// \file
/// Mann–Whitney U test of two independent samples, matching scipy.stats.mannwhitneyu with its
/// defaults (use_continuity=True, method='auto').
///
/// The statistic is U1 = R1 − n1(n1+1)/2, R1 the sum of the first sample's average ranks in the
/// pooled data (scipy reports U1 for every alternative). With PValueMethod::Auto the p-value is
///  * exact (the null distribution of U without ties) when min(n1, n2) ≤ 8 and there are no
///    ties;
///  * else the normal approximation with tie correction and a continuity correction of 0.5
///    towards the mean: σ² = n1 n2/12 · ((n + 1) − Σ(t³ − t)/(n(n − 1))).
/// "greater" means the first sample is stochastically greater.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/metrics/detail/p_values.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

namespace detail {

/// Counts of arrangements giving U = u for sizes (m, n): element u is the number of the
/// C(m + n, m) orderings of m x's and n y's with u (x, y) pairs where x > y. Uses
/// f(k, j; u) = f(k, j − 1; u) + f(k − 1, j; u − j) (the largest value is a y or an x).
/// Counts below 2^53 are exact.
inline std::vector<double> mann_whitney_counts(std::size_t m, std::size_t n) {
  if (m > n) std::swap(m, n);  // the distribution is symmetric in (m, n)
  const std::size_t umax = m * n;
  std::vector<std::vector<double>> f(m + 1, std::vector<double>(umax + 1, 0.0));
  for (auto& fk : f) fk[0] = 1.0;  // j = 0 y's: only U = 0
  for (std::size_t j = 1; j <= n; ++j) {
    for (std::size_t k = 1; k <= m; ++k) {
      // f[k] holds f(k, j−1); f[k−1] already holds f(k−1, j).
      const std::size_t top = k * j;
      for (std::size_t u = top; u >= j; --u) {
        f[k][u] += f[k - 1][u - j];
        if (u == j) break;
      }
    }
  }
  return f[m];
}

}  // namespace detail

/// Mann–Whitney U test (see the file comment). `continuity` applies to the normal approximation
/// only (scipy's use_continuity). PValueMethod::Permutation is not offered for this test.
/// Undefined when a sample is empty or, for the approximation, all values are tied.
inline TestResult mann_whitney_u(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided,
                                 PValueMethod method = PValueMethod::Auto, bool continuity = true) {
  detail::check_finite(x, "mann_whitney_u", "x");
  detail::check_finite(y, "mann_whitney_u", "y");
  MECHLENS_CHECK(method != PValueMethod::Permutation, ArgumentError,
                 "mann_whitney_u: method 'permutation' is not offered; use auto, exact or asymptotic");
  TestResult r;
  r.test = "Mann-Whitney U";
  r.alternative = alternative;
  r.n = x.size();
  r.n2 = y.size();
  if (x.size() == 0 || y.size() == 0)
    return detail::undefined_result(r, fmt::format("each sample needs at least 1 value; got {} and {}", x.size(), y.size()));

  const std::size_t n1 = x.size(), n2 = y.size(), n = n1 + n2;
  std::vector<double> pooled(n), ranks;
  std::copy(x.begin(), x.end(), pooled.begin());
  std::copy(y.begin(), y.end(), pooled.begin() + static_cast<std::ptrdiff_t>(n1));
  const auto groups = detail::average_ranks(pooled, ranks);
  const bool ties = detail::has_ties(groups);
  std::vector<double> shifted(n1);  // ranks − (n1 + 1)/2 summed: U1 at its own magnitude (as scipy)
  for (std::size_t i = 0; i < n1; ++i) shifted[i] = ranks[i] - 0.5 * static_cast<double>(n1 + 1);
  const double u1 = detail::compensated_sum(shifted.begin(), shifted.end());
  const double n1d = static_cast<double>(n1), n2d = static_cast<double>(n2), nd = static_cast<double>(n);
  const double u2 = n1d * n2d - u1;

  if (method == PValueMethod::Auto)
    method = (n1 > 8 && n2 > 8) || ties ? PValueMethod::Asymptotic : PValueMethod::Exact;

  double p = detail::kNaN;
  if (method == PValueMethod::Exact) {
    const double cost = static_cast<double>(std::min(n1, n2)) * static_cast<double>(std::min(n1, n2)) * n1d * n2d;
    MECHLENS_CHECK(cost <= 4e8, ArgumentError,
                   "mann_whitney_u: the exact distribution for sizes {} and {} is too costly; use PValueMethod::Asymptotic",
                   n1, n2);
    const auto counts = detail::mann_whitney_counts(n1, n2);
    const double total = detail::compensated_sum(counts.begin(), counts.end());
    // P(U ≥ u) of the statistic used for the alternative (scipy: U1 for greater, U2 for less,
    // max(U1, U2) doubled for two-sided). With ties U is truncated to an integer, as scipy does.
    auto sf = [&](double u) {
      const auto k = std::min<std::size_t>(static_cast<std::size_t>(std::max(0.0, std::trunc(u))), counts.size());
      return detail::compensated_sum(counts.begin() + static_cast<std::ptrdiff_t>(k), counts.end());
    };
    switch (alternative) {
      case Alternative::Greater: p = sf(u1); break;
      case Alternative::Less: p = sf(u2); break;
      case Alternative::TwoSided: p = 2.0 * sf(std::max(u1, u2)); break;
    }
    p = detail::clip_p(p / total);
    r.method = ties ? "exact (no-ties distribution; the data have ties)" : "exact";
  } else {
    const double s = std::sqrt(n1d * n2d / 12.0 * ((nd + 1.0) - detail::tie_term(groups) / (nd * (nd - 1.0))));
    if (!(s > 0.0)) return detail::undefined_result(r, "all values are tied; the normal approximation has zero variance");
    double num = u1 - n1d * n2d / 2.0;
    if (continuity) {
      const double sign = alternative == Alternative::Greater ? 1.0
                          : alternative == Alternative::Less  ? -1.0
                                                              : (num > 0 ? 1.0 : (num < 0 ? -1.0 : 0.0));
      num -= 0.5 * sign;
    }
    r.z = num / s;
    p = detail::normal_p_value(r.z, alternative);
    r.method = std::string(ties ? "normal approximation with tie correction" : "normal approximation") +
               (continuity ? " and continuity correction" : "");
  }
  r.statistic = u1;
  r.p_value = p;
  r.defined = true;
  return r;
}

}  // namespace mechlens::metrics
