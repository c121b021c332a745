#pragma once
/// \file
/// Pearson and Spearman correlation with p-values, as scipy.stats.pearsonr and spearmanr.
///
/// Both p-values test H0: no correlation, from the t distribution with n − 2 degrees of freedom,
/// t = r √((n − 2)/(1 − r²)). For Pearson the same p is computed in scipy's form, through the
/// Beta(n/2 − 1, n/2 − 1) distribution of r on [−1, 1] (Boost's regularised incomplete beta),
/// which equals the t form exactly and stays accurate for |r| near 1. Spearman's rho is Pearson's
/// r of the average ranks (ties share their mean rank). "greater" tests a positive correlation.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <boost/math/special_functions/beta.hpp>
#include <fmt/format.h>

#include "mechlens/metrics/detail/p_values.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

namespace detail {

/// Pearson r of two equal-length vectors, or NaN when either has zero variance.
inline double pearson_r(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = x.size();
  const double mx = compensated_sum(x.begin(), x.end()) / static_cast<double>(n);
  const double my = compensated_sum(y.begin(), y.end()) / static_cast<double>(n);
  std::vector<double> xx(n), yy(n), xy(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double a = x[i] - mx, b = y[i] - my;
    xx[i] = a * a;
    yy[i] = b * b;
    xy[i] = a * b;
  }
  const double sxx = compensated_sum(xx.begin(), xx.end());
  const double syy = compensated_sum(yy.begin(), yy.end());
  if (!(sxx > 0.0) || !(syy > 0.0)) return kNaN;
  const double r = compensated_sum(xy.begin(), xy.end()) / (std::sqrt(sxx) * std::sqrt(syy));
  return std::max(-1.0, std::min(1.0, r));
}

inline TestResult correlation_input(const Sample& x, const Sample& y, const char* fn, const char* name,
                                    Alternative alt) {
  detail::check_paired(x, y, fn);
  detail::check_finite(x, fn, "x");
  detail::check_finite(y, fn, "y");
  TestResult r;
  r.test = name;
  r.alternative = alt;
  r.n = x.size();
  return r;
}

}  // namespace detail

/// Pearson's r with scipy's p-value (exact under bivariate normality); df = n − 2.
/// Undefined for n < 3 or a constant input.
inline TestResult pearson(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided) {
  auto r = detail::correlation_input(x, y, "pearson", "Pearson correlation", alternative);
  if (x.size() < 3) return detail::undefined_result(r, fmt::format("needs at least 3 pairs; got {}", x.size()));
  const double rho = detail::pearson_r(std::vector<double>(x.begin(), x.end()), std::vector<double>(y.begin(), y.end()));
  if (std::isnan(rho)) return detail::undefined_result(r, "an input is constant (zero variance)");
  // r ~ Beta(a, a) on [-1, 1] under H0, a = n/2 − 1: P(R ≤ r) = I_{(1+r)/2}(a, a).
  const double a = static_cast<double>(x.size()) / 2.0 - 1.0;
  auto cdf = [&](double v) { return v <= -1.0 ? 0.0 : v >= 1.0 ? 1.0 : boost::math::ibeta(a, a, (1.0 + v) / 2.0); };
  auto sf = [&](double v) { return v <= -1.0 ? 1.0 : v >= 1.0 ? 0.0 : boost::math::ibetac(a, a, (1.0 + v) / 2.0); };
  switch (alternative) {
    case Alternative::Less: r.p_value = cdf(rho); break;
    case Alternative::Greater: r.p_value = sf(rho); break;
    case Alternative::TwoSided: r.p_value = detail::clip_p(2.0 * sf(std::abs(rho))); break;
  }
  r.statistic = rho;
  r.df = static_cast<double>(x.size()) - 2.0;
  r.method = "exact (Beta distribution of r under bivariate normality)";
  r.defined = true;
  return r;
}

/// Spearman's rho (Pearson r of average ranks) with scipy's t-distribution p-value, df = n − 2.
/// Undefined for n < 3 or a constant input.
inline TestResult spearman(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided) {
  auto r = detail::correlation_input(x, y, "spearman", "Spearman correlation", alternative);
  if (x.size() < 3) return detail::undefined_result(r, fmt::format("needs at least 3 pairs; got {}", x.size()));
  std::vector<double> rx, ry;
  detail::average_ranks(std::vector<double>(x.begin(), x.end()), rx);
  detail::average_ranks(std::vector<double>(y.begin(), y.end()), ry);
  const double rho = detail::pearson_r(rx, ry);
  if (std::isnan(rho)) return detail::undefined_result(r, "an input is constant (all ranks tied)");
  const double df = static_cast<double>(x.size()) - 2.0;
  // scipy: t = rho √(df / ((rho + 1)(1 − rho))), infinite at |rho| = 1.
  const double denom = (rho + 1.0) * (1.0 - rho);
  const double t = denom > 0.0 ? rho * std::sqrt(df / denom) : std::copysign(std::numeric_limits<double>::infinity(), rho);
  r.statistic = rho;
  r.df = df;
  r.p_value = detail::t_p_value(t, df, alternative);
  r.method = "t distribution";
  r.defined = true;
  return r;
}

}  // namespace mechlens::metrics
