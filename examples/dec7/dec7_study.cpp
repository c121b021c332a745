// The whole DEC7 study in one process, with one model load, into one run folder: phase 1 (KV
// transfer with controls), phase 2 (layer sweep), the single-pass patches, R_V of prompts and of
// natural and KV-patched generations, the token-position windows, and the blind-rating export; on
// request (--phases ...,attribution) the KV-cache attribution of dec7_attribution.
// Each part is the code of its own program (dec7_kv_transfer, dec7_layer_sweep,
// dec7_single_pass, dec7_rv, dec7_positions, dec7_blind_rating export), so its records and
// outputs are theirs; conditions two parts share (the naturals, the all-layer transfer) run once.
//
//   dec7_study                                             # the embedded toy model, every part
//   dec7_study --model /models/Meta-Llama-3-8B-Instruct --device cuda --dtype bfloat16 --out runs/llama
//   dec7_study --out runs/llama --resume --phases rv,positions   # more parts into the same folder

#include <algorithm>
#include <chrono>

#include "attribution.hpp"
#include "blind_rating.hpp"
#include "common.hpp"
#include "phase1.hpp"
#include "phase2.hpp"
#include "positions.hpp"
#include "rv_phase.hpp"
#include "single_pass.hpp"

namespace {

/// The parts, in the order they run.
const std::vector<std::pair<std::string, std::vector<std::string>>> kParts = {
    {"1", {"phase1"}}, {"2", {"phase2"}}, {"single-pass", {"single_pass", "sp"}}, {"rv", {}},
    {"positions", {}}, {"attribution", {"attr"}}, {"blind", {}}};

/// "--phases 1,2,rv" -> the chosen parts' canonical names.
std::set<std::string> parse_phases(const std::string& text) {
  std::set<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    bool known = false;
    for (const auto& [name, aliases] : kParts)
      if (item == name || std::find(aliases.begin(), aliases.end(), item) != aliases.end()) {
        out.insert(name);
        known = true;
      }
    MECHLENS_CHECK(known, mechlens::ArgumentError,
                   "--phases: '{}' is no part of the study (expected a comma-separated list of 1, 2, single-pass, rv, "
                   "positions, attribution, blind)",
                   item);
  }
  MECHLENS_CHECK(!out.empty(), mechlens::ArgumentError, "--phases '{}' names no part of the study", text);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  dec7::Flags f;
  std::string phases = "1,2,single-pass,rv,positions,blind", sweep, patch_layers, correction = "holm";
  int64_t early = -1, late = -1, rv_window = 16;
  bool centered = false;
  dec7::PositionOptions positions;
  dec7::AttributionOptions attribution;
  uint64_t blind_seed = 0;
  CLI::App app{"DEC7 study: every part (phases 1 and 2, single-pass patches, R_V, token positions, blind-rating "
               "export) with one model load, into one run folder"};
  dec7::add_shared_flags(app, f, "dec7-runs/study");
  app.add_option("--phases", phases, "the parts to run, comma-separated: 1, 2, single-pass, rv, positions, "
                                     "attribution, blind (they run in this order; attribution, the KV-cache "
                                     "attribution of dec7_attribution, only when named)")->capture_default_str();
  app.get_option("--layers")->description("the layer range whose KV cache is transferred in phase 1, R_V's KV-patched "
                                          "runs and the token positions (default: all layers)");
  app.add_option("--sweep-layers", sweep, "phase 2's layer ranges, e.g. 0:8,8:16,16:32 (default: quarters, halves and "
                                          "all of the model's layers)");
  app.add_option("--patch-layers", patch_layers, "the single-pass patches' layer(s), e.g. 24 or 16,24 (default: the "
                                                 "late R_V layer)");
  app.add_option("--correction", correction, "correction across phase 2's ranges, the patches and the position "
                                             "windows: holm, bh or none")->capture_default_str();
  app.add_option("--early", early, "early R_V layer (default: 4 for 32 layers, n/8 otherwise)");
  app.add_option("--late", late, "late R_V layer (default: 24 for 32-layer Llama, 22 for Mistral-7B, 3n/4 otherwise)");
  app.add_option("--rv-window", rv_window, "W: token rows of the R_V window")->capture_default_str();
  app.add_flag("--centered", centered, "mean-centre the R_V window first (labelled 'centred' in the outputs)");
  app.add_option("--slot-window", positions.window, "slots per token-position window")->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--per-position", positions.per_position, "also transfer every single slot of the last --max-positions");
  app.add_option("--max-positions", positions.max_positions, "how far from the end --per-position goes")->capture_default_str();
  app.add_option("--continuation", attribution.continuation,
                 "attribution: greedy tokens of the recursive prompt whose log-probability is the metric")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--top", attribution.top, "attribution: layer ranges and slot windows spliced for real")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--attr-window", attribution.window, "attribution: slots per window")->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--blind-seed", blind_seed, "seed of the blind-rating sheet's shuffle")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    const auto t0 = std::chrono::steady_clock::now();
    const auto chosen = parse_phases(phases);  // before the model loads
    const auto corr = dec7::ex::parse_correction(correction);
    auto s = dec7::setup(f, "dec7_study");
    const auto& cfg = s.config();
    const auto n = cfg.n_layers();
    const auto layers = dec7::parse_layer_list(f.layers, n, {{0, n}});
    MECHLENS_CHECK(layers.size() == 1, mechlens::ArgumentError, "--layers: give one range (got {})", layers.size());
    // Every flag is checked before the first part runs.
    const auto ranges = dec7::parse_layer_list(sweep, n, dec7::study_ranges(n));
    const auto patches = dec7::parse_layer_list(patch_layers, n, dec7::default_patch_layers(cfg));
    const auto rv = dec7::rv_options(cfg, early, late, rv_window, centered);
    if (s.prints())
      std::printf("model %s (%lld layers), %zu pairs from %s; parts: %s\n\n", s.model_dir.c_str(),
                  static_cast<long long>(n), s.pairs.size(), s.pairs_path.c_str(), phases.c_str());

    std::vector<std::string> wrote;
    std::string timings;  // "phase1 2.1 s, ..."
    auto since = [](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    };
    auto part_start = std::chrono::steady_clock::now();
    timings = fmt::format("setup (model, tokenizer, pairs) {:.1f} s", since(t0));
    auto show = [&](const std::string& folder, const dec7::PhaseResult& r) {
      if (s.prints()) std::printf("%s\n", r.table.c_str());
      std::fflush(stdout);
      wrote.push_back(folder);
      timings += fmt::format(", {} {:.1f} s", folder, since(part_start));
      part_start = std::chrono::steady_clock::now();
    };
    if (chosen.count("1")) show("phase1", dec7::run_phase1(s, layers[0]));
    if (chosen.count("2")) show("phase2", dec7::run_phase2(s, ranges, corr));
    if (chosen.count("single-pass")) show("single_pass", dec7::run_single_pass(s, patches, corr));
    if (chosen.count("rv")) show("rv", dec7::run_rv(s, rv, layers[0]));
    if (chosen.count("positions")) show("positions", dec7::run_positions(s, layers[0], positions, corr));
    if (chosen.count("attribution")) show("attribution", dec7::run_attribution(s, attribution, corr));
    s.progress->finish();
    if (chosen.count("blind") && s.prints()) {  // rank 0 exports, from the merged records
      if (s.log().records().empty()) {
        std::printf("blind rating: no generations in %s to export\n", f.out.c_str());
      } else if (const size_t items = dec7::run_blind_export(s, blind_seed); items > 0) {
        std::printf("blind rating: %zu generations in %s/blind/sheet.csv (key.csv kept apart)\n", items, f.out.c_str());
        wrote.push_back("blind");
      }
    }
    std::string folders;
    for (const auto& w : wrote) folders += (folders.empty() ? "" : ", ") + w + "/";
    const double secs = since(t0);
    if (s.prints())
      std::printf("\n%zu generations recorded in %s/generations.jsonl; wrote %s in %s (%.1f s: %s)\n",
                  s.log().records().size(), f.out.c_str(), folders.c_str(), f.out.c_str(), secs, timings.c_str());
    return 0;
  });
}
