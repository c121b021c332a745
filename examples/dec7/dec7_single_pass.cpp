// Phase 1's "what did not transfer the mode": single forward-pass patches of V, Q, Q+K+V and the
// residual stream into the baseline prompt from the recursive prompt (single_pass.hpp). Writes
// <out>/generations.jsonl and <out>/single_pass/; prints the table.

#include "common.hpp"
#include "single_pass.hpp"

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
    auto r = dec7::run_single_pass(s, dec7::parse_layer_list(f.layers, cfg.n_layers(), dec7::default_patch_layers(cfg)),
                                   dec7::ex::parse_correction(correction));
    s.progress->finish();
    if (s.prints()) std::printf("%s\nwrote %s/single_pass/\n", r.table.c_str(), f.out.c_str());
    return 0;
  });
}
