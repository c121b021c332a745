// Open step 1: does the geometry move with the cache? R_V (docs/design.md: PR of the last W rows of
// hook_v at a late layer over the same at an early layer) of
//   * each prompt alone (natural), and its Spearman correlation with the prompt's behaviour score;
//   * each generation — natural and KV-patched — read two ways, both labelled:
//       "patched pass": read from the generation's own run (the spliced cache present),
//       "clean pass":   the same tokens re-encoded through the unpatched model.
// Both readings cover the same W tokens: the end of prompt + generation (its last token excluded).

#include "common.hpp"
#include "mechlens/experiments/generation_rv.hpp"
#include "mechlens/experiments/rv.hpp"
#include "mechlens/metrics/correlation.hpp"

namespace ex = dec7::ex;
using dec7::Role;

namespace {

/// Records of `conditions` with score replaced by an R_V reading ("rv_clean_pass" or
/// "rv_patched_pass"); generations whose reading is undefined are left out.
std::vector<ex::GenerationRecord> with_rv_as_score(const std::vector<ex::GenerationRecord>& records,
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

}  // namespace

int main(int argc, char** argv) {
  dec7::Flags f;
  int64_t early = -1, late = -1, window = 16;
  bool centered = false;
  CLI::App app{"DEC7 R_V: natural prompts, and generations natural and KV-patched (patched pass vs clean pass)"};
  dec7::add_shared_flags(app, f, "dec7-runs/rv");
  app.get_option("--layers")->description("the layer range of the KV-patched conditions (default: all layers)");
  app.add_option("--early", early, "early R_V layer (default: 4 for 32 layers, n/8 otherwise)");
  app.add_option("--late", late, "late R_V layer (default: 24 for 32-layer Llama, 22 for Mistral-7B, 3n/4 otherwise)");
  app.add_option("--window", window, "W: token rows of the R_V window")->capture_default_str();
  app.add_flag("--centered", centered, "mean-centre the window first (labelled 'centred' in the outputs)");
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_rv");
    const auto& cfg = s.config();
    auto rv = mechlens::default_rv_options(cfg);
    if (early >= 0) rv.early = early;
    if (late >= 0) rv.late = late;
    rv.window = window;
    rv.centered = centered;
    const auto layers = dec7::parse_layer_list(f.layers, cfg.n_layers(), {{0, cfg.n_layers()}});
    MECHLENS_CHECK(layers.size() == 1, mechlens::ArgumentError, "--layers: give one range (got {})", layers.size());
    const std::string at = "@" + layers[0].str();
    const std::string tag = fmt::format("L{}/L{}, W={}{}", rv.late, rv.early, rv.window, centered ? ", centred" : "");

    // 1. Prompts alone: R_V of every recursive and baseline prompt (one forward each, batched).
    std::vector<std::vector<int64_t>> prompts;
    for (const auto& e : s.encoded) prompts.push_back(e.recursive);
    for (const auto& e : s.encoded) prompts.push_back(e.baseline);
    std::vector<double> prompt_rv(prompts.size(), NAN);
    std::vector<size_t> long_enough;
    std::vector<std::vector<int64_t>> measurable;
    for (size_t i = 0; i < prompts.size(); ++i)
      if (static_cast<int64_t>(prompts[i].size()) >= rv.window) long_enough.push_back(i), measurable.push_back(prompts[i]);
    for (size_t lo = 0; lo < measurable.size(); lo += static_cast<size_t>(f.study.batch_size)) {
      const size_t hi = std::min(measurable.size(), lo + static_cast<size_t>(f.study.batch_size));
      auto r = mechlens::measure_rv(*s.model, {measurable.begin() + lo, measurable.begin() + hi}, rv);
      for (size_t k = lo; k < hi; ++k) prompt_rv[long_enough[k]] = r.rv[static_cast<int64_t>(k - lo)].item<double>();
    }

    // 2. Generations with both readings.
    ex::KvTransferOptions kv;
    kv.layers = layers[0];
    kv.align = mechlens::parse_align(f.align);
    kv.rerotate = f.rerotate;
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
    dec7::run_conditions(s, study, runs, "R_V");

    const std::vector<ex::Contrast> contrasts = {
        {"natural gap", conditions[1], conditions[0], "recursive vs baseline (natural)", "", "", ""},
        {"baseline + recursive KV", conditions[2], conditions[0], "baseline + recursive KV vs baseline", "", conditions[0], conditions[1]},
        {"recursive + baseline KV", conditions[3], conditions[1], "recursive + baseline KV vs recursive", "", conditions[0], conditions[1]}};
    ex::SummaryOptions so;
    so.bootstrap.seed = f.study.sampling.seed;
    const auto& records = s.log().records();
    const auto behaviour = ex::summarize_records(records, conditions, contrasts, so);
    const auto clean = ex::summarize_records(with_rv_as_score(records, "rv_clean_pass"), conditions, contrasts, so);
    const auto patched = ex::summarize_records(with_rv_as_score(records, "rv_patched_pass"), conditions, contrasts, so);

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
    const std::string table = fmt::format(
        "R_V ({}) of prompts and generations ({} pairs; KV conditions at layers {})\n\n"
        "prompts alone: recursive {} (n={}), baseline {} (n={})\n"
        "Spearman rho, prompt R_V vs natural score: {} (p = {}, n = {})\n"
        "Spearman rho, clean-pass R_V vs score over all generations: {} (p = {}, n = {})\n\n{}\n"
        "behaviour score contrasts:\n{}\nR_V contrasts, clean pass (re-encoded, no patch):\n{}\n"
        "R_V contrasts, patched pass (read from the run):\n{}",
        tag, s.pairs.size(), layers[0].str(), mean_sd(rec_rv), rec_rv.size(), mean_sd(base_rv), base_rv.size(),
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
    nlohmann::json meta = {{"rv_options", {{"early", rv.early}, {"late", rv.late}, {"window", rv.window}, {"centered", centered}}},
                           {"layers", layers[0].str()},
                           {"prompt_rv", {{"recursive", std::vector<double>(prompt_rv.begin(), prompt_rv.begin() + static_cast<long>(s.pairs.size()))},
                                          {"baseline", std::vector<double>(prompt_rv.begin() + static_cast<long>(s.pairs.size()), prompt_rv.end())}}},
                           {"spearman_prompt_rv_vs_score", ex::detail::test_json(rho_prompt)},
                           {"spearman_clean_rv_vs_score", ex::detail::test_json(rho_gen)},
                           {"rv_clean_pass", ex::to_json(clean)},
                           {"rv_patched_pass", ex::to_json(patched)}};
    dec7::write_phase(s, "rv", behaviour, table, "R_V by condition (" + tag + ")",
                      {rv_panel(clean, "R_V, clean pass (prompt + generation re-encoded without the patch)"),
                       rv_panel(patched, "R_V, patched pass (read from the generation's own run)"),
                       dec7::condition_panel(behaviour, "Behaviour score")},
                      meta);
    s.progress->finish();
    std::printf("%s\nwrote %s/rv/\n", table.c_str(), f.out.c_str());
    return 0;
  });
}
