// Open step 4: which token positions of the source cache carry the mode? The baseline prompt gets
// the recursive prompt's KV cache only at some slots: windows counted from the end of the prompt,
// the first window, and with --per-position every single slot (positions.hpp). Writes
// <out>/generations.jsonl and <out>/positions/; prints the table.

#include "common.hpp"
#include "positions.hpp"

int main(int argc, char** argv) {
  dec7::Flags f;
  dec7::PositionOptions o;
  std::string correction = "holm";
  CLI::App app{"DEC7 token positions: which slots of the source KV cache carry the effect"};
  dec7::add_shared_flags(app, f, "dec7-runs/positions");
  app.get_option("--layers")->description("the layer range whose KV cache is transferred (default: all layers)");
  app.add_option("--window", o.window, "slots per window")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_flag("--per-position", o.per_position, "also transfer every single slot of the last --max-positions");
  app.add_option("--max-positions", o.max_positions, "how far from the end --per-position goes")->capture_default_str();
  app.add_option("--correction", correction, "correction across the windows: holm, bh or none")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_positions");
    const auto& cfg = s.config();
    const auto layers = dec7::parse_layer_list(f.layers, cfg.n_layers(), {{0, cfg.n_layers()}});
    MECHLENS_CHECK(layers.size() == 1, mechlens::ArgumentError, "--layers: give one range (got {})", layers.size());
    auto r = dec7::run_positions(s, layers[0], o, dec7::ex::parse_correction(correction));
    s.progress->finish();
    if (s.prints()) std::printf("%s\nwrote %s/positions/\n", r.table.c_str(), f.out.c_str());
    return 0;
  });
}
