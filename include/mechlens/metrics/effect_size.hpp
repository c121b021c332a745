#pragma once
/// \file
/// Standardised effect sizes of a difference between two conditions, first minus second.
///
/// | function              | formula                                             |
/// |-----------------------|-----------------------------------------------------|
/// | cohen_d_average       | (m1 − m2) / √((s1² + s2²) / 2)   (the DEC7 study's d) |
/// | cohen_d_pooled        | (m1 − m2) / √(((n1−1)s1² + (n2−1)s2²) / (n1+n2−2))   |
/// | hedges_g              | J(n1+n2−2) · cohen_d_pooled, J exact (gamma form)    |
/// | cohen_dz              | mean(x − y) / sd(x − y)   (paired)                   |
///
/// s are sample standard deviations (ddof 1). Each returns an Estimate that is undefined when a
/// sample has fewer than 2 values or the denominator is zero.

#include <cmath>
#include <cstddef>
#include <string>

#include <fmt/format.h>

#include "mechlens/metrics/descriptive.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

namespace detail {
inline Estimate need_two_each(const Sample& x, const Sample& y, const char* fn, bool& ok) {
  ok = false;
  if (x.size() < 2 || y.size() < 2)
    return undefined_estimate(fmt::format("{}: each sample needs at least 2 values; got {} and {}", fn,
                                          x.size(), y.size()));
  ok = true;
  return {};
}
}  // namespace detail

/// Cohen's d with the average-variance denominator: Δ / √((s1² + s2²)/2), Δ = mean(x) − mean(y).
/// This is the form the DEC7 study reported. x and y need not be the same length.
inline Estimate cohen_d_average(const Sample& x, const Sample& y) {
  detail::check_finite(x, "cohen_d_average", "x");
  detail::check_finite(y, "cohen_d_average", "y");
  bool ok;
  auto e = detail::need_two_each(x, y, "cohen_d_average", ok);
  if (!ok) return e;
  const double v1 = detail::variance_of(x), v2 = detail::variance_of(y);
  const double denom = std::sqrt((v1 + v2) / 2.0);
  if (!(denom > 0.0)) return detail::undefined_estimate("cohen_d_average: both samples have zero variance");
  return detail::defined_estimate((detail::mean_of(x) - detail::mean_of(y)) / denom);
}

/// Cohen's d (average-variance form) from published numbers: the difference of means and the
/// two conditions' standard deviations, e.g. 3.78 / √((1.11² + 4.38²)/2) ≈ 1.18.
inline Estimate cohen_d_average_from_summary(double mean_difference, double sd1, double sd2) {
  MECHLENS_CHECK(std::isfinite(mean_difference) && std::isfinite(sd1) && std::isfinite(sd2) && sd1 >= 0 && sd2 >= 0,
                 ArgumentError,
                 "cohen_d_average_from_summary: expected a finite difference and non-negative sds; got {}, {}, {}",
                 mean_difference, sd1, sd2);
  const double denom = std::sqrt((sd1 * sd1 + sd2 * sd2) / 2.0);
  if (!(denom > 0.0)) return detail::undefined_estimate("cohen_d_average_from_summary: both sds are zero");
  return detail::defined_estimate(mean_difference / denom);
}

/// Cohen's d (average-variance form) of two Summary rows, first minus second.
inline Estimate cohen_d_average(const Summary& a, const Summary& b) {
  return cohen_d_average_from_summary(a.mean - b.mean, a.sd, b.sd);
}

/// Cohen's d with the pooled standard deviation √(((n1−1)s1² + (n2−1)s2²)/(n1+n2−2)).
inline Estimate cohen_d_pooled(const Sample& x, const Sample& y) {
  detail::check_finite(x, "cohen_d_pooled", "x");
  detail::check_finite(y, "cohen_d_pooled", "y");
  bool ok;
  auto e = detail::need_two_each(x, y, "cohen_d_pooled", ok);
  if (!ok) return e;
  const double n1 = static_cast<double>(x.size()), n2 = static_cast<double>(y.size());
  const double mx = detail::mean_of(x), my = detail::mean_of(y);
  const double sp = std::sqrt((detail::sum_sq_dev(x, mx) + detail::sum_sq_dev(y, my)) / (n1 + n2 - 2.0));
  if (!(sp > 0.0)) return detail::undefined_estimate("cohen_d_pooled: both samples have zero variance");
  return detail::defined_estimate((mx - my) / sp);
}

/// Hedges' small-sample correction J(df) = Γ(df/2) / (√(df/2) Γ((df−1)/2)), exact (not the
/// 1 − 3/(4df − 1) approximation). Throws ArgumentError for df <= 1.
inline double hedges_correction(double df) {
  MECHLENS_CHECK(df > 1.0 && std::isfinite(df), ArgumentError,
                 "hedges_correction: degrees of freedom must be finite and > 1; got {}", df);
  return std::exp(std::lgamma(df / 2.0) - std::log(std::sqrt(df / 2.0)) - std::lgamma((df - 1.0) / 2.0));
}

/// Hedges' g: J(n1 + n2 − 2) · cohen_d_pooled(x, y).
inline Estimate hedges_g(const Sample& x, const Sample& y) {
  auto d = cohen_d_pooled(x, y);
  if (!d.defined) return d;
  d.value *= hedges_correction(static_cast<double>(x.size() + y.size()) - 2.0);
  return d;
}

/// Cohen's d_z of paired samples: mean(x − y) / sd(x − y).
inline Estimate cohen_dz(const Sample& x, const Sample& y) {
  detail::check_paired(x, y, "cohen_dz");
  detail::check_finite(x, "cohen_dz", "x");
  detail::check_finite(y, "cohen_dz", "y");
  if (x.size() < 2)
    return detail::undefined_estimate(fmt::format("cohen_dz: needs at least 2 pairs; got {}", x.size()));
  const Sample d = detail::difference(x, y);
  const double s = std::sqrt(detail::variance_of(d));
  if (!(s > 0.0)) return detail::undefined_estimate("cohen_dz: the paired differences have zero variance");
  return detail::defined_estimate(detail::mean_of(d) / s);
}

}  // namespace mechlens::metrics
