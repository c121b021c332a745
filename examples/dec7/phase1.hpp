#pragma once
// Phase 1 of the study: whole-KV-cache transfer with controls (docs/study.md).
//
//   baseline / recursive            each prompt, natural
//   baseline + recursive KV         sufficiency: does the recursive prompt's cache carry the mode?
//   recursive + baseline KV         necessity: does replacing it block the mode?
//   baseline + shuffled baseline KV the shuffled-source control (baseline into baseline): a cache
//                                   from another pair's baseline prompt; must show no transfer
//   baseline + shuffled recursive KV a recursive cache from another pair: is the transfer
//                                   specific to the matched pair, or generic?
//
// Every KV condition splices the source prompt's prefilled slots into the target's at the chosen
// layers (default all), row by row, right-aligned on each row's own tokens (--align).

#include "common.hpp"

namespace dec7 {

inline std::map<std::string, std::string> phase1_labels(const std::string& at) {
  return {{"baseline", "baseline prompt, natural"},
          {"recursive", "recursive prompt, natural"},
          {"baseline+recursive_kv" + at, "baseline prompt + recursive prompt's KV cache"},
          {"recursive+baseline_kv" + at, "recursive prompt + baseline prompt's KV cache"},
          {"baseline+shuffled_baseline_kv" + at, "baseline + another pair's baseline KV (shuffled source)"},
          {"baseline+shuffled_recursive_kv" + at, "baseline + another pair's recursive KV (shuffled pairing)"}};
}

inline PhaseResult run_phase1(Setup& s, LayerRange layers) {
  const auto& cfg = s.config();
  const std::string at = "@" + layers.str();
  auto study = s.study();

  ex::KvTransferOptions same;
  same.layers = layers;
  same.align = mechlens::parse_align(s.flags.align);
  same.rerotate = s.flags.rerotate;
  ex::KvTransferOptions from_recursive = same, from_baseline = same;
  from_recursive.source = Role::Recursive;
  from_baseline.source = Role::Baseline;
  const auto shuffle = ex::shuffled_sources(s.pairs.size(), s.flags.study.sampling.seed);
  ex::KvTransferOptions shuffled_baseline = from_baseline, shuffled_recursive = from_recursive;
  shuffled_baseline.source_of = shuffled_recursive.source_of = shuffle;
  shuffled_baseline.source_label = shuffled_recursive.source_label = "another pair, shuffled with --seed";

  run_conditions(s, study,
                 {ex::natural(Role::Baseline, "baseline"), ex::natural(Role::Recursive, "recursive"),
                  ex::kv_transfer("baseline+recursive_kv" + at, Role::Baseline, from_recursive, cfg),
                  ex::kv_transfer("recursive+baseline_kv" + at, Role::Recursive, from_baseline, cfg),
                  ex::kv_transfer("baseline+shuffled_baseline_kv" + at, Role::Baseline, shuffled_baseline, cfg),
                  ex::kv_transfer("baseline+shuffled_recursive_kv" + at, Role::Baseline, shuffled_recursive, cfg)},
                 "phase 1");

  const std::vector<std::string> conditions = {"baseline",
                                               "recursive",
                                               "baseline+recursive_kv" + at,
                                               "recursive+baseline_kv" + at,
                                               "baseline+shuffled_baseline_kv" + at,
                                               "baseline+shuffled_recursive_kv" + at};
  const std::vector<ex::Contrast> contrasts = {
      {"natural gap", "recursive", "baseline", "recursive vs baseline prompt (natural)", "", "", ""},
      {"sufficiency", conditions[2], "baseline", "sufficiency: baseline + recursive KV vs baseline", "", "baseline", "recursive"},
      {"necessity", conditions[3], "recursive", "necessity: recursive + baseline KV vs recursive", "", "baseline", "recursive"},
      {"shuffled source", conditions[4], "baseline", "control: baseline + shuffled baseline KV vs baseline", "", "baseline", "recursive"},
      {"shuffled pairing", conditions[5], "baseline", "control: baseline + shuffled recursive KV vs baseline", "", "baseline", "recursive"}};
  ex::SummaryOptions so;
  so.bootstrap.seed = s.flags.study.sampling.seed;
  PhaseResult r;
  r.summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);
  const auto labels = phase1_labels(at);
  r.table = fmt::format("Phase 1: KV cache transfer at layers {} ({} pairs; score = {}; transfer = % of the natural "
                        "recursive - baseline gap)\n\n{}\n{}",
                        layers.str(), s.pairs.size(), r.summary.scorer, ex::condition_table(r.summary, labels),
                        ex::contrast_table(r.summary));
  write_phase(s, "phase1", r.summary, r.table, "Phase 1: KV cache transfer (layers " + layers.str() + ")",
              {condition_panel(r.summary, "Behaviour score by condition",
                               {{"baseline", "baseline"},
                                {"recursive", "recursive"},
                                {conditions[2], "baseline + recursive KV"},
                                {conditions[3], "recursive + baseline KV"},
                                {conditions[4], "+ shuffled baseline KV"},
                                {conditions[5], "+ shuffled recursive KV"}}),
               transfer_panel(r.summary, "", "Transfer (% of the natural recursive - baseline gap)")},
              {{"layers", layers.str()}, {"labels", labels}});
  return r;
}

}  // namespace dec7
