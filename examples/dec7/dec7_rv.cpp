// Open step 1: does the geometry move with the cache? R_V of every prompt alone, and of
// generations natural and KV-patched, each read in the patched pass (from the run) and the clean
// pass (re-encoded without the patch) (rv_phase.hpp). Writes <out>/generations.jsonl and
// <out>/rv/; prints the table.

#include "common.hpp"
#include "rv_phase.hpp"

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
    const auto layers = dec7::parse_layer_list(f.layers, cfg.n_layers(), {{0, cfg.n_layers()}});
    MECHLENS_CHECK(layers.size() == 1, mechlens::ArgumentError, "--layers: give one range (got {})", layers.size());
    auto r = dec7::run_rv(s, dec7::rv_options(cfg, early, late, window, centered), layers[0]);
    s.progress->finish();
    if (s.prints()) std::printf("%s\nwrote %s/rv/\n", r.table.c_str(), f.out.c_str());
    return 0;
  });
}
