#pragma once
/// \file
/// Transfer efficiency of a patch: how far the patched condition moves from the baseline towards
/// the donor (recursive) condition,
///     TE = (mean(patched) − mean(baseline)) / (mean(recursive) − mean(baseline)),
/// 0 = nothing transferred, 1 = the full effect. The study's 63.5 % is
/// (4.11 − 0.35) / (6.27 − 0.35). With per-pair scores, a bootstrap CI resamples pairs (rows of
/// baseline, recursive and patched together).

#include <cmath>
#include <cstddef>
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

/// Transfer efficiency with its bootstrap confidence interval over pairs.
struct TransferEfficiency {
  Estimate value;          ///< TE on the data
  ConfidenceInterval ci;   ///< bootstrap CI (pairs resampled); undefined when TE is
  std::size_t n_pairs = 0;
};

/// TE of per-pair scores (element i of each sample belongs to pair i) with a seeded bootstrap CI.
/// Resamples whose recursive and baseline means coincide make the CI undefined (it says so).
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
  auto statistic = [](const std::vector<Sample>& s) {
    const double mb = detail::mean_of(s[0]);
    return (detail::mean_of(s[2]) - mb) / (detail::mean_of(s[1]) - mb);
  };
  if (!out.value.defined) {
    out.ci.reason = out.value.reason;
    return out;
  }
  out.ci = bootstrap_ci_paired({baseline, recursive, patched}, statistic, options);
  return out;
}

}  // namespace mechlens::metrics
