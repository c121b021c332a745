#pragma once
// Open step 1: does the geometry move with the cache? R_V (docs/design.md: PR of the last W rows of
// hook_v at a late layer over the same at an early layer) of
//   * each prompt alone (natural), and its Spearman correlation with the prompt's behaviour score;
//   * each generation — natural and KV-patched — read two ways, both labelled:
//       "patched pass": read from the generation's own run (the spliced cache present),
//       "clean pass":   the same tokens re-encoded through the unpatched model.
// Both readings cover the same W tokens: the end of prompt + generation (its last token excluded).
// The R_V forwards (prompts alone, the clean pass) run --batch-size prompts at a time and stop after
// the later R_V layer; the generations decode like every other condition's, with no hook attached
// (experiments/generation_rv.hpp).

#include <algorithm>

#include "common.hpp"
#include "mechlens/experiments/generation_rv.hpp"
#include "mechlens/experiments/rv.hpp"
#include "mechlens/metrics/correlation.hpp"

namespace dec7 {

/// The R_V options of the flags: the model's defaults (default_rv_options) where a layer is
/// negative (not given).
inline mechlens::RvOptions rv_options(const mechlens::ModelConfig& cfg, int64_t early, int64_t late, int64_t window,
                                      bool centered) {
  auto rv = mechlens::default_rv_options(cfg);
  if (early >= 0) rv.early = early;
  if (late >= 0) rv.late = late;
  rv.window = window;
  rv.centered = centered;
  return rv;
}

namespace detail {

/// Records with score replaced by an R_V reading ("rv_clean_pass" or "rv_patched_pass");
/// generations whose reading is undefined are left out.
inline std::vector<ex::GenerationRecord> with_rv_as_score(const std::vector<ex::GenerationRecord>& records,
                                                          const std::string& reading) {
  std::vector<ex::GenerationRecord> out;
  for (const auto& r : records) {
    if (!r.extra.contains(reading) || !r.extra[reading]["rv"].is_number()) continue;
    ex::GenerationRecord g = r;
    g.score = r.extra[reading]["rv"].get<double>();
    g.scorer = "R_V (" + reading + ")";
    out.push_back(std::move(g));
  }
  return out;
}

/// R_V of each prompt (recursive prompts first, then baseline), NaN for prompts shorter than
/// the window: one forward per batch of prompts, stopping after the later R_V layer.
inline std::vector<double> prompt_rv(Setup& s, const mechlens::RvOptions& rv) {
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& e : s.encoded) prompts.push_back(e.recursive);
  for (const auto& e : s.encoded) prompts.push_back(e.baseline);
  std::vector<double> out(prompts.size(), NAN);
  std::vector<size_t> long_enough;
  std::vector<std::vector<int64_t>> measurable;
  for (size_t i = 0; i < prompts.size(); ++i)
    if (static_cast<int64_t>(prompts[i].size()) >= rv.window) long_enough.push_back(i), measurable.push_back(prompts[i]);
  const size_t batch = static_cast<size_t>(s.flags.study.batch_size);
  for (size_t lo = 0; lo < measurable.size(); lo += batch) {
    const size_t hi = std::min(measurable.size(), lo + batch);
    const auto r = mechlens::measure_rv(*s.model, {measurable.begin() + lo, measurable.begin() + hi}, rv);
    const at::Tensor v = r.rv.contiguous();  // float64, CPU
    for (size_t k = lo; k < hi; ++k) out[long_enough[k]] = v.data_ptr<double>()[k - lo];
  }
  return out;
}

}  // namespace detail

/// R_V of the prompts alone, and of generations natural and with the other prompt's KV cache at
/// `layers`, each read in the patched and the clean pass; writes <out>/rv/.
inline PhaseResult run_rv(Setup& s, const mechlens::RvOptions& rv, LayerRange layers) {
  const auto& cfg = s.config();
  const std::string at = "@" + layers.str();
  const std::string tag = fmt::format("L{}/L{}, W={}{}", rv.late, rv.early, rv.window, rv.centered ? ", centred" : "");

  // 1. Prompts alone.
  const std::vector<double> prompt_rv = detail::prompt_rv(s, rv);

  // 2. Generations with both readings.
  ex::KvTransferOptions kv;
  kv.layers = layers;
  kv.align = mechlens::parse_align(s.flags.align);
  kv.rerotate = s.flags.rerotate;
  ex::KvTransferOptions from_recursive = kv, from_baseline = kv;
  from_recursive.source = Role::Recursive;
  from_baseline.source = Role::Baseline;
  const std::vector<std::string> conditions = {"rv:baseline", "rv:recursive", "rv:baseline+recursive_kv" + at,
                                               "rv:recursive+baseline_kv" + at};
  std::vector<ex::Condition> runs = {
      ex::with_rv_probe(ex::natural(Role::Baseline, conditions[0]), rv),
      ex::with_rv_probe(ex::natural(Role::Recursive, conditions[1]), rv),
      ex::with_rv_probe(ex::kv_transfer(conditions[2], Role::Baseline, from_recursive, cfg), rv),
      ex::with_rv_probe(ex::kv_transfer(conditions[3], Role::Recursive, from_baseline, cfg), rv)};
  auto study = s.study();
  run_conditions(s, study, runs, "R_V");

  const std::vector<ex::Contrast> contrasts = {
      {"natural gap", conditions[1], conditions[0], "recursive vs baseline (natural)", "", "", ""},
      {"baseline + recursive KV", conditions[2], conditions[0], "baseline + recursive KV vs baseline", "", conditions[0], conditions[1]},
      {"recursive + baseline KV", conditions[3], conditions[1], "recursive + baseline KV vs recursive", "", conditions[0], conditions[1]}};
  ex::SummaryOptions so;
  so.bootstrap.seed = s.flags.study.sampling.seed;
  const auto& records = s.log().records();
  PhaseResult result;
  result.summary = ex::summarize_records(records, conditions, contrasts, so);
  const auto& behaviour = result.summary;
  const auto clean = ex::summarize_records(detail::with_rv_as_score(records, "rv_clean_pass"), conditions, contrasts, so);
  const auto patched = ex::summarize_records(detail::with_rv_as_score(records, "rv_patched_pass"), conditions, contrasts, so);

  // Spearman: prompt R_V vs the natural generation's score (both registers pooled), and the
  // clean-pass R_V of every generation vs its score.
  std::vector<double> x, y, gx, gy;
  for (size_t i = 0; i < s.pairs.size(); ++i)
    for (Role role : {Role::Recursive, Role::Baseline}) {
      const double v = prompt_rv[role == Role::Recursive ? i : s.pairs.size() + i];
      const auto r = s.log().find(ex::GenerationRecord::record_id(role == Role::Recursive ? conditions[1] : conditions[0], s.pairs[i].id));
      if (r && std::isfinite(v)) x.push_back(v), y.push_back(r->score);
    }
  for (const auto& r : records) {
    if (std::find(conditions.begin(), conditions.end(), r.condition) == conditions.end()) continue;
    const auto& c = r.extra.value("rv_clean_pass", nlohmann::json::object());
    if (c.contains("rv") && c["rv"].is_number()) gx.push_back(c["rv"].get<double>()), gy.push_back(r.score);
  }
  auto rho = [](const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() >= 3 ? mechlens::metrics::spearman(ex::detail::sample(a), ex::detail::sample(b)) : mechlens::metrics::TestResult{};
  };
  const auto rho_prompt = rho(x, y), rho_gen = rho(gx, gy);

  ex::TextTable t({"condition", "n", "score", "R_V clean pass", "R_V patched pass"}, "lrrrr");
  for (size_t k = 0; k < conditions.size(); ++k) {
    auto ms = [](const ex::ConditionStats& c) { return ex::format_num(c.mean, 3) + " ± " + ex::format_num(c.sd, 3); };
    t.add({conditions[k], std::to_string(behaviour.conditions[k].n),
           ex::format_num(behaviour.conditions[k].mean) + " ± " + ex::format_num(behaviour.conditions[k].sd),
           ms(clean.conditions[k]), ms(patched.conditions[k])});
  }
  std::vector<double> rec_rv, base_rv;
  for (size_t i = 0; i < s.pairs.size(); ++i) {
    if (std::isfinite(prompt_rv[i])) rec_rv.push_back(prompt_rv[i]);
    if (std::isfinite(prompt_rv[s.pairs.size() + i])) base_rv.push_back(prompt_rv[s.pairs.size() + i]);
  }
  auto mean_sd = [](const std::vector<double>& v) {
    return v.size() >= 2 ? ex::format_num(mechlens::metrics::mean(ex::detail::sample(v)), 3) + " ± " +
                               ex::format_num(mechlens::metrics::sd(ex::detail::sample(v)), 3)
                         : std::string("n/a");
  };
  result.table = fmt::format(
      "R_V ({}) of prompts and generations ({} pairs; KV conditions at layers {})\n\n"
      "prompts alone: recursive {} (n={}), baseline {} (n={})\n"
      "Spearman rho, prompt R_V vs natural score: {} (p = {}, n = {})\n"
      "Spearman rho, clean-pass R_V vs score over all generations: {} (p = {}, n = {})\n\n{}\n"
      "behaviour score contrasts:\n{}\nR_V contrasts, clean pass (re-encoded, no patch):\n{}\n"
      "R_V contrasts, patched pass (read from the run):\n{}",
      tag, s.pairs.size(), layers.str(), mean_sd(rec_rv), rec_rv.size(), mean_sd(base_rv), base_rv.size(),
      ex::format_num(rho_prompt.statistic, 3), ex::format_p(rho_prompt.p_value), x.size(),
      ex::format_num(rho_gen.statistic, 3), ex::format_p(rho_gen.p_value), gx.size(), t.str(),
      ex::contrast_table(behaviour), ex::contrast_table(clean), ex::contrast_table(patched));

  auto rv_panel = [&](const ex::Summary& sm, const std::string& title) {
    ex::BarPanel p;
    p.title = title;
    p.y_label = "R_V (mean, 95% CI)";
    p.reference_lines = {1.0};
    for (const auto& c : sm.conditions) p.bars.push_back({c.name.substr(3), c.mean, c.mean_ci.low, c.mean_ci.high, ""});
    return p;
  };
  const auto n = static_cast<long>(s.pairs.size());
  nlohmann::json meta = {{"rv_options", {{"early", rv.early}, {"late", rv.late}, {"window", rv.window}, {"centered", rv.centered}}},
                         {"layers", layers.str()},
                         {"prompt_rv", {{"recursive", std::vector<double>(prompt_rv.begin(), prompt_rv.begin() + n)},
                                        {"baseline", std::vector<double>(prompt_rv.begin() + n, prompt_rv.end())}}},
                         {"spearman_prompt_rv_vs_score", ex::detail::test_json(rho_prompt)},
                         {"spearman_clean_rv_vs_score", ex::detail::test_json(rho_gen)},
                         {"rv_clean_pass", ex::to_json(clean)},
                         {"rv_patched_pass", ex::to_json(patched)}};
  write_phase(s, "rv", behaviour, result.table, "R_V by condition (" + tag + ")",
              {rv_panel(clean, "R_V, clean pass (prompt + generation re-encoded without the patch)"),
               rv_panel(patched, "R_V, patched pass (read from the generation's own run)"),
               condition_panel(behaviour, "Behaviour score")},
              meta);
  return result;
}

}  // namespace dec7
