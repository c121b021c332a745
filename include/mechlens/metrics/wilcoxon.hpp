#pragma once
/// \file
/// Wilcoxon signed-rank test of paired samples, matching scipy.stats.wilcoxon with its defaults
/// (zero_method='wilcox': zero differences are dropped; correction=False: no continuity
/// correction) and scipy >= 1.15's choice of method.
///
/// The statistic is W = min(R+, R−) for the two-sided test and R+ (the rank sum of the positive
/// differences x − y) for one-sided tests, as scipy reports it. Ranks of |x − y| are average
/// ranks. With PValueMethod::Auto the p-value is
///  * exact (the null distribution of R+ without ties) when n ≤ 50 and there are no ties and no
///    zero differences;
///  * else, when n ≤ 13, the exact permutation distribution: all 2^m sign flips of the m non-zero
///    differences, keeping their tied ranks (what scipy's PermutationMethod computes there);
///  * else the normal approximation with tie correction,
///    z = (R+ − m(m+1)/4) / √((m(m+1)(2m+1) − Σ(t³ − t)/2) / 24).
/// n counts all pairs (zeros included), m the non-zero differences.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/metrics/detail/p_values.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

namespace detail {

/// Distribution of S = Σ b_i w_i over independent fair coins b_i ∈ {0, 1}: element s is P(S = s).
/// Weights are integers (doubled ranks). For fewer than 53 weights every probability is an
/// exact dyadic rational, so tail sums are exact.
inline std::vector<double> sign_flip_distribution(const std::vector<std::uint64_t>& weights) {
  std::uint64_t total = 0;
  for (auto w : weights) total += w;
  std::vector<double> p(static_cast<std::size_t>(total) + 1, 0.0);
  p[0] = 1.0;
  std::size_t reach = 0;
  for (auto w64 : weights) {
    const auto w = static_cast<std::size_t>(w64);
    reach += w;
    MECHLENS_CHECK(w > 0, ArgumentError, "sign_flip_distribution: weights must be positive");
    // Descending so p[s - w] still holds the previous step's value.
    for (std::size_t s = reach; s >= w; --s) {
      p[s] = 0.5 * (p[s] + p[s - w]);
      if (s == w) break;
    }
    for (std::size_t s = 0; s < w; ++s) p[s] *= 0.5;
  }
  return p;
}

/// P(S ≤ k) and P(S ≥ k) by direct summation of the tail (no 1 − x cancellation).
inline double lower_tail(const std::vector<double>& p, long long k) {
  if (k < 0) return 0.0;
  const auto last = std::min<std::size_t>(static_cast<std::size_t>(k), p.size() - 1);
  std::vector<double> part(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(last) + 1);
  return compensated_sum(part.begin(), part.end());
}

inline double upper_tail(const std::vector<double>& p, long long k) {
  if (k <= 0) return 1.0;
  if (static_cast<std::size_t>(k) >= p.size()) return 0.0;
  return compensated_sum(p.begin() + k, p.end());
}

/// Cost guard for the exact distributions: m weights summing to ~m², m·m² operations.
inline void check_exact_size(std::size_t m, const char* fn, const char* what) {
  MECHLENS_CHECK(m <= 500, ArgumentError,
                 "{}: the {} null distribution is limited to 500 non-zero differences; got {}. "
                 "Use PValueMethod::Asymptotic for samples this large",
                 fn, what, m);
}

}  // namespace detail

/// Wilcoxon signed-rank test of the paired differences d = x − y (see the file comment for the
/// statistic and the method rule). Undefined when every difference is zero.
inline TestResult wilcoxon_signed_rank(const Sample& d, Alternative alternative = Alternative::TwoSided,
                                       PValueMethod method = PValueMethod::Auto) {
  detail::check_finite(d, "wilcoxon_signed_rank", "d");
  TestResult r;
  r.test = "Wilcoxon signed-rank";
  r.alternative = alternative;
  r.n = d.size();
  if (d.size() == 0) return detail::undefined_result(r, "no pairs");

  std::vector<double> abs_nonzero, sign;
  for (double v : d) {
    if (v != 0.0) {
      abs_nonzero.push_back(std::abs(v));
      sign.push_back(v > 0 ? 1.0 : -1.0);
    }
  }
  const std::size_t m = abs_nonzero.size();
  const bool zeros = m < d.size();
  if (m == 0) return detail::undefined_result(r, fmt::format("all {} differences are zero", d.size()));

  std::vector<double> ranks;
  const auto groups = detail::average_ranks(abs_nonzero, ranks);
  const bool ties = detail::has_ties(groups);
  double r_plus = 0.0, r_minus = 0.0;
  for (std::size_t i = 0; i < m; ++i) (sign[i] > 0 ? r_plus : r_minus) += ranks[i];

  if (method == PValueMethod::Auto) {
    if (d.size() > 50)
      method = PValueMethod::Asymptotic;
    else if (!ties && !zeros)
      method = PValueMethod::Exact;
    else if (d.size() <= 13)
      method = PValueMethod::Permutation;
    else
      method = PValueMethod::Asymptotic;
  }

  double p = detail::kNaN;
  if (method == PValueMethod::Asymptotic) {
    const double md = static_cast<double>(m);
    const double mean = md * (md + 1.0) * 0.25;
    const double se = std::sqrt((md * (md + 1.0) * (2.0 * md + 1.0) - detail::tie_term(groups) / 2.0) / 24.0);
    r.z = (r_plus - mean) / se;
    p = detail::normal_p_value(r.z, alternative);
    r.method = ties ? "normal approximation with tie correction" : "normal approximation";
  } else if (method == PValueMethod::Exact || method == PValueMethod::Permutation) {
    detail::check_exact_size(m, "wilcoxon_signed_rank", to_string(method));
    // Work in doubled ranks so tied (half-integer) ranks are integers.
    std::vector<std::uint64_t> w(m);
    for (std::size_t i = 0; i < m; ++i)
      w[i] = method == PValueMethod::Exact ? 2 * (i + 1) : static_cast<std::uint64_t>(std::llround(2.0 * ranks[i]));
    const auto dist = detail::sign_flip_distribution(w);
    long long lo_k, hi_k;  // doubled R+ for the lower (cdf) and upper (sf) tails
    if (method == PValueMethod::Exact) {
      // As scipy: with ties or zeros the statistic can be fractional; round it up for the cdf
      // and down for the sf (conservative both ways).
      lo_k = 2 * static_cast<long long>(std::ceil(r_plus));
      hi_k = 2 * static_cast<long long>(std::floor(r_plus));
      r.method = (ties || zeros) ? "exact (no-ties distribution; the data have ties or zeros)" : "exact";
    } else {
      lo_k = hi_k = std::llround(2.0 * r_plus);
      r.method = fmt::format("exact permutation (all 2^{} sign flips)", m);
    }
    const double p_less = detail::lower_tail(dist, lo_k);
    const double p_greater = detail::upper_tail(dist, hi_k);
    switch (alternative) {
      case Alternative::Less: p = p_less; break;
      case Alternative::Greater: p = p_greater; break;
      case Alternative::TwoSided: p = detail::clip_p(2.0 * std::min(p_less, p_greater)); break;
    }
  } else {
    ::mechlens::detail::raise<ArgumentError>("wilcoxon_signed_rank: unsupported method '{}'", to_string(method));
  }

  r.statistic = alternative == Alternative::TwoSided ? std::min(r_plus, r_minus) : r_plus;
  r.p_value = p;
  r.defined = true;
  return r;
}

/// Wilcoxon signed-rank test of paired samples x and y (differences x − y).
inline TestResult wilcoxon_signed_rank(const Sample& x, const Sample& y, Alternative alternative = Alternative::TwoSided,
                                       PValueMethod method = PValueMethod::Auto) {
  detail::check_paired(x, y, "wilcoxon_signed_rank");
  detail::check_finite(x, "wilcoxon_signed_rank", "x");
  detail::check_finite(y, "wilcoxon_signed_rank", "y");
  return wilcoxon_signed_rank(detail::difference(x, y), alternative, method);
}

}  // namespace mechlens::metrics
