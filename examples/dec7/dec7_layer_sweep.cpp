// Phase 2: which layers' KV cache carries the mode? The baseline prompt gets the recursive
// prompt's cache at one layer range at a time (by default the study's ranges scaled to the
// model: quarters, halves, all), with Holm or Benjamini-Hochberg correction across ranges.

#include "common.hpp"
#include "phase2.hpp"

int main(int argc, char** argv) {
  dec7::Flags f;
  std::string correction = "holm";
  CLI::App app{"DEC7 phase 2: layer-range sweep of the KV cache transfer"};
  dec7::add_shared_flags(app, f, "dec7-runs/layer-sweep");
  app.get_option("--layers")->description("layer ranges to sweep, e.g. 0:8,8:16,16:32 (default: quarters, halves "
                                          "and all of the model's layers; for 32 layers the study's table)");
  app.add_option("--correction", correction, "multiple-comparison correction across ranges: holm, bh or none")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_layer_sweep");
    const auto n = s.config().n_layers();
    auto r = dec7::run_phase2(s, dec7::parse_layer_list(f.layers, n, dec7::study_ranges(n)), dec7::ex::parse_correction(correction));
    s.progress->finish();
    if (s.prints()) std::printf("%s\nwrote %s/phase2/\n", r.table.c_str(), f.out.c_str());
    return 0;
  });
}
