#pragma once
/// \file
/// Student t-tests: one-sample, paired, Student (pooled variance) and Welch (unequal variances),
/// each two-sided or one-sided, as scipy.stats.ttest_1samp / ttest_rel / ttest_ind. p-values come
/// from Boost.Math's students_t distribution.

#include <cmath>
#include <cstddef>

#include <fmt/format.h>

#include "mechlens/metrics/detail/p_values.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

namespace detail {

inline TestResult t_result(const char* name, Alternative alt, std::size_t n, std::size_t n2) {
  TestResult r;
  r.test = name;
  r.method = "Student t distribution";
  r.alternative = alt;
  r.n = n;
  r.n2 = n2;
  return r;
}

inline TestResult finish_t(TestResult r, double t, double df) {
  r.statistic = t;
  r.df = df;
  r.p_value = t_p_value(t, df, r.alternative);
  r.defined = true;
  return r;
}

}  // namespace detail

/// One-sample t-test of H0: mean(x) = popmean. t = (mean − popmean) / (sd/√n), df = n − 1.
/// Undefined for n < 2 or zero variance.
inline TestResult one_sample_t_test(const Sample& x, double popmean = 0.0,
                                    Alternative alternative = Alternative::TwoSided) {
  detail::check_finite(x, "one_sample_t_test", "x");
  MECHLENS_CHECK(std::isfinite(popmean), ArgumentError, "one_sample_t_test: 'popmean' must be finite; got {}", popmean);
  auto r = detail::t_result("one-sample t-test", alternative, x.size(), 0);
  if (x.size() < 2)
    return detail::undefined_result(r, fmt::format("needs at least 2 values; got {}", x.size()));
  const double n = static_cast<double>(x.size());
  const double m = detail::mean_of(x);
  const double se = std::sqrt(detail::variance_of(x) / n);
  if (!(se > 0.0)) return detail::undefined_result(r, "the sample has zero variance");
  return detail::finish_t(r, (m - popmean) / se, n - 1.0);
}

/// Paired t-test of H0: mean(x − y) = 0 (scipy.stats.ttest_rel). df = n − 1.
inline TestResult paired_t_test(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided) {
  detail::check_paired(x, y, "paired_t_test");
  detail::check_finite(x, "paired_t_test", "x");
  detail::check_finite(y, "paired_t_test", "y");
  auto r = one_sample_t_test(detail::difference(x, y), 0.0, alternative);
  r.test = "paired t-test";
  if (!r.defined && r.reason == "the sample has zero variance") r.reason = "the paired differences have zero variance";
  return r;
}

/// Student's two-sample t-test with pooled variance (scipy.stats.ttest_ind, equal_var=True).
/// df = n1 + n2 − 2. Undefined when a sample has fewer than 2 values or both variances are 0.
inline TestResult student_t_test(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided) {
  detail::check_finite(x, "student_t_test", "x");
  detail::check_finite(y, "student_t_test", "y");
  auto r = detail::t_result("Student t-test", alternative, x.size(), y.size());
  if (x.size() < 2 || y.size() < 2)
    return detail::undefined_result(r, fmt::format("each sample needs at least 2 values; got {} and {}", x.size(), y.size()));
  const double n1 = static_cast<double>(x.size()), n2 = static_cast<double>(y.size());
  const double m1 = detail::mean_of(x), m2 = detail::mean_of(y);
  const double df = n1 + n2 - 2.0;
  const double sp2 = (detail::sum_sq_dev(x, m1) + detail::sum_sq_dev(y, m2)) / df;
  const double se = std::sqrt(sp2 * (1.0 / n1 + 1.0 / n2));
  if (!(se > 0.0)) return detail::undefined_result(r, "both samples have zero variance");
  return detail::finish_t(r, (m1 - m2) / se, df);
}

/// Welch's two-sample t-test (scipy.stats.ttest_ind, equal_var=False), Welch–Satterthwaite df.
inline TestResult welch_t_test(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided) {
  detail::check_finite(x, "welch_t_test", "x");
  detail::check_finite(y, "welch_t_test", "y");
  auto r = detail::t_result("Welch t-test", alternative, x.size(), y.size());
  if (x.size() < 2 || y.size() < 2)
    return detail::undefined_result(r, fmt::format("each sample needs at least 2 values; got {} and {}", x.size(), y.size()));
  const double n1 = static_cast<double>(x.size()), n2 = static_cast<double>(y.size());
  const double a = detail::variance_of(x) / n1, b = detail::variance_of(y) / n2;
  const double se2 = a + b;
  if (!(se2 > 0.0)) return detail::undefined_result(r, "both samples have zero variance");
  const double df = se2 * se2 / (a * a / (n1 - 1.0) + b * b / (n2 - 1.0));
  return detail::finish_t(r, (detail::mean_of(x) - detail::mean_of(y)) / std::sqrt(se2), df);
}

}  // namespace mechlens::metrics
