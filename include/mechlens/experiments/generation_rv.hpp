#pragma once
/// \file
/// R_V of generations, two ways (the study's open step 1: does the geometry move with the cache?):
///
///  * read from the run itself — GenerationRvProbe reads the `hook_v` rows of the early and late
///    R_V layers of a (possibly KV-patched) generation from the KV cache the run wrote (values are
///    cached as `hook_v` gives them): the prompt's rows right after its prefill, before any edit
///    of the cache (a splice), the decoding steps' rows once decoding is over. No hook is attached,
///    so the generation decodes as every other condition's does — in the fast engine, as a CUDA
///    graph on CUDA (generation/generate.hpp) — and gives the same tokens. Each row is measured
///    over the last W tokens its run processed: its prompt, then the pending token and the
///    generated tokens but the last (the last sampled token is never fed back). Rows that stopped
///    early are measured up to their own end, not over the steps the batch ran on after it.
///  * re-encoded in a clean pass — the same tokens (prompt + generation but its last token) run
///    through the unpatched model with measure_rv (rv.hpp: the batch's rows in one forward that
///    stops after the later R_V layer), so both readings cover the same W tokens and differ only
///    in whether the patched cache was there.
///
/// For a natural generation the two readings agree up to floating-point error (a check that the
/// probe reads what measure_rv reads).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/conditions.hpp"
#include "mechlens/experiments/rv.hpp"
#include "mechlens/generation/generate.hpp"
#include "mechlens/generation/prompt_state.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/metrics/participation_ratio.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens::experiments {

/// The tokens of a generation's run that R_V reads: the prompt, then the generation but its
/// last token (see the file comment).
inline std::vector<int64_t> processed_tokens(const std::vector<int64_t>& prompt, const std::vector<int64_t>& generated) {
  std::vector<int64_t> out = prompt;
  if (!generated.empty()) out.insert(out.end(), generated.begin(), generated.end() - 1);
  return out;
}

class GenerationRvProbe {
 public:
  GenerationRvProbe(const ModelImpl& model, const RvOptions& options) : options_(options), kv_heads_(model.config().n_kv_heads()) {
    ::mechlens::detail::check_rv_options(model.config(), options);
  }

  /// Keeps the early and late layers' values of `prefilled`, the target's state right after its
  /// prefill (before any edit of its cache): slots [0, length), left-padded rows ending at the last.
  void read_prefill(const PromptState& prefilled) {
    const KVCache& cache = prefilled.cache;
    decode_start_ = cache.length();
    for (int which : {0, 1}) {
      const int64_t layer = which == 0 ? options_.early : options_.late;
      // [b, kv, slots, d] -> [b, slots, kv*d], copied: a splice may overwrite the cache next
      prefill_[which] = cache.value_storage(layer).narrow(2, 0, decode_start_).transpose(1, 2)
                            .clone(at::MemoryFormat::Contiguous).flatten(2);
    }
  }
  bool prefill_read() const { return decode_start_ >= 0; }
  /// The cache slot the prefill ended at, where decoding writes its first step.
  int64_t decode_start() const { return decode_start_; }

  /// R_V per row over the last W processed tokens. `prefill_real[r]`: real prefilled tokens of
  /// row r; `generated[r]`: the row's generated tokens (GenerationResult::tokens); `decoded`: the
  /// state decode() advanced from the prefilled one (its cache holds the decoding steps' values).
  /// A row whose run processed fewer than W tokens gets NaN (its `short_rows` index is listed).
  RvResult result(const std::vector<int64_t>& prefill_real, const std::vector<std::vector<int64_t>>& generated,
                  const PromptState& decoded, std::vector<int64_t>* short_rows = nullptr) const {
    MECHLENS_CHECK(prefill_read(), ArgumentError, "R_V probe: read_prefill() was not given the prefilled state");
    const KVCache& cache = decoded.cache;
    const int64_t b = cache.batch(), lp = decode_start_;
    MECHLENS_CHECK(static_cast<int64_t>(prefill_real.size()) == b && static_cast<int64_t>(generated.size()) == b &&
                       prefill_[0].size(0) == b,
                   ArgumentError,
                   "R_V probe: the decoded batch has {} rows, the prefill {}; {} prefill lengths and {} generations given",
                   b, prefill_[0].size(0), prefill_real.size(), generated.size());
    int64_t steps = 0;  // decoding steps read: the longest row's
    for (const auto& g : generated) steps = std::max<int64_t>(steps, static_cast<int64_t>(g.size()));
    MECHLENS_CHECK(lp + steps <= cache.capacity(), ArgumentError,
                   "R_V probe: {} decoding steps from slot {} exceed the cache's {} slots", steps, lp, cache.capacity());
    // Columns: the prefill's slots [0, lp), then the decoding steps' [lp, lp + steps).
    const int64_t w = options_.window;
    std::vector<int64_t> ok_rows, index;  // index: [ok rows, W] columns, row-major
    for (int64_t r = 0; r < b; ++r) {
      const int64_t real = prefill_real[static_cast<size_t>(r)];
      const int64_t n = real + static_cast<int64_t>(generated[static_cast<size_t>(r)].size());  // processed tokens
      MECHLENS_CHECK(real >= 0 && real <= lp, ArgumentError, "R_V probe: row {} prefilled {} tokens, the prefill {} slots",
                     r, real, lp);
      if (n < w) {
        if (short_rows) short_rows->push_back(r);
        continue;
      }
      for (int64_t k = n - w; k < n; ++k) index.push_back(lp - real + k);  // prompt tokens end at slot lp - 1
      ok_rows.push_back(r);
    }
    RvResult out;
    auto nan = [&](int64_t n) { return at::full({n}, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(at::kDouble)); };
    out.pr_early = nan(b);
    out.pr_late = nan(b);
    out.rv = nan(b);
    if (ok_rows.empty()) return out;
    const auto longs = at::TensorOptions().dtype(at::kLong);
    const at::Tensor rows = at::tensor(ok_rows, longs), rows_here = rows.to(cache.device());
    const at::Tensor cols = at::tensor(index, longs).view({static_cast<int64_t>(ok_rows.size()), w}).to(cache.device());
    auto windows = [&](int which) {  // -> [ok rows, W, kv*d]
      const int64_t layer = which == 0 ? options_.early : options_.late;
      at::Tensor all = prefill_[which];
      if (steps > 0)  // [b, kv, slots, d] -> [b, steps, kv*d]
        all = at::cat({all, cache.value_storage(layer).narrow(2, lp, steps).transpose(1, 2).flatten(2)}, 1);
      // The layer's device (a model split over devices keeps each layer's values on its own),
      // then the windows, which are small, on the cache's first device for the two to meet.
      all = all.index_select(0, rows_here.to(all.device()));
      return all.gather(1, cols.to(all.device()).unsqueeze(-1).expand({-1, -1, all.size(2)})).to(cache.device());
    };
    RvResult part = ::mechlens::detail::rv_from_windows(windows(0), windows(1), options_, kv_heads_);
    out.pr_early.index_copy_(0, rows, part.pr_early);
    out.pr_late.index_copy_(0, rows, part.pr_late);
    out.rv.index_copy_(0, rows, part.rv);
    return out;
  }

 private:
  RvOptions options_;
  int64_t kv_heads_ = 0;
  int64_t decode_start_ = -1;
  at::Tensor prefill_[2];  ///< the prefill's values at the early and late layer, [b, slots, kv*d]
};

namespace detail {
inline nlohmann::json rv_reading(const RvResult& r, int64_t row) {
  auto v = [&](const at::Tensor& t) {
    const double x = t[row].item<double>();
    return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json();
  };
  return {{"pr_early", v(r.pr_early)}, {"pr_late", v(r.pr_late)}, {"rv", v(r.rv)}};
}
}  // namespace detail

/// `inner` with both R_V readings of each generation added to its records' `extra`:
/// "rv_patched_pass" (read from the run, GenerationRvProbe) and "rv_clean_pass" (the same tokens
/// re-encoded without any patch, measure_rv), each {pr_early, pr_late, rv} (null when the run
/// processed fewer than W tokens), and "rv_options". `inner` must announce the end of its
/// target's prefill (BatchContext::target_prefilled), where the probe reads the prompt's rows;
/// the source prompts' forwards are not read, and no hook is attached.
inline Condition with_rv_probe(Condition inner, const RvOptions& options) {
  Condition c = inner;
  c.probe = {{"rv", {{"early", options.early}, {"late", options.late}, {"window", options.window},
                     {"centered", options.centered}, {"per_head", options.per_head}}}};
  c.prepare = [inner, options](const BatchContext& ctx) {
    auto probe = std::make_shared<GenerationRvProbe>(*ctx.model, options);
    BatchContext observed = ctx;
    observed.after_target_prefill = [probe, &ctx](const PromptState& prefilled) {
      probe->read_prefill(prefilled);
      ctx.target_prefilled(prefilled);
    };
    PreparedBatch p = inner.prepare(observed);
    MECHLENS_CHECK(probe->prefill_read(), ArgumentError,
                   "condition '{}' did not announce the end of its target prefill (BatchContext::target_prefilled), so "
                   "R_V cannot be read from its run",
                   inner.name);
    MECHLENS_CHECK(p.state.cache.length() == probe->decode_start(), ArgumentError,
                   "condition '{}' added {} cache slots after announcing its target prefill; R_V reads the decoding "
                   "steps from slot {}",
                   inner.name, p.state.cache.length() - probe->decode_start(), probe->decode_start());
    std::vector<int64_t> prefill_real;
    for (const auto& prompt : p.state.prompts) prefill_real.push_back(static_cast<int64_t>(prompt.size()) - 1);
    auto prompts = p.state.prompts;
    ModelImpl* model = ctx.model;
    auto inner_finish = p.finish;
    p.finish = [=](const GenerationResult& res, const PromptState& decoded, std::vector<nlohmann::json>& extra) {
      if (inner_finish) inner_finish(res, decoded, extra);
      const RvResult patched = probe->result(prefill_real, res.tokens, decoded);
      // The clean pass: the batch's rows re-encoded together, one forward up to the late layer.
      std::vector<std::vector<int64_t>> clean_rows;
      std::vector<int64_t> clean_index;
      for (size_t r = 0; r < prompts.size(); ++r) {
        auto tokens = processed_tokens(prompts[r], res.tokens[r]);
        if (static_cast<int64_t>(tokens.size()) < options.window) continue;
        clean_rows.push_back(std::move(tokens));
        clean_index.push_back(static_cast<int64_t>(r));
      }
      std::optional<RvResult> clean;
      if (!clean_rows.empty()) clean = measure_rv(*model, clean_rows, options);
      for (size_t r = 0; r < prompts.size(); ++r) {
        extra[r]["rv_patched_pass"] = detail::rv_reading(patched, static_cast<int64_t>(r));
        extra[r]["rv_clean_pass"] = {{"pr_early", nullptr}, {"pr_late", nullptr}, {"rv", nullptr}};
        extra[r]["rv_options"] = {{"early", options.early}, {"late", options.late}, {"window", options.window},
                                  {"centered", options.centered}};
      }
      for (size_t k = 0; k < clean_index.size(); ++k)
        extra[static_cast<size_t>(clean_index[k])]["rv_clean_pass"] = detail::rv_reading(*clean, static_cast<int64_t>(k));
    };
    return p;
  };
  return c;
}

}  // namespace mechlens::experiments
