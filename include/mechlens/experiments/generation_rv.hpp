#pragma once
/// \file
/// R_V of generations, two ways (the study's open step 1: does the geometry move with the cache?):
///
///  * read from the run itself — GenerationRvProbe keeps the `hook_v` rows of the early and late
///    R_V layers through the prefill and every decoding step of a (possibly KV-patched)
///    generation, and measures each row over the last W tokens that row's run processed: its
///    prompt, then the pending token and the generated tokens but the last (the last sampled
///    token is never fed back). Rows that stopped early are measured up to their own end, not
///    over the steps the batch ran on after it.
///  * re-encoded in a clean pass — the same tokens (prompt + generation but its last token) run
///    through the unpatched model with measure_rv (rv.hpp), so both readings cover the same W
///    tokens and differ only in whether the patched cache was there.
///
/// For a natural generation the two readings agree up to floating-point error (a check that the
/// probe reads what measure_rv reads).

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
  /// Attach before prefill (or after it, to read decoding steps only) and keep it until decode
  /// returns. `prefill_lengths[r]` is the number of tokens row r prefilled (prompt size − 1).
  static GenerationRvProbe attach(ModelImpl& model, const RvOptions& options) {
    ::mechlens::detail::check_rv_options(model.config(), options);
    GenerationRvProbe p;
    p.options_ = options;
    p.kv_heads_ = model.config().n_kv_heads();
    auto state = p.state_;
    auto keep = [state](int which) {
      return [state, which](const at::Tensor& v, const HookContext& ctx) -> std::optional<at::Tensor> {
        at::Tensor rows = v.detach().flatten(2);  // [b, p, kv*d]
        if (ctx.run.step == 0) state->prefill_columns = rows.size(1);
        at::Tensor& acc = state->rows[which];
        acc = acc.defined() ? at::cat({acc, rows}, 1) : rows;
        return std::nullopt;
      };
    };
    p.handle_ = std::make_shared<HookHandle>(
        model.hooks().add_hook("blocks." + std::to_string(options.early) + ".attn.hook_v", keep(0)));
    p.handle_->merge(model.hooks().add_hook("blocks." + std::to_string(options.late) + ".attn.hook_v", keep(1)));
    return p;
  }

  void detach() {
    if (handle_) handle_->reset();
  }

  /// R_V per row over the last W processed tokens. `prefill_real[r]`: real prefilled tokens of
  /// row r; `generated[r]`: the row's generated tokens (GenerationResult::tokens). A row whose
  /// run processed fewer than W tokens gets NaN (its `short_rows` index is listed).
  RvResult result(const std::vector<int64_t>& prefill_real, const std::vector<std::vector<int64_t>>& generated,
                  std::vector<int64_t>* short_rows = nullptr) const {
    MECHLENS_CHECK(state_->rows[0].defined(), ArgumentError, "R_V probe: no forward ran while it was attached");
    const int64_t b = state_->rows[0].size(0), lp = state_->prefill_columns, total = state_->rows[0].size(1);
    MECHLENS_CHECK(static_cast<int64_t>(prefill_real.size()) == b && static_cast<int64_t>(generated.size()) == b,
                   ArgumentError, "R_V probe: {} rows recorded, {} prefill lengths and {} generations given", b,
                   prefill_real.size(), generated.size());
    const int64_t w = options_.window;
    std::vector<at::Tensor> early, late;
    std::vector<int64_t> ok_rows;
    for (int64_t r = 0; r < b; ++r) {
      const int64_t n_dec = std::min<int64_t>(static_cast<int64_t>(generated[static_cast<size_t>(r)].size()), total - lp);
      std::vector<int64_t> cols;
      for (int64_t c = lp - prefill_real[static_cast<size_t>(r)]; c < lp; ++c) cols.push_back(c);
      for (int64_t c = 0; c < n_dec; ++c) cols.push_back(lp + c);
      if (static_cast<int64_t>(cols.size()) < w) {
        if (short_rows) short_rows->push_back(r);
        continue;
      }
      at::Tensor idx = at::tensor(std::vector<int64_t>(cols.end() - w, cols.end()), at::TensorOptions().dtype(at::kLong))
                           .to(state_->rows[0].device());
      early.push_back(state_->rows[0].select(0, r).index_select(0, idx));
      late.push_back(state_->rows[1].select(0, r).index_select(0, idx));
      ok_rows.push_back(r);
    }
    RvResult out;
    auto nan = [&](int64_t n) { return at::full({n}, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(at::kDouble)); };
    out.pr_early = nan(b);
    out.pr_late = nan(b);
    out.rv = nan(b);
    if (ok_rows.empty()) return out;
    RvResult part = ::mechlens::detail::rv_from_windows(at::stack(early), at::stack(late), options_, kv_heads_);
    at::Tensor idx = at::tensor(ok_rows, at::TensorOptions().dtype(at::kLong));
    out.pr_early.index_copy_(0, idx, part.pr_early);
    out.pr_late.index_copy_(0, idx, part.pr_late);
    out.rv.index_copy_(0, idx, part.rv);
    return out;
  }

 private:
  struct State {
    at::Tensor rows[2];
    int64_t prefill_columns = 0;
  };
  RvOptions options_;
  int64_t kv_heads_ = 0;
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::shared_ptr<HookHandle> handle_;
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
/// processed fewer than W tokens), and "rv_options". The probe attaches right before the
/// target's prefill, so source prompts' forwards are not read.
inline Condition with_rv_probe(Condition inner, const RvOptions& options) {
  Condition c = inner;
  c.probe = {{"rv", {{"early", options.early}, {"late", options.late}, {"window", options.window},
                     {"centered", options.centered}, {"per_head", options.per_head}}}};
  c.prepare = [inner, options](const BatchContext& ctx) {
    auto probe = std::make_shared<std::optional<GenerationRvProbe>>();
    BatchContext observed = ctx;
    observed.before_target_prefill = [probe, &ctx, options] { probe->emplace(GenerationRvProbe::attach(*ctx.model, options)); };
    PreparedBatch p = inner.prepare(observed);
    MECHLENS_CHECK(probe->has_value(), ArgumentError,
                   "condition '{}' did not announce its target prefill, so R_V cannot be read from its run", inner.name);
    std::vector<int64_t> prefill_real;
    for (const auto& prompt : p.state.prompts) prefill_real.push_back(static_cast<int64_t>(prompt.size()) - 1);
    auto prompts = p.state.prompts;
    ModelImpl* model = ctx.model;
    auto inner_finish = p.finish;
    p.finish = [=](const GenerationResult& res, std::vector<nlohmann::json>& extra) {
      if (inner_finish) inner_finish(res, extra);
      (*probe)->detach();
      const RvResult patched = (*probe)->result(prefill_real, res.tokens);
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
