#pragma once
/// \file
/// What every statistical routine in mechlens::metrics shares: the sample type, the alternative
/// hypothesis, result structs that say when a number is undefined, and (in detail) input checks,
/// compensated sums and average ranks.
///
/// Conventions (docs/metrics.md has the full list):
///  * Samples are `xt::xtensor<double, 1>`; `xt::adapt(std_vector)` converts a std::vector.
///  * A NaN or infinity in an input is a caller bug and throws ArgumentError naming the argument
///    and the index. Input that is finite but degenerate (too few observations, zero variance,
///    all differences zero) gives a result with `defined == false` and a `reason`; its numbers
///    are NaN and `checked_p_value()` / `checked()` throw with that reason.
///  * Two-sample routines compare the first sample to the second: a positive statistic means the
///    first is larger ("greater" alternative: the first is stochastically greater).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "mechlens/core/error.hpp"

namespace mechlens::metrics {

/// One sample of observations.
using Sample = xt::xtensor<double, 1>;

/// The alternative hypothesis of a test, as scipy's `alternative=` argument.
enum class Alternative {
  TwoSided,  ///< the two populations (or the difference and zero) differ
  Less,      ///< the first is smaller (the difference x - y is below zero)
  Greater,   ///< the first is larger (the difference x - y is above zero)
};

/// "two-sided", "less" or "greater" (scipy's spelling).
inline const char* to_string(Alternative a) {
  switch (a) {
    case Alternative::TwoSided: return "two-sided";
    case Alternative::Less: return "less";
    case Alternative::Greater: return "greater";
  }
  return "?";
}

/// Parses scipy's spelling ("two-sided", "less", "greater"); throws ArgumentError otherwise.
inline Alternative parse_alternative(const std::string& s) {
  if (s == "two-sided") return Alternative::TwoSided;
  if (s == "less") return Alternative::Less;
  if (s == "greater") return Alternative::Greater;
  ::mechlens::detail::raise<ArgumentError>("alternative: expected 'two-sided', 'less' or 'greater', got '{}'", s);
}

/// How a rank test computes its p-value.
enum class PValueMethod {
  Auto,         ///< scipy's default choice for the test (each test documents its rule)
  Exact,        ///< the exact null distribution of the statistic without ties
  Asymptotic,   ///< normal approximation with tie correction
  Permutation,  ///< exact conditional distribution over all sign flips / relabellings (ties kept)
};

inline const char* to_string(PValueMethod m) {
  switch (m) {
    case PValueMethod::Auto: return "auto";
    case PValueMethod::Exact: return "exact";
    case PValueMethod::Asymptotic: return "asymptotic";
    case PValueMethod::Permutation: return "permutation";
  }
  return "?";
}

/// The outcome of a hypothesis test.
struct TestResult {
  std::string test;     ///< e.g. "Welch t-test", "Wilcoxon signed-rank"
  std::string method;   ///< how p was computed, e.g. "exact", "normal approximation"
  Alternative alternative = Alternative::TwoSided;
  double statistic = std::numeric_limits<double>::quiet_NaN();  ///< t, W, U, r, rho, mean difference
  double df = std::numeric_limits<double>::quiet_NaN();         ///< degrees of freedom, NaN where none
  double p_value = std::numeric_limits<double>::quiet_NaN();
  double z = std::numeric_limits<double>::quiet_NaN();  ///< standardised statistic when a normal
                                                        ///< approximation gave p, else NaN
  std::size_t n = 0;   ///< observations (pairs) in the first sample
  std::size_t n2 = 0;  ///< observations in the second sample of an independent-samples test, else 0
  bool defined = false;
  std::string reason;  ///< why the result is undefined; empty when defined

  explicit operator bool() const { return defined; }

  /// p_value, or ArgumentError with `reason` when the test is undefined for this input.
  double checked_p_value() const {
    MECHLENS_CHECK(defined, ArgumentError, "{}: p-value undefined: {}", test, reason);
    return p_value;
  }
};

/// A point estimate (an effect size, a ratio) that may be undefined for degenerate input.
struct Estimate {
  double value = std::numeric_limits<double>::quiet_NaN();
  bool defined = false;
  std::string reason;

  explicit operator bool() const { return defined; }

  /// value, or ArgumentError with `reason` when undefined.
  double checked() const {
    MECHLENS_CHECK(defined, ArgumentError, "estimate undefined: {}", reason);
    return value;
  }
};

namespace detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Throws ArgumentError when `x` holds a NaN or infinity, naming the function, the argument and
/// the first bad index.
inline void check_finite(const Sample& x, const char* function, const char* argument) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    MECHLENS_CHECK(std::isfinite(x(i)), ArgumentError,
                   "{}: argument '{}' must hold finite numbers; element {} is {}", function, argument,
                   i, x(i));
  }
}

/// Throws ArgumentError when paired samples differ in length.
inline void check_paired(const Sample& x, const Sample& y, const char* function) {
  MECHLENS_CHECK(x.size() == y.size(), ArgumentError,
                 "{}: paired samples 'x' and 'y' must have the same length; got {} and {}", function,
                 x.size(), y.size());
}

/// Neumaier-compensated sum: accurate to a few ulp whatever the order of magnitudes.
template <class It>
double compensated_sum(It first, It last) {
  double sum = 0.0, c = 0.0;
  for (; first != last; ++first) {
    const double v = *first;
    const double t = sum + v;
    if (std::abs(sum) >= std::abs(v))
      c += (sum - t) + v;
    else
      c += (v - t) + sum;
    sum = t;
  }
  return sum + c;
}

inline double sum_of(const Sample& x) { return compensated_sum(x.begin(), x.end()); }

inline double mean_of(const Sample& x) { return sum_of(x) / static_cast<double>(x.size()); }

/// Sum of squared deviations from the mean (two-pass, compensated).
inline double sum_sq_dev(const Sample& x, double mean) {
  std::vector<double> sq(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) sq[i] = (x(i) - mean) * (x(i) - mean);
  return compensated_sum(sq.begin(), sq.end());
}

/// Sample variance with `ddof` delta degrees of freedom; caller guarantees size > ddof.
inline double variance_of(const Sample& x, int ddof = 1) {
  return sum_sq_dev(x, mean_of(x)) / static_cast<double>(static_cast<long>(x.size()) - ddof);
}

/// Elementwise x - y (same lengths checked by the caller).
inline Sample difference(const Sample& x, const Sample& y) {
  Sample d = xt::empty<double>({x.size()});
  for (std::size_t i = 0; i < x.size(); ++i) d(i) = x(i) - y(i);
  return d;
}

/// Average ranks (1-based, ties share the mean of their positions) of `v`, as
/// scipy.stats.rankdata(method='average'); returns the sizes of the tie groups (every group,
/// including groups of one).
inline std::vector<std::size_t> average_ranks(const std::vector<double>& v, std::vector<double>& ranks) {
  const std::size_t n = v.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  ranks.assign(n, 0.0);
  std::vector<std::size_t> groups;
  std::size_t i = 0;
  while (i < n) {
    std::size_t j = i + 1;
    while (j < n && v[order[j]] == v[order[i]]) ++j;
    // positions i..j-1 (0-based) hold ranks i+1..j; their mean is (i + 1 + j) / 2.
    const double r = 0.5 * static_cast<double>(i + 1 + j);
    for (std::size_t k = i; k < j; ++k) ranks[order[k]] = r;
    groups.push_back(j - i);
    i = j;
  }
  return groups;
}

/// Σ (t³ − t) over tie groups: the tie term of rank-test variances.
inline double tie_term(const std::vector<std::size_t>& groups) {
  double s = 0.0;
  for (std::size_t t : groups) {
    const double td = static_cast<double>(t);
    s += td * td * td - td;
  }
  return s;
}

inline bool has_ties(const std::vector<std::size_t>& groups) {
  return std::any_of(groups.begin(), groups.end(), [](std::size_t t) { return t > 1; });
}

/// A result marked undefined with its reason (numbers stay NaN).
inline TestResult undefined_result(TestResult r, std::string reason) {
  r.defined = false;
  r.reason = std::move(reason);
  r.statistic = r.df = r.p_value = r.z = kNaN;
  return r;
}

inline Estimate undefined_estimate(std::string reason) {
  Estimate e;
  e.reason = std::move(reason);
  return e;
}

inline Estimate defined_estimate(double v) {
  Estimate e;
  e.value = v;
  e.defined = true;
  return e;
}

inline double clip_p(double p) { return std::min(1.0, std::max(0.0, p)); }

}  // namespace detail
}  // namespace mechlens::metrics
