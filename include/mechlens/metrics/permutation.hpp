#pragma once
/// \file
/// Paired permutation (sign-flip) test of H0: the paired differences d = x − y are symmetric
/// about zero, with the statistic mean(d) — scipy.stats.permutation_test((x, y), mean(x − y),
/// permutation_type='samples').
///
/// Exact when 2^n ≤ n_resamples (scipy's rule; the default 9999 makes n ≤ 13 exact): every sign
/// pattern is enumerated once and p = #{extreme}/2^n. Otherwise n_resamples random sign patterns
/// from std::mt19937_64(seed) give p = (#{extreme} + 1)/(n_resamples + 1). "Extreme" compares
/// with scipy's relative tolerance of 100 ε |observed|, so sums that are equal in exact arithmetic
/// count as ties. Two-sided p = min(1, 2 min(p_less, p_greater)).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

struct PermutationOptions {
  Alternative alternative = Alternative::TwoSided;
  std::size_t n_resamples = 9999;  ///< exact enumeration when 2^n <= n_resamples
  std::uint64_t seed = 0;          ///< for the random sign patterns of the Monte Carlo test
};

/// Paired sign-flip permutation test of mean(x − y) (see the file comment). The statistic is the
/// observed mean difference. Undefined for fewer than 2 pairs or when every difference is zero.
inline TestResult paired_permutation_test(const Sample& x, const Sample& y, const PermutationOptions& options = {}) {
  const char* fn = "paired_permutation_test";
  detail::check_paired(x, y, fn);
  detail::check_finite(x, fn, "x");
  detail::check_finite(y, fn, "y");
  MECHLENS_CHECK(options.n_resamples >= 1, ArgumentError, "{}: n_resamples must be >= 1", fn);
  TestResult r;
  r.test = "paired permutation test (mean difference)";
  r.alternative = options.alternative;
  r.n = x.size();
  if (x.size() < 2) return detail::undefined_result(r, fmt::format("needs at least 2 pairs; got {}", x.size()));
  const Sample d = detail::difference(x, y);
  const std::size_t n = d.size();
  bool all_zero = true;
  for (double v : d) all_zero = all_zero && v == 0.0;
  if (all_zero) return detail::undefined_result(r, "all differences are zero");

  // The statistic of one sign pattern: mean of s_i d_i, summed in index order.
  std::vector<double> signed_d(n);
  auto mean_with = [&](auto&& sign_of) {
    for (std::size_t i = 0; i < n; ++i) signed_d[i] = sign_of(i) ? -d(i) : d(i);
    return detail::compensated_sum(signed_d.begin(), signed_d.end()) / static_cast<double>(n);
  };
  const double observed = mean_with([](std::size_t) { return false; });
  const double gamma = std::abs(100.0 * std::numeric_limits<double>::epsilon() * observed);

  std::uint64_t less = 0, greater = 0, total = 0;
  auto tally = [&](double v) {
    less += v <= observed + gamma;
    greater += v >= observed - gamma;
    ++total;
  };
  const bool exact = n < 63 && (std::uint64_t{1} << n) <= options.n_resamples;
  double adjustment = 0.0;
  if (exact) {
    const std::uint64_t patterns = std::uint64_t{1} << n;
    for (std::uint64_t mask = 0; mask < patterns; ++mask)
      tally(mean_with([mask](std::size_t i) { return ((mask >> i) & 1U) != 0; }));
    r.method = fmt::format("exact (all 2^{} sign flips)", n);
  } else {
    std::mt19937_64 engine(options.seed);
    std::vector<bool> flip(n);
    for (std::size_t b = 0; b < options.n_resamples; ++b) {
      std::uint64_t bits = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (i % 64 == 0) bits = engine();
        flip[i] = (bits >> (i % 64)) & 1U;
      }
      tally(mean_with([&flip](std::size_t i) { return static_cast<bool>(flip[i]); }));
    }
    adjustment = 1.0;
    r.method = fmt::format("Monte Carlo ({} random sign flips, seed {})", options.n_resamples, options.seed);
  }
  const double denom = static_cast<double>(total) + adjustment;
  const double p_less = (static_cast<double>(less) + adjustment) / denom;
  const double p_greater = (static_cast<double>(greater) + adjustment) / denom;
  switch (options.alternative) {
    case Alternative::Less: r.p_value = p_less; break;
    case Alternative::Greater: r.p_value = p_greater; break;
    case Alternative::TwoSided: r.p_value = detail::clip_p(2.0 * std::min(p_less, p_greater)); break;
  }
  r.statistic = observed;
  r.defined = true;
  return r;
}

}  // namespace mechlens::metrics
