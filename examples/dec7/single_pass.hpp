#pragma once
// Phase 1's "what did not transfer the mode": single forward-pass patches. At the chosen layer the
// baseline prompt's V (or Q, or Q+K+V, or the residual stream after the layer) at every prompt
// token is replaced by the recursive prompt's; then it decodes on the cache that patched pass
// wrote. The residual stream is also patched at all layers at once. Scope: the whole prompt (the
// prefill and the pending last token, as the study's hooks patched it); generated tokens run
// unpatched.

#include "common.hpp"
#include "mechlens/experiments/rv.hpp"

namespace dec7 {

/// The study's patch layer: the late R_V layer (24 for 32-layer Llama, 3/4 of the depth otherwise).
inline std::vector<LayerRange> default_patch_layers(const mechlens::ModelConfig& cfg) {
  return {LayerRange::single(mechlens::default_rv_options(cfg).late)};
}

/// V, Q, Q+K+V and the residual stream at each single layer of `layers`, the residual stream at
/// every layer, and the whole KV cache as reference; `correction` across the patches.
inline PhaseResult run_single_pass(Setup& s, const std::vector<LayerRange>& layers, ex::Correction correction) {
  const auto& cfg = s.config();
  const auto align = mechlens::parse_align(s.flags.align);

  std::vector<ex::Condition> runs = {ex::natural(Role::Baseline, "baseline"), ex::natural(Role::Recursive, "recursive")};
  std::vector<std::string> conditions = {"baseline", "recursive"};
  std::vector<ex::Contrast> contrasts;
  auto add = [&](ex::PatchSite site, LayerRange at, const std::string& label) {
    const std::string name = std::string("baseline+recursive_") + ex::patch_site_name(site) + "@" + at.str();
    runs.push_back(ex::single_pass_patch(name, Role::Baseline, Role::Recursive, site, at, cfg, align));
    conditions.push_back(name);
    contrasts.push_back({name, name, "baseline", label, "single-pass", "baseline", "recursive"});
  };
  for (const auto& r : layers) {
    MECHLENS_CHECK(r.size() == 1, mechlens::ArgumentError, "--layers: give single layers here (got {})", r.str());
    const std::string L = std::to_string(r.begin);
    add(ex::PatchSite::V, r, "V at layer " + L);
    add(ex::PatchSite::Q, r, "Q at layer " + L);
    add(ex::PatchSite::QKV, r, "Q+K+V at layer " + L);
    add(ex::PatchSite::Resid, r, "residual stream after layer " + L);
  }
  add(ex::PatchSite::Resid, {0, cfg.n_layers()}, "residual stream after every layer");
  // The reference point: the whole KV cache (phase 1's sufficiency condition).
  ex::KvTransferOptions kv;
  kv.align = align;
  kv.rerotate = s.flags.rerotate;
  const std::string kv_name = "baseline+recursive_kv@0:" + std::to_string(cfg.n_layers());
  runs.push_back(ex::kv_transfer(kv_name, Role::Baseline, kv, cfg));
  conditions.push_back(kv_name);
  contrasts.push_back({kv_name, kv_name, "baseline", "whole KV cache (reference)", "", "baseline", "recursive"});

  auto study = s.study();
  run_conditions(s, study, runs, "single-pass");
  ex::SummaryOptions so;
  so.bootstrap.seed = s.flags.study.sampling.seed;
  so.correction = correction;
  PhaseResult r;
  r.summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);
  r.table = fmt::format(
      "Single forward-pass patches into the baseline prompt from the recursive prompt ({} pairs; scope: the "
      "whole prompt, its last token included; generated tokens unpatched)\n\n{}\n{}",
      s.pairs.size(), ex::condition_table(r.summary), ex::contrast_table(r.summary));
  write_phase(s, "single_pass", r.summary, r.table, "Single forward-pass patches: % transfer",
              {transfer_panel(r.summary, "", "% transfer by patch (95% BCa CI)")});
  return r;
}

}  // namespace dec7
