#pragma once
/// \file
/// Steering and scaling: add `scale × vector` to the selected entries (the vector broadcasts over
/// the activation's trailing dims, e.g. [d_model] on the residual stream), or multiply them by a
/// factor. Both run inside decode()'s captured CUDA-graph steps (capturable, hook_point.hpp).

#include <string>

#include "mechlens/hooks/intervention.hpp"
#include "mechlens/interventions/detail/selection_mask.hpp"

namespace mechlens {

inline Intervention steer(const std::string& pattern, const at::Tensor& vector, double scale = 1.0, Selection sel = {}) {
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers))
    out |= Intervention(
        name,
        [sel, vec = detail::DeviceCopy(vector), scale](const at::Tensor& x,
                                                      const HookContext& ctx) -> std::optional<at::Tensor> {
          const at::Tensor& vector = vec.source();
          MECHLENS_CHECK(vector.dim() <= x.dim() &&
                             x.sizes().slice(static_cast<size_t>(x.dim() - vector.dim())) == vector.sizes(),
                         ShapeError, "steering at hook '{}': vector of shape {} does not broadcast over {}", ctx.name,
                         shape_str(vector.sizes()), shape_str(x.sizes()));
          at::Tensor mask = detail::selection_mask(x, hook_layout(ctx.point), sel, ctx.name, &ctx.run);
          at::Tensor shifted = x + vec.as(x.options()) * scale;
          return mask.defined() ? at::where(mask, shifted, x) : shifted;
        },
        "steer " + name + " ×" + std::to_string(scale));
  return out.capturable();
}

inline Intervention scale(const std::string& pattern, double factor, Selection sel = {}) {
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers))
    out |= Intervention(
        name,
        [sel, factor](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          at::Tensor mask = detail::selection_mask(x, hook_layout(ctx.point), sel, ctx.name, &ctx.run);
          at::Tensor scaled = x * factor;
          return mask.defined() ? at::where(mask, scaled, x) : scaled;
        },
        "scale " + name + " ×" + std::to_string(factor));
  return out.capturable();
}

}  // namespace mechlens
