// Phase 1: does the recursive prompt's KV cache carry the mode? Baseline and recursive prompts
// natural, each with the other's cache, and two shuffled controls. Writes <out>/generations.jsonl
// and <out>/phase1/{summary.json,summary.csv,table.txt,figure.svg}; prints the study's table.
//
//   dec7_kv_transfer                                   # the embedded toy model, its pairs
//   dec7_kv_transfer --model /models/Meta-Llama-3-8B-Instruct --device cuda --dtype bfloat16

#include "common.hpp"
#include "phase1.hpp"

int main(int argc, char** argv) {
  dec7::Flags f;
  CLI::App app{"DEC7 phase 1: KV cache transfer between recursive and baseline prompts, with controls"};
  dec7::add_shared_flags(app, f, "dec7-runs/kv-transfer");
  app.get_option("--layers")->description("the layer range whose KV cache is transferred (default: all layers)");
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_kv_transfer");
    const auto layers = dec7::parse_layer_list(f.layers, s.config().n_layers(), {{0, s.config().n_layers()}});
    MECHLENS_CHECK(layers.size() == 1, mechlens::ArgumentError, "--layers: phase 1 takes one range (got {})", layers.size());
    auto r = dec7::run_phase1(s, layers[0]);
    s.progress->finish();
    if (s.prints()) std::printf("%s\nwrote %s/phase1/\n", r.table.c_str(), f.out.c_str());
    return 0;
  });
}
