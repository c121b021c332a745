#pragma once
/// \file
/// The numbers of a run, computed from its records alone (so anyone can recompute them from
/// generations.jsonl, with other scores too — e.g. blind ratings):
///
///  * per condition: n, mean, sd (ddof 1) and a bootstrap CI of the mean;
///  * per contrast a − b (paired by pair id): Δ = mean(a − b) with a paired bootstrap CI (BCa),
///    Cohen's d in the study's form (average variance, Δ / √((s_a² + s_b²)/2)), pooled d, d_z,
///    the paired t-test (the study's test) and the Wilcoxon signed-rank test, and — when the
///    contrast names its reference conditions — transfer efficiency
///    (mean(a) − mean(baseline)) / (mean(recursive) − mean(baseline)) with a BCa CI, withheld
///    ("no_natural_gap": true, null, the reason beside it) when the natural gap
///    recursive − baseline has a CI that includes 0 (metrics/transfer_efficiency.hpp);
///  * p-values adjusted (Holm or Benjamini–Hochberg) within each family of contrasts, e.g. the
///    layer ranges of a sweep.
///
/// A number that is undefined for the data (n < 2, zero variance, all differences zero) is
/// written as null with the reason beside it, never as a made-up 0.

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <xtensor/xadapt.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/records.hpp"
#include "mechlens/io/atomic_file.hpp"
#include "mechlens/io/csv.hpp"
#include "mechlens/metrics/bootstrap.hpp"
#include "mechlens/metrics/corrections.hpp"
#include "mechlens/metrics/descriptive.hpp"
#include "mechlens/metrics/effect_size.hpp"
#include "mechlens/metrics/t_test.hpp"
#include "mechlens/metrics/transfer_efficiency.hpp"
#include "mechlens/metrics/wilcoxon.hpp"

namespace mechlens::experiments {

enum class Correction { None, Holm, BenjaminiHochberg };

inline Correction parse_correction(const std::string& s) {
  if (s == "holm") return Correction::Holm;
  if (s == "bh" || s == "fdr") return Correction::BenjaminiHochberg;
  if (s == "none") return Correction::None;
  ::mechlens::detail::raise<ArgumentError>("correction '{}' is unknown (expected holm, bh or none)", s);
}
inline const char* correction_name(Correction c) {
  return c == Correction::Holm ? "holm" : c == Correction::BenjaminiHochberg ? "benjamini-hochberg" : "none";
}

/// A within-pair comparison of two conditions.
struct Contrast {
  std::string name;   ///< "sufficiency", "0:8", ...
  std::string a, b;   ///< conditions; Δ = a − b
  std::string label;  ///< in words, for tables
  std::string family; ///< contrasts of one family share a multiple-comparison correction ("" = none)
  /// When both are set: the transfer efficiency of a against these two conditions (in summary.json
  /// "reference": {"baseline", "recursive"}, the DEC7 words).
  std::string te_baseline, te_treatment;
};

struct ConditionStats {
  std::string name;
  size_t n = 0;
  double mean = NAN, sd = NAN;
  metrics::ConfidenceInterval mean_ci;
};

struct ContrastStats {
  Contrast spec;
  size_t n_pairs = 0;
  double mean_a = NAN, mean_b = NAN, delta = NAN;
  metrics::ConfidenceInterval delta_ci;
  metrics::Estimate d_study, d_pooled, d_z;
  metrics::TestResult t_test, wilcoxon;
  std::optional<metrics::TransferEfficiency> te;
  bool identical = false;            ///< every pair scored the same in a and b (tests undefined)
  double p_adjusted = NAN;           ///< the t-test p adjusted within the family (NaN when none)
  std::string correction = "none";
};

struct Summary {
  std::vector<ConditionStats> conditions;
  std::vector<ContrastStats> contrasts;
  std::string scorer;
  const ConditionStats* condition(const std::string& name) const {
    for (const auto& c : conditions)
      if (c.name == name) return &c;
    return nullptr;
  }
  const ContrastStats* contrast(const std::string& name) const {
    for (const auto& c : contrasts)
      if (c.spec.name == name) return &c;
    return nullptr;
  }
};

struct SummaryOptions {
  metrics::BootstrapOptions bootstrap;  ///< seeded; BCa, 9999 resamples by default
  Correction correction = Correction::Holm;
};

namespace detail {
inline metrics::Sample sample(const std::vector<double>& v) {
  metrics::Sample s = xt::empty<double>({v.size()});
  for (size_t i = 0; i < v.size(); ++i) s(i) = v[i];
  return s;
}
/// Scores of `condition` by pair id.
inline std::map<std::string, double> scores_by_pair(const std::vector<GenerationRecord>& records,
                                                    const std::string& condition) {
  std::map<std::string, double> out;
  for (const auto& r : records)
    if (r.condition == condition) out[r.pair_id] = r.score;
  return out;
}
inline nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
inline nlohmann::json estimate_json(const metrics::Estimate& e) {
  nlohmann::json j = {{"value", num(e.value)}};
  if (!e.defined) j["reason"] = e.reason;
  return j;
}
inline nlohmann::json ci_json(const metrics::ConfidenceInterval& c) {
  nlohmann::json j = {{"low", num(c.low)}, {"high", num(c.high)}, {"level", num(c.confidence_level)},
                      {"method", metrics::to_string(c.method)}, {"resamples", c.n_resamples}};
  if (!c.defined) j["reason"] = c.reason;
  return j;
}
inline nlohmann::json test_json(const metrics::TestResult& t) {
  nlohmann::json j = {{"test", t.test}, {"statistic", num(t.statistic)}, {"df", num(t.df)}, {"p", num(t.p_value)},
                      {"alternative", metrics::to_string(t.alternative)}};
  if (!t.method.empty()) j["method"] = t.method;
  if (!t.defined) j["reason"] = t.reason;
  return j;
}
}  // namespace detail

/// Statistics of `conditions` (in this order) and `contrasts` from `records` (see the file comment).
inline Summary summarize_records(const std::vector<GenerationRecord>& records, const std::vector<std::string>& conditions,
                                 const std::vector<Contrast>& contrasts, const SummaryOptions& opt = {}) {
  Summary s;
  for (const auto& r : records)
    if (s.scorer.empty()) s.scorer = r.scorer;
  for (const auto& name : conditions) {
    ConditionStats c;
    c.name = name;
    std::vector<double> v;
    for (auto& [pair, score] : detail::scores_by_pair(records, name)) v.push_back(score);
    c.n = v.size();
    if (!v.empty()) c.mean = metrics::mean(detail::sample(v));
    if (v.size() >= 2) {
      c.sd = metrics::sd(detail::sample(v));
      c.mean_ci = metrics::bootstrap_ci(detail::sample(v), [](const metrics::Sample& x) { return metrics::mean(x); },
                                        opt.bootstrap);
    } else {
      c.mean_ci.reason = "fewer than 2 generations";
    }
    s.conditions.push_back(c);
  }
  for (const auto& spec : contrasts) {
    ContrastStats cs;
    cs.spec = spec;
    const auto a = detail::scores_by_pair(records, spec.a), b = detail::scores_by_pair(records, spec.b);
    std::map<std::string, double> base, rec;
    const bool with_te = !spec.te_baseline.empty() && !spec.te_treatment.empty();
    if (with_te) {
      base = detail::scores_by_pair(records, spec.te_baseline);
      rec = detail::scores_by_pair(records, spec.te_treatment);
    }
    std::vector<double> va, vb, vbase, vrec;
    for (const auto& [pair, score] : a) {
      auto ib = b.find(pair);
      if (ib == b.end()) continue;
      if (with_te && (!base.count(pair) || !rec.count(pair))) continue;
      va.push_back(score);
      vb.push_back(ib->second);
      if (with_te) {
        vbase.push_back(base.at(pair));
        vrec.push_back(rec.at(pair));
      }
    }
    cs.n_pairs = va.size();
    const auto xa = detail::sample(va), xb = detail::sample(vb);
    if (!va.empty()) {
      cs.mean_a = metrics::mean(xa);
      cs.mean_b = metrics::mean(xb);
      cs.delta = cs.mean_a - cs.mean_b;
    }
    if (va.size() >= 2) {
      cs.d_study = metrics::cohen_d_average(xa, xb);
      cs.d_pooled = metrics::cohen_d_pooled(xa, xb);
      cs.d_z = metrics::cohen_dz(xa, xb);
      cs.t_test = metrics::paired_t_test(xa, xb);
      cs.wilcoxon = metrics::wilcoxon_signed_rank(xa, xb);
      bool all_equal = true;
      for (size_t i = 0; i < va.size(); ++i) all_equal = all_equal && va[i] == vb[i];
      cs.identical = all_equal;
      if (all_equal) {
        cs.delta_ci.reason = "every pair has the same score in both conditions";
      } else {
        cs.delta_ci = metrics::bootstrap_ci_paired(
            {xa, xb}, [](const std::vector<metrics::Sample>& x) { return metrics::mean(x[0]) - metrics::mean(x[1]); },
            opt.bootstrap);
      }
      if (with_te) cs.te = metrics::transfer_efficiency(detail::sample(vbase), detail::sample(vrec), xa, opt.bootstrap);
    } else {
      const std::string why = va.empty() ? "no pair has both conditions" : "fewer than 2 pairs";
      cs.d_study.reason = cs.d_pooled.reason = cs.d_z.reason = why;
      cs.t_test.reason = cs.wilcoxon.reason = cs.delta_ci.reason = why;
    }
    s.contrasts.push_back(std::move(cs));
  }
  // Multiple comparisons within each family.
  std::map<std::string, std::vector<size_t>> families;
  for (size_t i = 0; i < s.contrasts.size(); ++i)
    if (!s.contrasts[i].spec.family.empty() && s.contrasts[i].t_test.defined) families[s.contrasts[i].spec.family].push_back(i);
  for (const auto& [family, members] : families) {
    std::vector<double> p;
    for (size_t i : members) p.push_back(s.contrasts[i].t_test.p_value);
    metrics::Sample adj = detail::sample(p);
    if (opt.correction == Correction::Holm) adj = metrics::holm(detail::sample(p));
    if (opt.correction == Correction::BenjaminiHochberg) adj = metrics::benjamini_hochberg(detail::sample(p));
    for (size_t k = 0; k < members.size(); ++k) {
      s.contrasts[members[k]].p_adjusted = adj(k);
      s.contrasts[members[k]].correction = correction_name(opt.correction);
    }
  }
  return s;
}

/// What the correction of `family` covered, in words for a table header: "holm correction across
/// the 4 ranges with a test (3 of 7 scored identically to their baseline: no test)". Only
/// contrasts with a defined t test enter the family (summarize_records); `unit` names its members
/// in the plural ("ranges", "patches").
inline std::string correction_note(const Summary& s, const std::string& family, const std::string& unit) {
  size_t members = 0, tested = 0, identical = 0;
  std::string correction = "none";
  for (const auto& c : s.contrasts) {
    if (c.spec.family != family) continue;
    ++members;
    if (std::isfinite(c.p_adjusted)) {
      ++tested;
      correction = c.correction;
    } else if (c.identical) {
      ++identical;
    }
  }
  if (tested == 0) return fmt::format("no test to correct among the {}", unit);
  std::string out = correction == "none" ? fmt::format("no correction across the {} {} with a test", tested, unit)
                                         : fmt::format("{} correction across the {} {} with a test", correction, tested, unit);
  if (tested < members) {
    const size_t untested = members - tested;
    out += identical == untested
               ? fmt::format(" ({} of {} scored identically to their baseline: no test)", untested, members)
               : fmt::format(" ({} of {} have no test)", untested, members);
  }
  return out;
}

inline nlohmann::json to_json(const Summary& s) {
  nlohmann::json j;
  j["scorer"] = s.scorer;
  j["conditions"] = nlohmann::json::array();
  for (const auto& c : s.conditions)
    j["conditions"].push_back({{"name", c.name}, {"n", c.n}, {"mean", detail::num(c.mean)}, {"sd", detail::num(c.sd)},
                               {"mean_ci", detail::ci_json(c.mean_ci)}});
  j["contrasts"] = nlohmann::json::array();
  for (const auto& c : s.contrasts) {
    nlohmann::json k = {{"name", c.spec.name},
                        {"label", c.spec.label},
                        {"a", c.spec.a},
                        {"b", c.spec.b},
                        {"family", c.spec.family},
                        {"n_pairs", c.n_pairs},
                        {"identical", c.identical},
                        {"mean_a", detail::num(c.mean_a)},
                        {"mean_b", detail::num(c.mean_b)},
                        {"delta", detail::num(c.delta)},
                        {"delta_ci", detail::ci_json(c.delta_ci)},
                        {"d_study", detail::estimate_json(c.d_study)},
                        {"d_study_form", "average variance: delta / sqrt((sd_a^2 + sd_b^2) / 2)"},
                        {"d_pooled", detail::estimate_json(c.d_pooled)},
                        {"d_z", detail::estimate_json(c.d_z)},
                        {"t_test", detail::test_json(c.t_test)},
                        {"wilcoxon", detail::test_json(c.wilcoxon)},
                        {"p_adjusted", detail::num(c.p_adjusted)},
                        {"correction", c.correction}};
    if (c.te) {
      k["transfer_efficiency"] = {{"reference", {{"baseline", c.spec.te_baseline}, {"recursive", c.spec.te_treatment}}},
                                  {"value", detail::num(c.te->value.value)},
                                  {"ci", detail::ci_json(c.te->ci)}};
      if (!c.te->value.defined) k["transfer_efficiency"]["reason"] = c.te->value.reason;
      if (std::isfinite(c.te->gap.delta))
        k["transfer_efficiency"]["natural_gap"] = {{"delta", detail::num(c.te->gap.delta)},
                                                   {"ci", detail::ci_json(c.te->gap.ci)},
                                                   {"evident", c.te->gap.evident}};
      k["transfer_efficiency"]["no_natural_gap"] = c.te->no_natural_gap;
    }
    j["contrasts"].push_back(std::move(k));
  }
  return j;
}

/// Writes summary.json atomically: the statistics plus `meta` (run settings) under "run".
inline void write_summary_json(const std::string& path, const Summary& s, const nlohmann::json& meta) {
  nlohmann::json j = to_json(s);
  j["run"] = meta;
  io::write_file_atomically(path, j.dump(2) + "\n");
}

namespace detail {
/// A number as summary.csv writes it: 6 significant digits, empty when undefined.
inline std::string csv_num(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : ""; }
}  // namespace detail

/// One CSV for the run (io/csv.hpp): a row per condition (kind "condition") and per contrast
/// (kind "contrast"); empty fields where a column does not apply or a number is undefined.
/// Contrasts also say which condition their transfer efficiency is measured from
/// (`te_baseline`), whether both conditions scored alike on every pair (`identical`: no test) and
/// whether the efficiency is withheld because the natural gap is not there (`no_natural_gap`).
inline std::string summary_csv(const Summary& s) {
  using detail::csv_num;
  std::string out = io::csv_row({"kind", "name", "a", "b", "n", "mean", "sd", "mean_ci_low", "mean_ci_high", "delta",
                                 "delta_ci_low", "delta_ci_high", "d_study", "d_pooled", "d_z", "t", "df", "p",
                                 "p_adjusted", "correction", "wilcoxon_p", "transfer_efficiency", "te_ci_low",
                                 "te_ci_high", "te_baseline", "identical", "no_natural_gap"});
  const std::string none;
  for (const auto& c : s.conditions)
    out += io::csv_row({"condition", c.name, none, none, fmt::format("{}", c.n), csv_num(c.mean), csv_num(c.sd),
                        csv_num(c.mean_ci.low), csv_num(c.mean_ci.high), none, none, none, none, none, none, none,
                        none, none, none, none, none, none, none, none, none, none, none});
  for (const auto& c : s.contrasts)
    out += io::csv_row({"contrast", c.spec.name, c.spec.a, c.spec.b, fmt::format("{}", c.n_pairs), none, none, none,
                        none, csv_num(c.delta), csv_num(c.delta_ci.low), csv_num(c.delta_ci.high),
                        csv_num(c.d_study.value), csv_num(c.d_pooled.value), csv_num(c.d_z.value),
                        csv_num(c.t_test.statistic), csv_num(c.t_test.df), csv_num(c.t_test.p_value),
                        csv_num(c.p_adjusted), c.correction, csv_num(c.wilcoxon.p_value),
                        c.te ? csv_num(c.te->value.value) : none, c.te ? csv_num(c.te->ci.low) : none,
                        c.te ? csv_num(c.te->ci.high) : none, c.te ? c.spec.te_baseline : none,
                        c.identical ? "true" : "false", c.te && c.te->no_natural_gap ? "true" : "false"});
  return out;
}

}  // namespace mechlens::experiments
