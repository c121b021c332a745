#pragma once
/// \file
/// Plain-text tables shaped like the study's (docs/study.md): conditions with mean ± sd,
/// contrasts with Δ, d, p and transfer efficiency, and a layer-range sweep with % transfer and
/// corrected p-values. Columns are aligned for a terminal; undefined numbers print as "n/a", and
/// the tests of a contrast whose two conditions scored every pair the same print "identical".
/// A transfer withheld for want of a natural gap (metrics/transfer_efficiency.hpp) prints as
/// "n/a (no natural gap)", with the gap and its CI in a line under the table.

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mechlens/experiments/summary.hpp"

namespace mechlens::experiments {

/// A left/right aligned text table.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header, std::string right_aligned = "")
      : header_(std::move(header)), right_(std::move(right_aligned)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string str() const {
    std::vector<size_t> w(header_.size(), 0);
    auto measure = [&](const std::vector<std::string>& r) {
      for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], utf8_width(r[i]));
    };
    measure(header_);
    for (const auto& r : rows_) measure(r);
    auto line = [&](const std::vector<std::string>& r) {
      std::string s;
      for (size_t i = 0; i < w.size(); ++i) {
        const std::string cell = i < r.size() ? r[i] : "";
        const std::string pad(w[i] - utf8_width(cell), ' ');
        const bool right = i < right_.size() && right_[i] == 'r';
        s += (i ? "  " : "") + (right ? pad + cell : cell + (i + 1 < w.size() ? pad : ""));
      }
      return s + "\n";
    };
    std::string out = line(header_);
    size_t total = 0;
    for (size_t x : w) total += x;
    out += std::string(total + 2 * (w.size() - 1), '-') + "\n";
    for (const auto& r : rows_) out += line(r);
    return out;
  }

 private:
  static size_t utf8_width(const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  }
  std::vector<std::string> header_;
  std::string right_;
  std::vector<std::vector<std::string>> rows_;
};

/// "1.2e-05", "0.0031", "0.42"; "n/a" when undefined.
inline std::string format_p(double p) {
  if (!std::isfinite(p)) return "n/a";
  if (p < 1e-4) return fmt::format("{:.1e}", p);
  if (p < 0.01) return fmt::format("{:.4f}", p);
  return fmt::format("{:.3f}", p);
}
inline std::string format_num(double v, int digits = 2, bool sign = false) {
  if (!std::isfinite(v)) return "n/a";
  if (std::abs(v) < 0.5 * std::pow(10.0, -digits)) v = 0.0;  // no "-0.00"
  return sign ? fmt::format("{:+.{}f}", v, digits) : fmt::format("{:.{}f}", v, digits);
}

namespace detail {
/// The "% transfer" cell: "63.5 %" (with `unit`), "n/a", or "n/a (no natural gap)" where the
/// natural gap's CI includes 0 and a share of it means nothing; "" where the contrast has no TE.
inline std::string transfer_cell(const ContrastStats& c, const std::string& unit) {
  if (!c.te) return "";
  if (c.te->no_natural_gap) return "n/a (no natural gap)";
  return c.te->value.defined ? format_num(100.0 * c.te->value.value, 1) + unit : "n/a";
}
/// One line under a table per distinct reason a transfer of `family` (nullptr: any) was withheld
/// ("" when none was).
inline std::string no_gap_notes(const Summary& s, const std::string* family = nullptr) {
  std::vector<std::string> seen;
  std::string out;
  for (const auto& c : s.contrasts) {
    if (!c.te || !c.te->no_natural_gap || (family && c.spec.family != *family)) continue;
    if (std::find(seen.begin(), seen.end(), c.te->value.reason) != seen.end()) continue;
    seen.push_back(c.te->value.reason);
    std::string why = c.te->value.reason;
    const std::string prefix = "no natural gap: ";
    if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());
    out += "n/a (no natural gap), " + c.spec.te_treatment + " vs " + c.spec.te_baseline + ": " + why + "\n";
  }
  return out;
}
}  // namespace detail

/// Conditions: label, n, mean ± sd. `labels` maps condition names to words (name when absent).
inline std::string condition_table(const Summary& s, const std::map<std::string, std::string>& labels = {}) {
  TextTable t({"condition", "n", "score (mean ± sd)", "95% CI of mean"}, "lrrr");
  for (const auto& c : s.conditions) {
    auto it = labels.find(c.name);
    t.add({it == labels.end() ? c.name : it->second, std::to_string(c.n),
           format_num(c.mean) + " ± " + format_num(c.sd),
           c.mean_ci.defined ? "[" + format_num(c.mean_ci.low) + ", " + format_num(c.mean_ci.high) + "]" : "n/a"});
  }
  return t.str();
}

/// Contrasts: Δ with CI, d (study form), d (pooled), paired t p, Wilcoxon p, transfer efficiency.
inline std::string contrast_table(const Summary& s) {
  TextTable t({"contrast", "n", "Δ", "95% CI of Δ", "d (study)", "d (pooled)", "p (paired t)", "p (Wilcoxon)", "transfer"},
              "lrrrrrrrr");
  for (const auto& c : s.contrasts) {
    const std::string te = detail::transfer_cell(c, " %");
    t.add({c.spec.label.empty() ? c.spec.name : c.spec.label, std::to_string(c.n_pairs), format_num(c.delta, 2, true),
           c.delta_ci.defined ? "[" + format_num(c.delta_ci.low, 2, true) + ", " + format_num(c.delta_ci.high, 2, true) + "]"
                              : "n/a",
           format_num(c.d_study.value), format_num(c.d_pooled.value),
           c.identical ? "identical" : format_p(c.t_test.p_value), c.identical ? "identical" : format_p(c.wilcoxon.p_value),
           te});
  }
  return t.str() + detail::no_gap_notes(s);
}

/// A layer-range sweep (contrasts of one family): % transfer with CI, d, p and corrected p.
inline std::string sweep_table(const Summary& s, const std::string& family, const std::string& first_column = "layers") {
  std::string correction = "corrected";
  for (const auto& c : s.contrasts)
    if (c.spec.family == family && c.correction != "none") correction = c.correction;
  TextTable t({first_column, "n", "% transfer", "95% CI", "d (study)", "p (paired t)", "p (" + correction + ")"}, "lrrrrrr");
  for (const auto& c : s.contrasts) {
    if (c.spec.family != family) continue;
    std::string te = c.te ? detail::transfer_cell(c, "") : "n/a", ci = "n/a";
    if (c.te && c.te->ci.defined) ci = "[" + format_num(100.0 * c.te->ci.low, 1) + ", " + format_num(100.0 * c.te->ci.high, 1) + "]";
    const double p = c.t_test.p_value, q = c.p_adjusted;
    t.add({c.spec.name, std::to_string(c.n_pairs), te, ci, format_num(c.d_study.value),
           c.identical ? "identical" : format_p(p),
           c.identical ? "identical" : std::isfinite(q) ? format_p(q) + (q < 0.05 ? " *" : "") : "n/a"});
  }
  return t.str() + detail::no_gap_notes(s, &family);
}

}  // namespace mechlens::experiments
