#pragma once
/// \file
/// Descriptive statistics: mean, sample standard deviation (ddof 1), standard error of the mean,
/// and a Summary (n, mean, sd) for tables and effect sizes from published numbers.

#include <cmath>
#include <cstddef>

#include "mechlens/core/error.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

/// Arithmetic mean. Throws ArgumentError for an empty sample or a non-finite value.
inline double mean(const Sample& x) {
  MECHLENS_CHECK(x.size() >= 1, ArgumentError, "mean: argument 'x' is empty; expected at least 1 value");
  detail::check_finite(x, "mean", "x");
  return detail::mean_of(x);
}

/// Sample variance with ddof = 1 (numpy's np.var(x, ddof=1)). Throws ArgumentError for fewer
/// than 2 values or a non-finite value.
inline double variance(const Sample& x) {
  MECHLENS_CHECK(x.size() >= 2, ArgumentError,
                 "variance: argument 'x' has {} value(s); the sample variance (ddof 1) needs at least 2",
                 x.size());
  detail::check_finite(x, "variance", "x");
  return detail::variance_of(x, 1);
}

/// Sample standard deviation, ddof = 1. Throws ArgumentError for fewer than 2 values.
inline double sd(const Sample& x) {
  MECHLENS_CHECK(x.size() >= 2, ArgumentError,
                 "sd: argument 'x' has {} value(s); the sample standard deviation (ddof 1) needs at least 2",
                 x.size());
  detail::check_finite(x, "sd", "x");
  return std::sqrt(detail::variance_of(x, 1));
}

/// Standard error of the mean, sd / sqrt(n) (scipy.stats.sem). Throws for fewer than 2 values.
inline double sem(const Sample& x) {
  MECHLENS_CHECK(x.size() >= 2, ArgumentError,
                 "sem: argument 'x' has {} value(s); the standard error needs at least 2", x.size());
  detail::check_finite(x, "sem", "x");
  return std::sqrt(detail::variance_of(x, 1) / static_cast<double>(x.size()));
}

/// n, mean and sample sd of one condition: what a results table prints, and what effect sizes
/// from published summaries need.
struct Summary {
  std::size_t n = 0;
  double mean = 0.0;
  double sd = 0.0;  ///< ddof 1
};

/// n, mean and sd of `x`. Throws ArgumentError for fewer than 2 values.
inline Summary summarize(const Sample& x) {
  MECHLENS_CHECK(x.size() >= 2, ArgumentError,
                 "summarize: argument 'x' has {} value(s); mean and sd need at least 2", x.size());
  detail::check_finite(x, "summarize", "x");
  Summary s;
  s.n = x.size();
  s.mean = detail::mean_of(x);
  s.sd = std::sqrt(detail::sum_sq_dev(x, s.mean) / static_cast<double>(x.size() - 1));
  return s;
}

}  // namespace mechlens::metrics
