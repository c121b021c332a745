#pragma once
/// \file
/// R_V inside the forward pass (docs/design.md): PR of the last W rows of `hook_v` (all KV heads
/// concatenated) at a late layer over the same at an early layer, both from one forward of the
/// same prompt. Only those 2 × W rows are kept, so measuring R_V on thousands of prompts never
/// caches whole activations.
///
///   auto r = mechlens::measure_rv(*model, prompts, mechlens::default_rv_options(model->config()));
///   // r.rv[i] for prompt i (float64, CPU)
///
/// RvProbe reads the same quantity from any run — e.g. a generation under a KV splice — keeping
/// the last W rows across the run's forwards (prefill, then each decoding step).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/generation/left_pad.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/metrics/participation_ratio.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

struct RvOptions {
  int64_t early = 4;
  int64_t late = 24;
  int64_t window = 16;    ///< W: the last W token rows
  bool centered = false;  ///< subtract the mean row first (labelled "centred" in outputs)
  bool per_head = false;  ///< also PR / R_V per KV head
};

/// The study's layers: 4 and 24 for 32-layer Llama, 4 and 22 for Mistral-7B; for other depths
/// early = n/8 and late = 3n/4 (the same fractions as Llama's 4/32 and 24/32).
inline RvOptions default_rv_options(const ModelConfig& cfg) {
  RvOptions o;
  const int64_t n = cfg.n_layers();
  if (n == 32) {
    o.early = 4;
    o.late = cfg.model_type == "mistral" ? 22 : 24;
  } else {
    o.early = std::max<int64_t>(1, n / 8);
    o.late = std::min<int64_t>(n - 1, (3 * n) / 4);
  }
  return o;
}

struct RvResult {
  at::Tensor pr_early, pr_late, rv;                 ///< [batch] float64, CPU
  at::Tensor pr_early_heads, pr_late_heads, rv_heads;  ///< [batch, kv_heads] when per_head
};

namespace detail {
inline void check_rv_options(const ModelConfig& cfg, const RvOptions& o) {
  MECHLENS_CHECK(o.early >= 0 && o.early < cfg.n_layers() && o.late >= 0 && o.late < cfg.n_layers(), ArgumentError,
                 "R_V: layers early {} and late {} must lie in [0, {}) for this {}-layer model", o.early, o.late,
                 cfg.n_layers(), cfg.n_layers());
  MECHLENS_CHECK(o.window >= 2, ArgumentError, "R_V: window {} must be at least 2 rows", o.window);
}

inline RvResult rv_from_windows(const at::Tensor& early, const at::Tensor& late, const RvOptions& o, int64_t kv_heads) {
  // early, late: [batch, W, kv_heads * d_head]
  RvResult r;
  r.pr_early = metrics::participation_ratio(early, o.centered).cpu();
  r.pr_late = metrics::participation_ratio(late, o.centered).cpu();
  r.rv = r.pr_late / r.pr_early;
  if (o.per_head) {
    r.pr_early_heads = metrics::participation_ratio_per_head(early, kv_heads, o.centered).cpu();
    r.pr_late_heads = metrics::participation_ratio_per_head(late, kv_heads, o.centered).cpu();
    r.rv_heads = r.pr_late_heads / r.pr_early_heads;
  }
  return r;
}
}  // namespace detail

/// Records the last `window` rows of hook_v at the early and late layers across every forward
/// while attached (rows of a left-padded batch end at the last column, so the last W columns are
/// each row's last W tokens).
class RvProbe {
 public:
  static RvProbe attach(ModelImpl& model, const RvOptions& options) {
    detail::check_rv_options(model.config(), options);
    RvProbe probe;
    probe.options_ = options;
    probe.kv_heads_ = model.config().n_kv_heads();
    auto state = probe.state_;
    const int64_t w = options.window;
    auto keep = [state, w](int which) {
      return [state, w, which](const at::Tensor& v, const HookContext&) -> std::optional<at::Tensor> {
        at::Tensor rows = v.detach().flatten(2);  // [b, p, kv*d]
        at::Tensor& acc = state->rows[which];
        acc = acc.defined() ? at::cat({acc, rows}, 1) : rows;
        if (acc.size(1) > w) acc = acc.narrow(1, acc.size(1) - w, w).clone();
        return std::nullopt;
      };
    };
    auto& hooks = model.hooks();
    probe.handle_ = std::make_shared<HookHandle>(
        hooks.add_hook(hook_name(options.early, "attn.hook_v"), keep(0)));
    probe.handle_->merge(hooks.add_hook(hook_name(options.late, "attn.hook_v"), keep(1)));
    return probe;
  }

  /// Rows seen so far at the early layer (capped at the window).
  int64_t rows_seen() const { return state_->rows[0].defined() ? state_->rows[0].size(1) : 0; }

  /// R_V of the last W rows seen; an ArgumentError when fewer than W rows were seen.
  RvResult result() const {
    MECHLENS_CHECK(rows_seen() >= options_.window, ArgumentError,
                   "R_V: only {} token rows were seen, fewer than the window W = {} (use a longer prompt or "
                   "generation, or a smaller window)",
                   rows_seen(), options_.window);
    return detail::rv_from_windows(state_->rows[0], state_->rows[1], options_, kv_heads_);
  }
  void detach() { if (handle_) handle_->reset(); }

 private:
  struct State {
    at::Tensor rows[2];
  };
  RvOptions options_;
  int64_t kv_heads_ = 0;
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::shared_ptr<HookHandle> handle_;
};

/// R_V of each prompt from one forward (prompts left-padded into one batch). A prompt shorter
/// than the window is an error naming it.
inline RvResult measure_rv(ModelImpl& model, const std::vector<std::vector<int64_t>>& prompts, const RvOptions& options) {
  at::NoGradGuard no_grad;
  detail::check_rv_options(model.config(), options);
  MECHLENS_CHECK(!prompts.empty(), ArgumentError, "R_V: no prompts");
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    MECHLENS_CHECK(n >= options.window, ArgumentError,
                   "R_V: prompt {} has {} tokens, fewer than the window W = {} (R_V needs the last W rows)", i, n,
                   options.window);
  }
  const LeftPadded batch = left_pad(prompts);
  RvProbe probe = RvProbe::attach(model, options);
  ForwardOptions fwd;
  fwd.stop_after_layer = std::max(options.early, options.late);  // later layers cannot change R_V
  if (batch.padded()) fwd.attention_mask = batch.live;
  model.forward(batch.ids.to(model.device()), fwd);
  probe.detach();
  return probe.result();
}

/// The same for prompts as a [batch, pos] int64 tensor (every row a whole prompt). (One prompt's
/// ids: `measure_rv(model, {ids}, options)`.)
inline RvResult measure_rv(ModelImpl& model, const at::Tensor& ids, const RvOptions& options) {
  return measure_rv(model, rows_of_ids(ids, "R_V"), options);
}

}  // namespace mechlens
