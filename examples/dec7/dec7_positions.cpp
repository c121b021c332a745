// Open step 4: which token positions of the source cache carry the mode? The baseline prompt gets
// the recursive prompt's KV cache (at --layers, default all) only at some slots: windows of
// --window slots counted from the end of the prompt, the first --window slots, and with
// --per-position every single slot of the last --max-positions. Slots are counted on each row's
// own tokens (right-aligned), so prompts of different lengths line up at their ends.

#include "common.hpp"

namespace ex = dec7::ex;
using dec7::Role;

int main(int argc, char** argv) {
  dec7::Flags f;
  int64_t window = 4, max_positions = 24;
  bool per_position = false;
  std::string correction = "holm";
  CLI::App app{"DEC7 token positions: which slots of the source KV cache carry the effect"};
  dec7::add_shared_flags(app, f, "dec7-runs/positions");
  app.get_option("--layers")->description("the layer range whose KV cache is transferred (default: all layers)");
  app.add_option("--window", window, "slots per window")->capture_default_str();
  app.add_flag("--per-position", per_position, "also transfer every single slot of the last --max-positions");
  app.add_option("--max-positions", max_positions, "how far from the end --per-position goes")->capture_default_str();
  app.add_option("--correction", correction, "correction across the windows: holm, bh or none")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_positions");
    const auto& cfg = s.config();
    const auto layers = dec7::parse_layer_list(f.layers, cfg.n_layers(), {{0, cfg.n_layers()}});
    MECHLENS_CHECK(layers.size() == 1, mechlens::ArgumentError, "--layers: give one range (got {})", layers.size());
    MECHLENS_CHECK(window >= 1, mechlens::ArgumentError, "--window must be >= 1");
    // The shortest prefilled baseline prompt bounds the windows every pair has.
    int64_t shortest = INT64_MAX;
    for (const auto& e : s.encoded)
      shortest = std::min<int64_t>(shortest, std::min(e.baseline.size(), e.recursive.size()) - 1);

    ex::KvTransferOptions base;
    base.layers = layers[0];
    base.align = mechlens::parse_align(f.align);
    base.rerotate = f.rerotate;
    std::vector<ex::Condition> runs = {ex::natural(Role::Baseline, "baseline"), ex::natural(Role::Recursive, "recursive")};
    std::vector<std::string> conditions = {"baseline", "recursive"};
    std::vector<ex::Contrast> contrasts;
    auto add = [&](const std::string& tag, const std::string& label, std::vector<int64_t> from_end,
                   std::vector<int64_t> from_start, const std::string& family) {
      ex::KvTransferOptions o = base;
      o.from_end = std::move(from_end);
      o.from_start = std::move(from_start);
      const std::string name = "baseline+recursive_kv@" + layers[0].str() + "[" + tag + "]";
      runs.push_back(ex::kv_transfer(name, Role::Baseline, o, cfg));
      conditions.push_back(name);
      contrasts.push_back({tag, name, "baseline", label, family, "baseline", "recursive"});
    };
    for (int64_t lo = 1; lo <= shortest; lo += window) {
      const int64_t hi = std::min(shortest, lo + window - 1);
      std::vector<int64_t> v;
      for (int64_t k = lo; k <= hi; ++k) v.push_back(k);
      add(fmt::format("end {}-{}", lo, hi), fmt::format("slots {}..{} from the end", lo, hi), v, {}, "windows");
    }
    std::vector<int64_t> first;
    for (int64_t k = 0; k < std::min(window, shortest); ++k) first.push_back(k);
    add(fmt::format("first {}", first.size()), fmt::format("the first {} slots", first.size()), {}, first, "windows");
    if (per_position)
      for (int64_t k = 1; k <= std::min(shortest, max_positions); ++k)
        add(fmt::format("end {}", k), fmt::format("slot {} from the end", k), {k}, {}, "single slots");

    auto study = s.study();
    dec7::run_conditions(s, study, runs, "positions");
    ex::SummaryOptions so;
    so.bootstrap.seed = f.study.sampling.seed;
    so.correction = ex::parse_correction(correction);
    const auto summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);
    std::string table = fmt::format(
        "Token positions: the recursive prompt's KV cache (layers {}) at some slots only ({} pairs; slot 1 from the "
        "end = the last prefilled token; the shortest prompt prefills {} slots)\n\nwindows:\n{}",
        layers[0].str(), s.pairs.size(), shortest, ex::sweep_table(summary, "windows", "slots"));
    if (per_position) table += "\nsingle slots:\n" + ex::sweep_table(summary, "single slots", "slot");
    std::vector<ex::BarPanel> panels = {dec7::transfer_panel(summary, "windows", "% transfer by slot window")};
    if (per_position) panels.push_back(dec7::transfer_panel(summary, "single slots", "% transfer by single slot"));
    dec7::write_phase(s, "positions", summary, table, "Token positions in the KV cache", panels,
                      {{"layers", layers[0].str()}, {"window", window}, {"shortest_prefill", shortest}});
    s.progress->finish();
    std::printf("%s\nwrote %s/positions/\n", table.c_str(), f.out.c_str());
    return 0;
  });
}
