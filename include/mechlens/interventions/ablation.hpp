#pragma once
/// \file
/// Ablations: zero (set the selection to 0), mean (set it to a mean activation, e.g. over a
/// reference set: pass the mean with the activation's trailing shape, or a cache to average over
/// its batch and positions) and resample (set it to the activation of other inputs, rows drawn
/// with a seed). zero_ablate and mean_ablate with a mean tensor run inside decode()'s captured
/// CUDA-graph steps (capturable, hook_point.hpp); the cache-based ones run eagerly.

#include <cstdint>
#include <string>

#include "mechlens/core/torch_compat.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/intervention.hpp"
#include "mechlens/interventions/detail/selection_mask.hpp"
#include "mechlens/interventions/patch.hpp"

namespace mechlens {

/// Sets the selected entries to zero.
inline Intervention zero_ablate(const std::string& pattern, Selection sel = {}) {
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers))
    out |= Intervention(
        name,
        [sel](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          at::Tensor mask = detail::selection_mask(x, hook_layout(ctx.point), sel, ctx.name, &ctx.run);
          return detail::blend(x, mask, at::zeros({}, x.options()));
        },
        "zero " + name);
  return out.capturable();
}

/// Sets the selected entries to `mean`, which broadcasts over the activation's trailing dims
/// (e.g. [d_model] for a residual hook, [heads, d_head] for hook_v).
inline Intervention mean_ablate(const std::string& pattern, const at::Tensor& mean, Selection sel = {}) {
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers))
    out |= Intervention(
        name,
        [sel, held = detail::DeviceCopy(mean)](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          const at::Tensor& mean = held.source();
          HookLayout layout = hook_layout(ctx.point);
          const int64_t trailing = x.dim() - (layout.pos_dim + 1);
          MECHLENS_CHECK(mean.dim() <= trailing &&
                             x.sizes().slice(static_cast<size_t>(x.dim() - mean.dim())) == mean.sizes(),
                         ShapeError, "mean ablation at hook '{}': mean of shape {} does not broadcast over {}",
                         ctx.name, shape_str(mean.sizes()), shape_str(x.sizes()));
          return detail::blend(x, detail::selection_mask(x, layout, sel, ctx.name, &ctx.run), held.as(x.options()));
        },
        "mean-ablate " + name);
  return out.capturable();
}

/// Mean ablation with the mean taken over the batch and positions of `reference`'s activation
/// at each hook (a cache of a reference set of prompts).
inline Intervention mean_ablate(const std::string& pattern, const ActivationCache& reference_cache, Selection sel = {}) {
  const ActivationCache reference = reference_cache.snapshot();  // as patch(): a recording cache cannot change it
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers))
    out |= Intervention(
        name,
        [sel, reference](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          HookLayout layout = hook_layout(ctx.point);
          const at::Tensor& ref = reference.get(ctx.name);
          at::Tensor mean = ref.to(at::kFloat).mean(std::vector<int64_t>{layout.batch_dim, layout.pos_dim});
          return detail::blend(x, detail::selection_mask(x, layout, sel, ctx.name, &ctx.run), mean);
        },
        "mean-ablate " + name);
  return out;
}

/// Resample ablation: each target row takes the activation of a row of `other` (a cache of other
/// inputs, same positions) drawn uniformly with `seed`.
inline Intervention resample_ablate(const std::string& pattern, const ActivationCache& other_cache, uint64_t seed,
                                    Selection sel = {}) {
  const ActivationCache other = other_cache.snapshot();
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers))
    out |= Intervention(
        name,
        [sel, other, seed](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          HookLayout layout = hook_layout(ctx.point);
          const at::Tensor& src = other.get(ctx.name);
          auto gen = compat::make_generator(seed);
          at::Tensor rows = at::randint(src.size(layout.batch_dim), {x.size(layout.batch_dim)}, gen,
                                        at::TensorOptions().dtype(at::kLong));
          at::Tensor drawn = src.index_select(layout.batch_dim, rows.to(src.device()));
          return detail::patched(x, drawn, layout, sel, Align::Exact, ctx.name, &ctx.run, {},
                                 other.prompt_columns(ctx.name));
        },
        "resample " + name);
  return out;
}

}  // namespace mechlens
