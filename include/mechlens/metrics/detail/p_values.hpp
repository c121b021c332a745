#pragma once
/// \file
/// p-values from Boost.Math distributions for a statistic and an alternative, in scipy's
/// convention (_get_pvalue): less → P(X ≤ x), greater → P(X ≥ x), two-sided → 2 P(X ≥ |x|) for a
/// distribution symmetric about 0, clipped to 1.

#include <cmath>

#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>

#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics::detail {

template <class Dist>
double symmetric_p_value(const Dist& dist, double x, Alternative alt) {
  if (std::isinf(x)) {
    const bool pos = x > 0;
    switch (alt) {
      case Alternative::Less: return pos ? 1.0 : 0.0;
      case Alternative::Greater: return pos ? 0.0 : 1.0;
      case Alternative::TwoSided: return 0.0;
    }
  }
  switch (alt) {
    case Alternative::Less: return boost::math::cdf(dist, x);
    case Alternative::Greater: return boost::math::cdf(boost::math::complement(dist, x));
    case Alternative::TwoSided: return clip_p(2.0 * boost::math::cdf(boost::math::complement(dist, std::abs(x))));
  }
  return kNaN;
}

/// p-value of a t statistic with `df` degrees of freedom.
inline double t_p_value(double t, double df, Alternative alt) {
  return symmetric_p_value(boost::math::students_t(df), t, alt);
}

/// p-value of a standard normal z.
inline double normal_p_value(double z, Alternative alt) {
  return symmetric_p_value(boost::math::normal(0.0, 1.0), z, alt);
}

}  // namespace mechlens::metrics::detail
