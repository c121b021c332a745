#pragma once
/// \file
/// Transfer efficiency of a patch: how far the patched condition moves from the baseline towards
/// the donor (recursive) condition,
///     TE = (mean(patched) − mean(baseline)) / (mean(recursive) − mean(baseline)),
/// 0 = nothing transferred, 1 = the full effect. The study's 63.5 % is
/// (4.11 − 0.35) / (6.27 − 0.35). With per-pair scores, a bootstrap CI resamples pairs (rows of
/// baseline, recursive and patched together).
///
/// TE is a share of the natural gap mean(recursive − baseline). Where that gap is not there — its
/// paired bootstrap CI includes 0 — the ratio divides by noise (random-weight models give
/// +302 %, −2595 %), so transfer_efficiency() withholds it: value and CI are undefined, the reason
/// beside them, and `no_natural_gap` set, with the gap and its CI kept in `gap`.

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mechlens/metrics/bootstrap.hpp"
#include "mechlens/metrics/test_result.hpp"

namespace mechlens::metrics {

/// TE from three condition means. Undefined when recursive and baseline means are equal.
inline Estimate transfer_efficiency_from_means(double baseline_mean, double recursive_mean, double patched_mean) {
  MECHLENS_CHECK(std::isfinite(baseline_mean) && std::isfinite(recursive_mean) && std::isfinite(patched_mean),
                 ArgumentError,
                 "transfer_efficiency_from_means: means must be finite; got baseline {}, recursive {}, patched {}",
                 baseline_mean, recursive_mean, patched_mean);
  const double denom = recursive_mean - baseline_mean;
  if (denom == 0.0)
    return detail::undefined_estimate("transfer efficiency: the recursive and baseline means are equal (no effect to transfer)");
  return detail::defined_estimate((patched_mean - baseline_mean) / denom);
}

/// The natural gap a transfer efficiency is a share of: Δ = mean(recursive − baseline) over pairs.
struct NaturalGap {
  double delta = std::numeric_limits<double>::quiet_NaN();
  ConfidenceInterval ci;  ///< paired bootstrap CI of Δ (the TE's options: same seed, resamples, level)
  /// Whether there is a gap to take a share of: the CI excludes 0 (where the CI is undefined, e.g.
  /// every pair differs by the same amount, whether every pair's difference has the same sign).
  bool evident = false;
  std::string reason;  ///< why it is not evident; empty when it is
};

/// Transfer efficiency with its bootstrap confidence interval over pairs.
struct TransferEfficiency {
  Estimate value;          ///< TE on the data
  ConfidenceInterval ci;   ///< bootstrap CI (pairs resampled); undefined when TE is
  std::size_t n_pairs = 0;
  NaturalGap gap;          ///< computed whenever the means define TE (n >= 2, unequal means)
  /// TE and its CI withheld because the natural gap is not evident (value.reason says why).
  bool no_natural_gap = false;
};

namespace detail {
/// Δ = mean(recursive) − mean(baseline) with its paired CI, and whether it is evident.
inline NaturalGap natural_gap(const Sample& baseline, const Sample& recursive, const BootstrapOptions& options) {
  NaturalGap g;
  g.delta = detail::mean_of(recursive) - detail::mean_of(baseline);
  g.ci = bootstrap_ci_paired(
      {baseline, recursive}, [](const std::vector<Sample>& s) { return detail::mean_of(s[1]) - detail::mean_of(s[0]); },
      options);
  const std::string level = fmt::format("{:g}%", 100.0 * options.confidence_level);
  if (g.ci.defined) {
    g.evident = g.ci.low > 0.0 || g.ci.high < 0.0;
    if (!g.evident)
      g.reason = fmt::format("no natural gap: mean(recursive - baseline) = {:+.4g}, {} CI [{:+.4g}, {:+.4g}] includes 0, "
                             "so a share of it means nothing",
                             g.delta, level, g.ci.low, g.ci.high);
    return g;
  }
  bool all_above = true, all_below = true;
  for (std::size_t i = 0; i < baseline.size(); ++i) {
    all_above = all_above && recursive(i) > baseline(i);
    all_below = all_below && recursive(i) < baseline(i);
  }
  g.evident = all_above || all_below;
  if (!g.evident)
    g.reason = fmt::format("no natural gap: mean(recursive - baseline) = {:+.4g}, and its {} CI is undefined ({})",
                           g.delta, level, g.ci.reason);
  return g;
}
}  // namespace detail

/// TE of per-pair scores (element i of each sample belongs to pair i) with a seeded bootstrap CI.
/// Resamples whose recursive and baseline means coincide make the CI undefined (it says so).
/// Withheld (undefined, `no_natural_gap`) when the natural gap is not evident (see the file comment).
inline TransferEfficiency transfer_efficiency(const Sample& baseline, const Sample& recursive, const Sample& patched,
                                              const BootstrapOptions& options = {}) {
  const char* fn = "transfer_efficiency";
  MECHLENS_CHECK(baseline.size() == recursive.size() && baseline.size() == patched.size(), ArgumentError,
                 "{}: baseline, recursive and patched must hold one score per pair; got {}, {} and {} values", fn,
                 baseline.size(), recursive.size(), patched.size());
  detail::check_finite(baseline, fn, "baseline");
  detail::check_finite(recursive, fn, "recursive");
  detail::check_finite(patched, fn, "patched");
  TransferEfficiency out;
  out.n_pairs = baseline.size();
  if (baseline.size() < 2) {
    out.value = detail::undefined_estimate(fmt::format("{}: needs at least 2 pairs; got {}", fn, baseline.size()));
    out.ci.reason = out.value.reason;
    return out;
  }
  out.value = transfer_efficiency_from_means(detail::mean_of(baseline), detail::mean_of(recursive), detail::mean_of(patched));
  if (!out.value.defined) {
    out.ci.reason = out.value.reason;
    return out;
  }
  out.gap = detail::natural_gap(baseline, recursive, options);
  if (!out.gap.evident) {
    out.no_natural_gap = true;
    out.value = detail::undefined_estimate(out.gap.reason);
    out.ci.reason = out.gap.reason;
    return out;
  }
  auto statistic = [](const std::vector<Sample>& s) {
    const double mb = detail::mean_of(s[0]);
    return (detail::mean_of(s[2]) - mb) / (detail::mean_of(s[1]) - mb);
  };
  out.ci = bootstrap_ci_paired({baseline, recursive, patched}, statistic, options);
  return out;
}

}  // namespace mechlens::metrics
