#pragma once
// Where in the KV cache is the mode, at full resolution: attribution over the cache
// (docs/attribution.md) estimates, for every pair at once, the effect of splicing each
// (layer, KV head, slot) of the recursive prompt's cache into the baseline prompt's, on the
// teacher-forced log-probability of the recursive prompt's own greedy continuation (how much more
// the baseline prompt would continue as the recursive one does). One forward and one backward per
// batch of pairs (--batch-size; left-padded, aligned row by row). The map, averaged over pairs, is written as map.csv
// and heatmap.svg (layers × slots from the end). Then the estimate is checked where it matters: the top-k layer ranges and slot windows
// by estimated effect are spliced for real, sampled and scored as in phase 2, with the same
// statistics, and the table puts the estimate beside the measured transfer.

#include <algorithm>
#include <map>

#include <mechlens/attribution/kv_attribution.hpp>
#include <mechlens/experiments/svg_heatmap.hpp>
#include <mechlens/io/atomic_file.hpp>

#include "common.hpp"

namespace dec7 {

struct AttributionOptions {
  int64_t continuation = 16;  ///< greedy tokens of the recursive prompt scored teacher-forced
  int64_t top = 3;            ///< layer ranges and slot windows spliced for real
  int64_t window = 4;         ///< slots per window
};

struct AttributionMap {
  int64_t layers = 0, kv_heads = 0, longest = 0, shortest = 0;
  // [layer][head][from_end] sums over pairs, and how many pairs had that slot
  std::vector<std::vector<std::vector<double>>> keys, values, both;
  std::vector<int64_t> pairs_at;  ///< [from_end]
  double mean_metric = 0;         ///< the metric on the baseline prompt, mean over pairs
  double mean(const std::vector<std::vector<std::vector<double>>>& m, int64_t l, int64_t h, int64_t e) const {
    return pairs_at[static_cast<size_t>(e)] ? m[static_cast<size_t>(l)][static_cast<size_t>(h)][static_cast<size_t>(e)] /
                                                  static_cast<double>(pairs_at[static_cast<size_t>(e)])
                                            : NAN;
  }
  /// The estimated effect of splicing layers [lo, hi) at the slots `from_end` (empty: every slot
  /// every pair has), mean over pairs: the sum of the entries' estimates (first order).
  double splice_estimate(int64_t lo, int64_t hi, const std::vector<int64_t>& from_end) const {
    double total = 0;
    for (int64_t l = lo; l < hi; ++l)
      for (int64_t h = 0; h < kv_heads; ++h)
        if (from_end.empty()) {
          for (int64_t e = 1; e <= longest; ++e)
            total += both[static_cast<size_t>(l)][static_cast<size_t>(h)][static_cast<size_t>(e)];
        } else {
          for (int64_t e : from_end) total += both[static_cast<size_t>(l)][static_cast<size_t>(h)][static_cast<size_t>(e)];
        }
    return total / static_cast<double>(std::max<int64_t>(pairs_at.empty() ? 0 : pairs_at[1], 1));
  }
};

/// The attribution map over every pair (see the file comment).
inline AttributionMap attribution_map(Setup& s, const AttributionOptions& o) {
  auto& model = *s.model;
  const auto& cfg = s.config();
  AttributionMap m;
  m.layers = cfg.n_layers();
  m.kv_heads = cfg.n_kv_heads();
  m.shortest = INT64_MAX;
  for (const auto& e : s.encoded) {
    m.longest = std::max<int64_t>(m.longest, static_cast<int64_t>(e.baseline.size()) - 1);
    m.shortest = std::min<int64_t>(m.shortest, std::min(e.baseline.size(), e.recursive.size()) - 1);
  }
  auto grid = [&] {
    return std::vector<std::vector<std::vector<double>>>(
        static_cast<size_t>(m.layers),
        std::vector<std::vector<double>>(static_cast<size_t>(m.kv_heads), std::vector<double>(static_cast<size_t>(m.longest) + 1, 0.0)));
  };
  m.keys = grid();
  m.values = grid();
  m.both = grid();
  m.pairs_at.assign(static_cast<size_t>(m.longest) + 1, 0);

  // The recursive prompts' own greedy continuations, in batches; every one exactly
  // o.continuation tokens long (not stopped at the end-of-sequence token), so that a batch of
  // pairs shares one teacher-forced forward.
  std::vector<std::vector<int64_t>> continuations;
  mechlens::GenerationOptions g;
  g.max_new_tokens = o.continuation;
  g.use_model_eos = false;
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, s.flags.study.batch_size));
  for (size_t i = 0; i < s.encoded.size(); i += batch) {
    std::vector<std::vector<int64_t>> prompts;
    for (size_t j = i; j < std::min(s.encoded.size(), i + batch); ++j) prompts.push_back(s.encoded[j].recursive);
    for (auto& t : mechlens::generate(model, prompts, g).tokens) continuations.push_back(std::move(t));
  }

  // Pairs run --batch-size at a time, left-padded and aligned row by row: one forward and one
  // backward per batch (the cost of a call is mostly the host's, docs/attribution.md).
  mechlens::KVAttributionOptions ko;
  ko.splice.align = mechlens::parse_align(s.flags.align);
  ko.splice.rerotate = s.flags.rerotate;
  s.progress->add_total(static_cast<int64_t>(s.encoded.size()));
  s.progress->set_label("attribution");
  for (size_t start = 0; start < s.encoded.size(); start += batch) {
    const size_t stop = std::min(s.encoded.size(), start + batch);
    std::vector<std::vector<int64_t>> targets, sources;
    std::vector<int64_t> cont_flat;
    for (size_t i = start; i < stop; ++i) {
      targets.push_back(s.encoded[i].baseline);
      sources.push_back(s.encoded[i].recursive);
      MECHLENS_CHECK(static_cast<int64_t>(continuations[i].size()) == o.continuation, mechlens::ArgumentError,
                     "attribution: pair {} got {} continuation tokens, expected {}", s.pairs[i].id,
                     continuations[i].size(), o.continuation);
      cont_flat.insert(cont_flat.end(), continuations[i].begin(), continuations[i].end());
    }
    const int64_t b = static_cast<int64_t>(stop - start);
    const at::Tensor cont = at::tensor(cont_flat, at::kLong).view({b, o.continuation});
    ko.continuation = cont;
    mechlens::PromptState target = mechlens::prefill(model, targets, 0);
    mechlens::PromptState source = mechlens::prefill(model, sources, 0);
    mechlens::KVAttribution a =
        mechlens::kv_attribution(model, target, source.cache, mechlens::continuation_logprob(cont), ko);
    m.mean_metric += a.metric.item<double>();  // summed over the rows
    const at::Tensor k = a.keys.to(at::kDouble).cpu(), v = a.values.to(at::kDouble).cpu();
    const at::Tensor spliced = a.spliced.cpu();
    auto kk = k.accessor<double, 4>();
    auto vv = v.accessor<double, 4>();
    auto sp = spliced.accessor<bool, 2>();
    const int64_t n = target.cache.length();
    for (int64_t r = 0; r < b; ++r)
      for (int64_t slot = 0; slot < n; ++slot) {
        if (!sp[r][slot]) continue;  // left padding, or no source slot under the alignment
        const int64_t from_end = n - slot;
        ++m.pairs_at[static_cast<size_t>(from_end)];
        for (int64_t l = 0; l < m.layers; ++l)
          for (int64_t h = 0; h < m.kv_heads; ++h) {
            const size_t L = static_cast<size_t>(l), H = static_cast<size_t>(h), E = static_cast<size_t>(from_end);
            m.keys[L][H][E] += kk[l][r][h][slot];
            m.values[L][H][E] += vv[l][r][h][slot];
            m.both[L][H][E] += kk[l][r][h][slot] + vv[l][r][h][slot];
          }
      }
    s.progress->advance(b);
  }
  m.mean_metric /= static_cast<double>(std::max<size_t>(s.encoded.size(), 1));
  return m;
}

/// Writes map.csv (one row per layer, KV head and slot from the end) and heatmap.svg.
inline void write_attribution_map(Setup& s, const AttributionMap& m, const AttributionOptions& o) {
  if (!s.prints()) return;  // rank 0 writes what belongs to the whole run
  const std::string dir = s.folder->phase_dir("attribution");
  std::string csv = "layer,kv_head,from_end,pairs,keys,values,both\n";
  for (int64_t l = 0; l < m.layers; ++l)
    for (int64_t h = 0; h < m.kv_heads; ++h)
      for (int64_t e = 1; e <= m.longest; ++e)
        if (m.pairs_at[static_cast<size_t>(e)])
          csv += fmt::format("{},{},{},{},{:.6g},{:.6g},{:.6g}\n", l, h, e, m.pairs_at[static_cast<size_t>(e)],
                             m.mean(m.keys, l, h, e), m.mean(m.values, l, h, e), m.mean(m.both, l, h, e));
  mechlens::io::write_file_atomically(dir + "/map.csv", csv);

  ex::HeatMap hm;
  hm.title = "Estimated effect of splicing each entry of the recursive prompt's KV cache";
  hm.row_label = "layer";
  hm.column_label = "slot from the end of the prompt (1 = the last prefilled token)";
  hm.value_label = "Δ log p (nats)";
  for (int64_t l = m.layers - 1; l >= 0; --l) hm.rows.push_back(std::to_string(l));
  for (int64_t e = m.shortest; e >= 1; --e) hm.columns.push_back(std::to_string(e));
  for (int64_t l = m.layers - 1; l >= 0; --l) {
    std::vector<double> row;
    for (int64_t e = m.shortest; e >= 1; --e) {
      double sum = 0;
      for (int64_t h = 0; h < m.kv_heads; ++h) sum += m.mean(m.both, l, h, e);
      row.push_back(sum);
    }
    hm.values.push_back(row);
  }
  hm.caption = fmt::format(
      "{} pairs; baseline prompt + one entry (key and value, summed over KV heads) of the recursive prompt's cache;\n"
      "metric: log p of the recursive prompt's greedy continuation ({} tokens), teacher-forced; first-order estimate\n"
      "(values: gradient; keys: AtP* recomputed softmax). Slots every pair has; map.csv holds every head and slot.",
      s.pairs.size(), o.continuation);
  ex::write_svg_heatmap(dir + "/heatmap.svg", hm);
}

/// The map, then the top-k layer ranges and slot windows spliced for real; writes
/// <out>/attribution/ (map.csv, heatmap.svg, summary.json, summary.csv, table.txt, figure.svg).
inline PhaseResult run_attribution(Setup& s, const AttributionOptions& o, ex::Correction correction) {
  MECHLENS_CHECK(o.top >= 1 && o.window >= 1 && o.continuation >= 1, mechlens::ArgumentError,
                 "attribution: --top, --window and --continuation must be at least 1 (got {}, {}, {})", o.top, o.window,
                 o.continuation);
  const auto& cfg = s.config();
  const int64_t n = cfg.n_layers();
  AttributionMap m = attribution_map(s, o);
  write_attribution_map(s, m, o);

  // Candidates: layer ranges of width 1, 2 and 4 and the study's ranges, over every slot; slot
  // windows from the end over every layer. The top-k of each by estimated effect.
  struct Candidate {
    std::string name;
    LayerRange layers;
    std::vector<int64_t> from_end;
    double estimate;
    size_t rank = 0, of = 0;
  };
  std::vector<Candidate> ranges, windows;
  auto add_range = [&](LayerRange r) {
    for (const auto& c : ranges)
      if (c.layers.begin == r.begin && c.layers.end == r.end) return;
    ranges.push_back({r.str(), r, {}, m.splice_estimate(r.begin, r.end, {})});
  };
  for (int64_t w : {1, 2, 4})
    for (int64_t lo = 0; lo + w <= n; ++lo) add_range({lo, lo + w});
  for (const auto& r : study_ranges(n)) add_range(r);
  for (int64_t lo = 1; lo <= m.shortest; lo += o.window) {
    std::vector<int64_t> slots;
    for (int64_t k = lo; k <= std::min(m.shortest, lo + o.window - 1); ++k) slots.push_back(k);
    windows.push_back({fmt::format("end {}-{}", lo, slots.back()), {0, n}, slots, m.splice_estimate(0, n, slots)});
  }
  auto top = [&](std::vector<Candidate>& all) {
    std::sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) { return a.estimate > b.estimate; });
    for (size_t i = 0; i < all.size(); ++i) all[i].rank = i + 1, all[i].of = all.size();
    all.resize(std::min(all.size(), static_cast<size_t>(o.top)));
  };
  top(ranges);
  top(windows);

  ex::KvTransferOptions base;
  base.source = Role::Recursive;
  base.align = mechlens::parse_align(s.flags.align);
  base.rerotate = s.flags.rerotate;
  std::vector<ex::Condition> runs = {ex::natural(Role::Baseline, "baseline"), ex::natural(Role::Recursive, "recursive")};
  std::vector<std::string> conditions = {"baseline", "recursive"};
  std::vector<ex::Contrast> contrasts;
  auto add = [&](const Candidate& c, const std::string& family) {
    ex::KvTransferOptions k = base;
    k.layers = c.layers;
    k.from_end = c.from_end;
    const std::string name = "baseline+recursive_kv@" + c.layers.str() + (c.from_end.empty() ? "" : "[" + c.name + "]");
    runs.push_back(ex::kv_transfer(name, Role::Baseline, k, cfg));
    conditions.push_back(name);
    contrasts.push_back({c.name, name, "baseline", family == "layer ranges" ? "layers " + c.name : "slots " + c.name,
                         family, "baseline", "recursive"});
  };
  for (const auto& c : ranges) add(c, "layer ranges");
  for (const auto& c : windows) add(c, "windows");
  auto study = s.study();
  run_conditions(s, study, runs, "attribution");
  ex::SummaryOptions so;
  so.bootstrap.seed = s.flags.study.sampling.seed;
  so.correction = correction;
  PhaseResult r;
  r.summary = ex::summarize_records(s.log().records(), conditions, contrasts, so);

  ex::TextTable t({"splice", "estimated Δ log p", "rank", "n", "% transfer", "95% CI", std::string("p (") + ex::correction_name(correction) + ")"},
                  "lrrrrrr");
  auto row = [&](const Candidate& c, const std::string& label) {
    const ex::ContrastStats* cs = r.summary.contrast(c.name);
    std::string te = "n/a", ci = "n/a", p = "n/a";
    if (cs && cs->te && cs->te->value.defined) te = ex::format_num(100.0 * cs->te->value.value, 1);
    if (cs && cs->te && cs->te->ci.defined)
      ci = "[" + ex::format_num(100.0 * cs->te->ci.low, 1) + ", " + ex::format_num(100.0 * cs->te->ci.high, 1) + "]";
    if (cs) p = cs->identical ? "identical" : std::isfinite(cs->p_adjusted) ? ex::format_p(cs->p_adjusted) : "n/a";
    t.add({label, ex::format_num(c.estimate, 3, true), fmt::format("{} of {}", c.rank, c.of),
           cs ? std::to_string(cs->n_pairs) : "0", te, ci, p});
  };
  for (const auto& c : ranges) row(c, "layers " + c.name);
  for (const auto& c : windows) row(c, "slots " + c.name + " (all layers)");
  r.table = fmt::format(
      "KV-cache attribution ({} pairs): the estimated effect of splicing the recursive prompt's cache into the baseline "
      "prompt's, on the log-probability of the recursive prompt's greedy continuation ({} tokens, teacher-forced; "
      "baseline mean {:.2f} nats), summed over the entries spliced (first order), beside the measured transfer of the "
      "same splice (sampled generations, scored; {} within each family: the top {} layer ranges of {} candidates and "
      "slot windows of {} of {})\n\n{}\nmap: map.csv, heatmap.svg\n",
      s.pairs.size(), o.continuation, m.mean_metric, ex::correction_name(correction), o.top, ranges.empty() ? 0 : ranges[0].of,
      o.window, windows.empty() ? 0 : windows[0].of, t.str());
  write_phase(s, "attribution", r.summary, r.table, "KV-cache attribution: the top estimates spliced for real",
              {transfer_panel(r.summary, "layer ranges", "% transfer, the layer ranges with the largest estimates"),
               transfer_panel(r.summary, "windows", "% transfer, the slot windows with the largest estimates")},
              {{"continuation_tokens", o.continuation}, {"top", o.top}, {"window", o.window},
               {"metric_baseline_mean", m.mean_metric}});
  return r;
}

}  // namespace dec7
