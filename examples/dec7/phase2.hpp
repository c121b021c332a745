#pragma once
// Phase 2 of the study: which layers' KV cache carries the mode. The baseline prompt gets the
// recursive prompt's cache at one layer range at a time; % transfer = (patched - baseline) /
// (recursive - baseline), with a paired t-test per range and Holm (or BH) across the ranges.

#include "common.hpp"
#include "phase1.hpp"

namespace dec7 {

inline PhaseResult run_phase2(Setup& s, const std::vector<LayerRange>& ranges, ex::Correction correction) {
  const auto& cfg = s.config();
  auto study = s.study();
  ex::KvTransferOptions opt;
  opt.source = Role::Recursive;
  opt.align = mechlens::parse_align(s.flags.align);
  opt.rerotate = s.flags.rerotate;

  std::vector<ex::Condition> runs = {ex::natural(Role::Baseline, "baseline"), ex::natural(Role::Recursive, "recursive")};
  std::vector<std::string> conditions = {"baseline", "recursive"};
  std::vector<ex::Contrast> contrasts;
  for (const auto& range : ranges) {
    opt.layers = range;
    const std::string name = "baseline+recursive_kv@" + range.str();
    runs.push_back(ex::kv_transfer(name, Role::Baseline, opt, cfg));
    conditions.push_back(name);
    contrasts.push_back({range.str(), name, "baseline", "layers " + range.str(), "layer sweep", "baseline", "recursive"});
  }
  run_conditions(s, study, runs, "phase 2");

  ex::SummaryOptions so;
  so.bootstrap.seed = s.flags.study.sampling.seed;
  so.correction = correction;
  PhaseResult r;
  r.summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);
  r.table = fmt::format("Phase 2: which layers' KV cache carries it ({} pairs; baseline prompt + recursive prompt's KV "
                        "at the layers shown; {})\n\n{}\n{}",
                        s.pairs.size(), ex::correction_note(r.summary, "layer sweep", "ranges"),
                        ex::condition_table(r.summary), ex::sweep_table(r.summary, "layer sweep"));
  write_phase(s, "phase2", r.summary, r.table, "Phase 2: which layers' KV cache carries it",
              {transfer_panel(r.summary, "layer sweep", "Baseline prompt + the recursive prompt's KV cache at the layers shown")},
              {{"ranges", [&] {
                  nlohmann::json j = nlohmann::json::array();
                  for (const auto& x : ranges) j.push_back(x.str());
                  return j;
                }()},
               {"correction", ex::correction_name(correction)}});
  return r;
}

}  // namespace dec7
