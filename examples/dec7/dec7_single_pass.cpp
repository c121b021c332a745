// Phase 1's "what did not transfer the mode": single forward-pass patches. The baseline prompt is
// prefilled while, at the chosen layer, its V (or Q, or Q+K+V, or the residual stream after the
// layer) at every prefilled token is replaced by the recursive prompt's; then it decodes on the
// cache that patched pass wrote. The residual stream is also patched at all layers at once.
// The patch acts in the prefill only (the study's "single forward pass"); the pending last token
// and the generated tokens run unpatched.

#include "common.hpp"
#include "mechlens/experiments/rv.hpp"

namespace ex = dec7::ex;
using dec7::Role;
using mechlens::LayerRange;

int main(int argc, char** argv) {
  dec7::Flags f;
  std::string correction = "holm";
  CLI::App app{"DEC7 single-pass patches: V, Q, Q+K+V and residual stream at one layer, residual at all layers"};
  dec7::add_shared_flags(app, f, "dec7-runs/single-pass");
  app.get_option("--layers")->description("the layer(s) of the one-layer patches, e.g. 24 or 16,24 (default: the "
                                          "late R_V layer, 24 for 32-layer Llama, 3/4 of the depth otherwise)");
  app.add_option("--correction", correction, "correction across the patches: holm, bh or none")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_single_pass");
    const auto& cfg = s.config();
    const int64_t late = mechlens::default_rv_options(cfg).late;
    const auto layers = dec7::parse_layer_list(f.layers, cfg.n_layers(), {LayerRange::single(late)});
    const auto align = mechlens::parse_align(f.align);

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
    kv.rerotate = f.rerotate;
    const std::string kv_name = "baseline+recursive_kv@0:" + std::to_string(cfg.n_layers());
    runs.push_back(ex::kv_transfer(kv_name, Role::Baseline, kv, cfg));
    conditions.push_back(kv_name);
    contrasts.push_back({kv_name, kv_name, "baseline", "whole KV cache (reference)", "", "baseline", "recursive"});

    auto study = s.study();
    dec7::run_conditions(s, study, runs, "single-pass");
    ex::SummaryOptions so;
    so.bootstrap.seed = f.study.sampling.seed;
    so.correction = ex::parse_correction(correction);
    const auto summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);
    const std::string table = fmt::format(
        "Single forward-pass patches into the baseline prompt from the recursive prompt ({} pairs; the patch acts "
        "on the prefill only)\n\n{}\n{}",
        s.pairs.size(), ex::condition_table(summary), ex::contrast_table(summary));
    dec7::write_phase(s, "single_pass", summary, table, "Single forward-pass patches: % transfer",
                      {dec7::transfer_panel(summary, "", "% transfer by patch (95% BCa CI)")});
    s.progress->finish();
    std::printf("%s\nwrote %s/single_pass/\n", table.c_str(), f.out.c_str());
    return 0;
  });
}
