#pragma once
/// \file
/// Seeded bootstrap confidence intervals (percentile and BCa) for a statistic of one sample, two
/// independent samples, or several paired samples resampled by row — the formulas of
/// scipy.stats.bootstrap:
///  * percentile: the α and 1 − α quantiles (numpy's linear interpolation) of the B bootstrap
///    replicates, α = (1 − level)/2;
///  * BCa: the same quantiles at α1 = Φ(z0 + (z0 + z_α)/(1 − a(z0 + z_α))) and α2 (with z_{1−α}),
///    where z0 = Φ⁻¹((#{θ*_b < θ̂} + #{θ*_b ≤ θ̂}) / 2B) and the acceleration
///    a = Σ_j Σ_i U³/n_j³ / (6 (Σ_j Σ_i U²/n_j²)^{3/2}), U = (n_j − 1)(θ̄_(·) − θ_(i)) from the
///    leave-one-out jackknife of each sample j (of the rows, when paired).
///
/// Resamples come from std::mt19937_64 seeded with `seed`, one index drawn at a time, sample by
/// sample, row-major ([B, n]), each bounded by rejection (unbiased and identical on every
/// platform, unlike std::uniform_int_distribution). bootstrap_ci_from_indices takes explicit
/// index matrices instead, e.g. those numpy drew, to reproduce another tool's interval.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <boost/math/distributions/normal.hpp>
#include <fmt/format.h>
#include <xtensor/xtensor.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

enum class BootstrapMethod {
  Percentile,  ///< quantiles of the bootstrap distribution
  BCa,         ///< bias-corrected and accelerated (Efron 1987), scipy's default
};

inline const char* to_string(BootstrapMethod m) { return m == BootstrapMethod::BCa ? "BCa" : "percentile"; }

struct BootstrapOptions {
  std::size_t n_resamples = 9999;  ///< B, scipy's default
  double confidence_level = 0.95;
  BootstrapMethod method = BootstrapMethod::BCa;
  std::uint64_t seed = 0;  ///< std::mt19937_64 seed; the same seed gives the same interval
};

/// A two-sided bootstrap confidence interval.
struct ConfidenceInterval {
  double estimate = std::numeric_limits<double>::quiet_NaN();  ///< the statistic on the data
  double low = std::numeric_limits<double>::quiet_NaN();
  double high = std::numeric_limits<double>::quiet_NaN();
  double standard_error = std::numeric_limits<double>::quiet_NaN();  ///< sd (ddof 1) of the replicates
  double confidence_level = std::numeric_limits<double>::quiet_NaN();
  BootstrapMethod method = BootstrapMethod::BCa;
  std::size_t n_resamples = 0;
  bool defined = false;
  std::string reason;  ///< why the interval is undefined; empty when defined

  explicit operator bool() const { return defined; }
};

/// A statistic of one or more samples (in the order they were given).
using MultiSampleStatistic = std::function<double(const std::vector<Sample>&)>;

/// Resample index matrices: one [B, n_j] matrix per sample for independent resampling, or a
/// single [B, n] matrix of row indices shared by all samples when paired.
using ResampleIndices = std::vector<xt::xtensor<std::size_t, 2>>;

namespace detail {

/// Uniform integer in [0, n) from a 64-bit engine, unbiased by rejection.
inline std::uint64_t bounded_index(std::mt19937_64& engine, std::uint64_t n) {
  const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
  for (;;) {
    const std::uint64_t r = engine();
    if (r >= threshold) return r % n;
  }
}

/// numpy.percentile(sorted, 100 q) with the default 'linear' method on sorted data.
inline double linear_quantile(const std::vector<double>& sorted, double q) {
  const std::size_t n = sorted.size();
  const double virtual_index = static_cast<double>(n - 1) * q;
  double prev_f = std::floor(virtual_index);
  const double gamma = virtual_index - prev_f;
  prev_f = std::min(std::max(prev_f, 0.0), static_cast<double>(n - 1));
  const auto prev = static_cast<std::size_t>(prev_f);
  const std::size_t next = std::min(prev + 1, n - 1);
  const double a = sorted[prev], b = sorted[next];
  const double diff = b - a;
  // numpy's _lerp: interpolate from the nearer end.
  return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;
}

inline double normal_quantile(double p) { return boost::math::quantile(boost::math::normal(0.0, 1.0), p); }
inline double normal_cdf(double z) { return boost::math::cdf(boost::math::normal(0.0, 1.0), z); }

inline ConfidenceInterval undefined_interval(ConfidenceInterval ci, std::string reason) {
  ci.defined = false;
  ci.reason = std::move(reason);
  ci.low = ci.high = kNaN;
  return ci;
}

inline Sample take(const Sample& s, const std::vector<std::size_t>& rows) {
  Sample out = xt::empty<double>({rows.size()});
  for (std::size_t i = 0; i < rows.size(); ++i) out(i) = s(rows[i]);
  return out;
}

}  // namespace detail

/// Index matrices a seeded bootstrap draws: for each size in `sizes`, a [n_resamples, size]
/// matrix of uniform indices in [0, size), in that order, from one std::mt19937_64(seed).
inline ResampleIndices bootstrap_indices(const std::vector<std::size_t>& sizes, std::size_t n_resamples,
                                         std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  ResampleIndices out;
  for (std::size_t n : sizes) {
    MECHLENS_CHECK(n >= 1, ArgumentError, "bootstrap_indices: every sample size must be >= 1; got {}", n);
    xt::xtensor<std::size_t, 2> idx = xt::empty<std::size_t>({n_resamples, n});
    for (std::size_t b = 0; b < n_resamples; ++b)
      for (std::size_t i = 0; i < n; ++i) idx(b, i) = static_cast<std::size_t>(detail::bounded_index(engine, n));
    out.push_back(std::move(idx));
  }
  return out;
}

/// The bootstrap interval of `statistic` on `samples` from given resample indices (see
/// ResampleIndices). Every sample needs at least 2 values, paired samples equal lengths.
/// Undefined (with a reason) when the statistic is not finite on the data or on some resample,
/// or, for BCa, when the bootstrap distribution lies on one side of the estimate or the
/// jackknife values are all equal.
inline ConfidenceInterval bootstrap_ci_from_indices(const std::vector<Sample>& samples, bool paired,
                                                    const MultiSampleStatistic& statistic,
                                                    const ResampleIndices& indices, double confidence_level,
                                                    BootstrapMethod method) {
  const char* fn = "bootstrap_ci";
  MECHLENS_CHECK(!samples.empty(), ArgumentError, "{}: no samples given", fn);
  MECHLENS_CHECK(confidence_level > 0.0 && confidence_level < 1.0, ArgumentError,
                 "{}: confidence_level must lie in (0, 1); got {}", fn, confidence_level);
  for (std::size_t j = 0; j < samples.size(); ++j) {
    detail::check_finite(samples[j], fn, fmt::format("samples[{}]", j).c_str());
    MECHLENS_CHECK(samples[j].size() >= 2, ArgumentError, "{}: samples[{}] has {} value(s); each needs at least 2",
                   fn, j, samples[j].size());
    if (paired)
      MECHLENS_CHECK(samples[j].size() == samples[0].size(), ArgumentError,
                     "{}: paired samples must have equal lengths; samples[0] has {}, samples[{}] has {}", fn,
                     samples[0].size(), j, samples[j].size());
  }
  const std::size_t n_matrices = paired ? 1 : samples.size();
  MECHLENS_CHECK(indices.size() == n_matrices, ArgumentError,
                 "{}: expected {} index matrix(es) ({}), got {}", fn, n_matrices,
                 paired ? "one shared by the paired samples" : "one per sample", indices.size());
  const std::size_t B = indices[0].shape()[0];
  MECHLENS_CHECK(B >= 2, ArgumentError, "{}: needs at least 2 resamples; got {}", fn, B);
  for (std::size_t j = 0; j < n_matrices; ++j) {
    const std::size_t n = samples[j].size();
    MECHLENS_CHECK(indices[j].shape()[0] == B && indices[j].shape()[1] == n, ArgumentError,
                   "{}: index matrix {} must be [{}, {}]; got [{}, {}]", fn, j, B, n, indices[j].shape()[0],
                   indices[j].shape()[1]);
    for (std::size_t v : indices[j])
      MECHLENS_CHECK(v < n, ArgumentError, "{}: index matrix {} holds {}, out of range for {} values", fn, j, v, n);
  }

  ConfidenceInterval ci;
  ci.method = method;
  ci.confidence_level = confidence_level;
  ci.n_resamples = B;
  ci.estimate = statistic(samples);
  if (!std::isfinite(ci.estimate))
    return detail::undefined_interval(ci, fmt::format("the statistic is not finite on the data ({})", ci.estimate));

  // Replicates.
  std::vector<double> theta(B);
  std::vector<Sample> resampled(samples.size());
  std::size_t bad = 0;
  for (std::size_t b = 0; b < B; ++b) {
    for (std::size_t j = 0; j < samples.size(); ++j) {
      const auto& idx = indices[paired ? 0 : j];
      const std::size_t n = samples[j].size();
      Sample r = xt::empty<double>({n});
      for (std::size_t i = 0; i < n; ++i) r(i) = samples[j](idx(b, i));
      resampled[j] = std::move(r);
    }
    theta[b] = statistic(resampled);
    if (!std::isfinite(theta[b])) ++bad;
  }
  if (bad > 0)
    return detail::undefined_interval(
        ci, fmt::format("the statistic is not finite on {} of {} resamples (e.g. a zero denominator)", bad, B));
  {
    const double m = detail::compensated_sum(theta.begin(), theta.end()) / static_cast<double>(B);
    std::vector<double> sq(B);
    for (std::size_t b = 0; b < B; ++b) sq[b] = (theta[b] - m) * (theta[b] - m);
    ci.standard_error = std::sqrt(detail::compensated_sum(sq.begin(), sq.end()) / static_cast<double>(B - 1));
  }

  const double alpha = (1.0 - confidence_level) / 2.0;
  double a1 = alpha, a2 = 1.0 - alpha;
  if (method == BootstrapMethod::BCa) {
    std::size_t below = 0, at_or_below = 0;
    for (double t : theta) {
      below += t < ci.estimate;
      at_or_below += t <= ci.estimate;
    }
    const double pct = static_cast<double>(below + at_or_below) / (2.0 * static_cast<double>(B));
    if (pct <= 0.0 || pct >= 1.0)
      return detail::undefined_interval(ci, "BCa: every bootstrap replicate lies on one side of the estimate");
    const double z0 = detail::normal_quantile(pct);

    // Jackknife: leave one row out (paired) or one value of one sample out (independent).
    double num = 0.0, den = 0.0;
    auto accumulate = [&](const std::vector<double>& jk) {
      const double nj = static_cast<double>(jk.size());
      const double mean = detail::compensated_sum(jk.begin(), jk.end()) / nj;
      for (double v : jk) {
        const double u = (nj - 1.0) * (mean - v);
        num += u * u * u / (nj * nj * nj);
        den += u * u / (nj * nj);
      }
    };
    if (paired) {
      const std::size_t n = samples[0].size();
      std::vector<double> jk(n);
      std::vector<std::size_t> rows(n - 1);
      std::vector<Sample> reduced(samples.size());
      for (std::size_t leave = 0; leave < n; ++leave) {
        for (std::size_t i = 0, k = 0; i < n; ++i)
          if (i != leave) rows[k++] = i;
        for (std::size_t j = 0; j < samples.size(); ++j) reduced[j] = detail::take(samples[j], rows);
        jk[leave] = statistic(reduced);
      }
      accumulate(jk);
    } else {
      for (std::size_t j = 0; j < samples.size(); ++j) {
        const std::size_t n = samples[j].size();
        std::vector<double> jk(n);
        std::vector<std::size_t> rows(n - 1);
        std::vector<Sample> reduced = samples;
        for (std::size_t leave = 0; leave < n; ++leave) {
          for (std::size_t i = 0, k = 0; i < n; ++i)
            if (i != leave) rows[k++] = i;
          reduced[j] = detail::take(samples[j], rows);
          jk[leave] = statistic(reduced);
        }
        accumulate(jk);
      }
    }
    if (!(den > 0.0) || !std::isfinite(num))
      return detail::undefined_interval(ci, "BCa: the jackknife values are all equal (acceleration undefined)");
    const double accel = num / (6.0 * std::pow(den, 1.5));
    const double z_alpha = detail::normal_quantile(alpha);
    const double n1 = z0 + z_alpha, n2 = z0 - z_alpha;
    a1 = detail::normal_cdf(z0 + n1 / (1.0 - accel * n1));
    a2 = detail::normal_cdf(z0 + n2 / (1.0 - accel * n2));
    if (!std::isfinite(a1) || !std::isfinite(a2))
      return detail::undefined_interval(ci, "BCa: the adjusted quantile levels are not finite");
  }
  std::sort(theta.begin(), theta.end());
  // NOTE: scipy passes 100·α to numpy.percentile, which divides by 100 again; mirrored so the
  // quantile level is the same double.
  ci.low = detail::linear_quantile(theta, (a1 * 100.0) / 100.0);
  ci.high = detail::linear_quantile(theta, (a2 * 100.0) / 100.0);
  ci.defined = true;
  return ci;
}

/// Seeded bootstrap CI of a statistic of one sample, e.g. the mean.
inline ConfidenceInterval bootstrap_ci(const Sample& x, const std::function<double(const Sample&)>& statistic,
                                       const BootstrapOptions& options = {}) {
  const auto idx = bootstrap_indices({x.size()}, options.n_resamples, options.seed);
  return bootstrap_ci_from_indices({x}, false, [&](const std::vector<Sample>& s) { return statistic(s[0]); }, idx,
                                   options.confidence_level, options.method);
}

/// Seeded bootstrap CI of a statistic of two independent samples (each resampled on its own),
/// e.g. a difference of means.
inline ConfidenceInterval bootstrap_ci(const Sample& x, const Sample& y,
                                       const std::function<double(const Sample&, const Sample&)>& statistic,
                                       const BootstrapOptions& options = {}) {
  const auto idx = bootstrap_indices({x.size(), y.size()}, options.n_resamples, options.seed);
  return bootstrap_ci_from_indices({x, y}, false, [&](const std::vector<Sample>& s) { return statistic(s[0], s[1]); },
                                   idx, options.confidence_level, options.method);
}

/// Seeded bootstrap CI of a statistic of paired samples: rows (pairs) are resampled together.
inline ConfidenceInterval bootstrap_ci_paired(const std::vector<Sample>& samples, const MultiSampleStatistic& statistic,
                                              const BootstrapOptions& options = {}) {
  MECHLENS_CHECK(!samples.empty(), ArgumentError, "bootstrap_ci_paired: no samples given");
  const auto idx = bootstrap_indices({samples[0].size()}, options.n_resamples, options.seed);
  return bootstrap_ci_from_indices(samples, true, statistic, idx, options.confidence_level, options.method);
}

}  // namespace mechlens::metrics
