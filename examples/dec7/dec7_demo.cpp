// The README's first command: phases 1 and 2 of the DEC7 study on the embedded toy model (a
// positive control whose answer is known: docs/toy-model.md), printing both tables. The same
// flags run it on a real checkpoint (--model).

#include "common.hpp"
#include "phase1.hpp"
#include "phase2.hpp"

int main(int argc, char** argv) {
  dec7::Flags f;
  std::string correction = "holm";
  CLI::App app{"DEC7 demo: phase 1 (KV transfer with controls) and phase 2 (layer sweep), one run folder"};
  dec7::add_shared_flags(app, f, "dec7-runs/demo");
  app.get_option("--layers")->description("phase 2's layer ranges (default: quarters, halves and all layers); phase 1 "
                                          "transfers all layers");
  app.add_option("--correction", correction, "phase 2's correction across ranges: holm, bh or none")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // Run twice without --out (the README's first command), and the second run goes to a new
  // folder (demo-2, demo-3, ...) instead of refusing the first one's records.
  if (app.count("--out") == 0 && !f.resume) {
    const std::string base = f.out;
    for (int k = 2; dec7::fs::exists(f.out + "/generations.jsonl"); ++k) f.out = base + "-" + std::to_string(k);
  }
  return dec7::guarded([&] {
    const auto t0 = std::chrono::steady_clock::now();
    auto s = dec7::setup(f, "dec7_demo");
    const auto n = s.config().n_layers();
    std::printf("model %s (%lld layers), %zu pairs from %s, %lld new tokens at temperature %g, seed %llu\n\n",
                s.model_dir.c_str(), static_cast<long long>(n), s.pairs.size(), s.pairs_path.c_str(),
                static_cast<long long>(f.study.max_new_tokens), f.study.sampling.temperature, static_cast<unsigned long long>(f.study.sampling.seed));
    auto p1 = dec7::run_phase1(s, {0, n});
    auto p2 = dec7::run_phase2(s, dec7::parse_layer_list(f.layers, n, dec7::study_ranges(n)),
                               dec7::ex::parse_correction(correction));
    s.progress->finish();
    std::printf("%s\n%s\n", p1.table.c_str(), p2.table.c_str());

    // The positive control's verdict, from the numbers above.
    const auto* suff = p1.summary.contrast("sufficiency");
    const auto* ctrl = p1.summary.contrast("shuffled source");
    auto verdict = [](const dec7::ex::ContrastStats* c) {
      const double p = c ? c->t_test.p_value : NAN;
      return std::isfinite(p) ? fmt::format("Δ = {:+.2f}, p = {}{}", c->delta, dec7::ex::format_p(p),
                                            p < 0.05 ? " (significant)" : " (not significant)")
                              : std::string("undefined");
    };
    std::printf("transfer (baseline + recursive KV): %s\nshuffled-source control:            %s\n",
                verdict(suff).c_str(), verdict(ctrl).c_str());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("\n%zu generations recorded in %s/generations.jsonl; tables, summary.json, summary.csv and "
                "figure.svg in %s/phase1/ and %s/phase2/ (%.0f s)\n",
                s.log().records().size(), f.out.c_str(), f.out.c_str(), f.out.c_str(), secs);
    return 0;
  });
}
