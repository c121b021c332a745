#pragma once
// Open step 4: which token positions of the source cache carry the mode? The baseline prompt gets
// the recursive prompt's KV cache (at the chosen layers, default all) only at some slots: windows
// of `window` slots counted from the end of the prompt, the first `window` slots, and with
// `per_position` every single slot of the last `max_positions`. Slots are counted on each row's
// own tokens (right-aligned), so prompts of different lengths line up at their ends.

#include "common.hpp"

namespace dec7 {

struct PositionOptions {
  int64_t window = 4;          ///< slots per window
  bool per_position = false;   ///< also every single slot of the last max_positions
  int64_t max_positions = 24;  ///< how far from the end per_position goes
};

/// The slot windows (and single slots) of the recursive prompt's KV cache at `layers`, with
/// `correction` within each family; writes <out>/positions/.
inline PhaseResult run_positions(Setup& s, LayerRange layers, const PositionOptions& o, ex::Correction correction) {
  const auto& cfg = s.config();
  MECHLENS_CHECK(o.window >= 1, mechlens::ArgumentError, "positions: a window holds at least 1 slot (got {})", o.window);
  // The shortest prefilled baseline prompt bounds the windows every pair has.
  int64_t shortest = INT64_MAX;
  for (const auto& e : s.encoded)
    shortest = std::min<int64_t>(shortest, std::min(e.baseline.size(), e.recursive.size()) - 1);

  ex::KvTransferOptions base;
  base.layers = layers;
  base.align = mechlens::parse_align(s.flags.align);
  base.rerotate = s.flags.rerotate;
  std::vector<ex::Condition> runs = {ex::natural(Role::Baseline, "baseline"), ex::natural(Role::Recursive, "recursive")};
  std::vector<std::string> conditions = {"baseline", "recursive"};
  std::vector<ex::Contrast> contrasts;
  auto add = [&](const std::string& tag, const std::string& label, std::vector<int64_t> from_end,
                 std::vector<int64_t> from_start, const std::string& family) {
    ex::KvTransferOptions k = base;
    k.from_end = std::move(from_end);
    k.from_start = std::move(from_start);
    const std::string name = "baseline+recursive_kv@" + layers.str() + "[" + tag + "]";
    runs.push_back(ex::kv_transfer(name, Role::Baseline, k, cfg));
    conditions.push_back(name);
    contrasts.push_back({tag, name, "baseline", label, family, "baseline", "recursive"});
  };
  for (int64_t lo = 1; lo <= shortest; lo += o.window) {
    const int64_t hi = std::min(shortest, lo + o.window - 1);
    std::vector<int64_t> v;
    for (int64_t k = lo; k <= hi; ++k) v.push_back(k);
    add(fmt::format("end {}-{}", lo, hi), fmt::format("slots {}..{} from the end", lo, hi), v, {}, "windows");
  }
  std::vector<int64_t> first;
  for (int64_t k = 0; k < std::min(o.window, shortest); ++k) first.push_back(k);
  add(fmt::format("first {}", first.size()), fmt::format("the first {} slots", first.size()), {}, first, "windows");
  if (o.per_position)
    for (int64_t k = 1; k <= std::min(shortest, o.max_positions); ++k)
      add(fmt::format("end {}", k), fmt::format("slot {} from the end", k), {k}, {}, "single slots");

  auto study = s.study();
  run_conditions(s, study, runs, "positions");
  ex::SummaryOptions so;
  so.bootstrap.seed = s.flags.study.sampling.seed;
  so.correction = correction;
  PhaseResult r;
  r.summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);
  r.table = fmt::format(
      "Token positions: the recursive prompt's KV cache (layers {}) at some slots only ({} pairs; slot 1 from the "
      "end = the last prefilled token; the shortest prompt prefills {} slots)\n\nwindows:\n{}",
      layers.str(), s.pairs.size(), shortest, ex::sweep_table(r.summary, "windows", "slots"));
  if (o.per_position) r.table += "\nsingle slots:\n" + ex::sweep_table(r.summary, "single slots", "slot");
  std::vector<ex::BarPanel> panels = {transfer_panel(r.summary, "windows", "% transfer by slot window")};
  if (o.per_position) panels.push_back(transfer_panel(r.summary, "single slots", "% transfer by single slot"));
  write_phase(s, "positions", r.summary, r.table, "Token positions in the KV cache", panels,
              {{"layers", layers.str()}, {"window", o.window}, {"shortest_prefill", shortest}});
  return r;
}

}  // namespace dec7
