// Where in the KV cache is the mode, estimated for every (layer, KV head, slot) at once by
// attribution over the cache (docs/attribution.md), then confirmed: the top layer ranges and slot
// windows by estimate are spliced for real and measured as phase 2 measures (attribution.hpp).
// Writes <out>/generations.jsonl and <out>/attribution/ (map.csv, heatmap.svg, summary.json,
// summary.csv, table.txt, figure.svg); prints the table.

#include "attribution.hpp"
#include "common.hpp"

int main(int argc, char** argv) {
  dec7::Flags f;
  dec7::AttributionOptions o;
  std::string correction = "holm";
  CLI::App app{"DEC7 KV-cache attribution: the estimated effect of splicing each cache entry, and real splices of the top"};
  dec7::add_shared_flags(app, f, "dec7-runs/attribution");
  app.remove_option(app.get_option("--layers"));  // every layer is estimated; the top ranges are chosen
  app.add_option("--continuation", o.continuation,
                 "greedy tokens of the recursive prompt whose log-probability is the metric (teacher-forced)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--top", o.top, "layer ranges and slot windows with the largest estimates spliced for real")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--window", o.window, "slots per window")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--correction", correction, "correction within each family: holm, bh or none")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dec7::guarded([&] {
    auto s = dec7::setup(f, "dec7_attribution");
    auto r = dec7::run_attribution(s, o, dec7::ex::parse_correction(correction));
    s.progress->finish();
    if (s.prints()) std::printf("%s\nwrote %s/attribution/\n", r.table.c_str(), f.out.c_str());
    return 0;
  });
}
