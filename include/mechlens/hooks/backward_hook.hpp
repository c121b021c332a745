#pragma once
/// \file
/// Backward hooks (TransformerLens' `dir="bwd"`): a hook that sees the gradient of whatever is
/// differentiated — a metric's `backward()` — with respect to a hook point's activation, and may
/// return a replacement gradient (GradDrop, gradient masks).
///
///   auto h = mechlens::add_backward_hook(model->hooks(), "blocks.*.attn.hook_v",
///       [&](const at::Tensor& grad, const mechlens::HookContext& ctx) -> std::optional<at::Tensor> {
///         norms[ctx.name] = grad.norm().item<double>();
///         return std::nullopt;  // keep the gradient
///       });
///
/// Gradients flow only through a forward that builds an autograd graph: run it with
/// ForwardOptions::activation_gradients (the token embeddings start the graph; the weights stay
/// frozen) or use run_with_gradients (attribution/gradients.hpp). A backward hook reached in a
/// forward without gradients (generation runs without them) is an ArgumentError naming the hook.
///
/// The gradient is the one of the activation as the forward hooks attached before this one left
/// it (a patch attached earlier: the gradient at the patched value). The context's RunState is the
/// one of the forward that recorded the activation. The hook fires once per forward that reached
/// it, when backward() passes there (later layers first).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/hooks/hook_registry.hpp"

namespace mechlens {

/// Reads the gradient of a hook point's activation (same shape) and returns std::nullopt, or a
/// replacement of the same shape (converted to the gradient's dtype and device).
using BackwardHookFn = std::function<std::optional<at::Tensor>(const at::Tensor& grad, const HookContext& ctx)>;

namespace detail {
/// The forward hook that registers `fn` on the activation's gradient.
inline HookFn backward_hook_forwarder(BackwardHookFn fn) {
  auto shared = std::make_shared<BackwardHookFn>(std::move(fn));
  return [shared](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
    MECHLENS_CHECK(at::GradMode::is_enabled() && x.requires_grad(), ArgumentError,
                   "backward hook on '{}': the activation carries no gradient in this forward; run it with "
                   "ForwardOptions::activation_gradients = true (or run_with_gradients), outside a NoGradGuard "
                   "(generation, prefill and the DEC7 programs run without gradients)",
                   ctx.name);
    // The context outlives the forward: keep a copy of its run state and name.
    auto run = std::make_shared<RunState>(ctx.run);
    auto name = std::make_shared<std::string>(ctx.name);
    const int64_t layer = ctx.layer;
    const HookPoint* point = &ctx.point;
    at::Tensor hooked = x;
    hooked.register_hook([shared, run, name, layer, point](const at::Tensor& grad) -> at::Tensor {
      HookContext c{*name, layer, *run, *point};
      std::optional<at::Tensor> out = (*shared)(grad, c);
      if (!out) return at::Tensor();  // undefined: the gradient is kept
      MECHLENS_CHECK(out->defined() && out->sizes() == grad.sizes(), ShapeError,
                     "backward hook on '{}' returned shape {} but the gradient has shape {}", *name,
                     out->defined() ? shape_str(out->sizes()) : std::string("undefined"), shape_str(grad.sizes()));
      return out->to(grad.options());
    });
    return std::nullopt;
  };
}
}  // namespace detail

/// Attaches `fn` to the gradient at every hook point `pattern` selects (exact name or glob), in
/// every forward that carries gradients, until the returned handle is destroyed or reset.
[[nodiscard]] inline HookHandle add_backward_hook(HookRegistry& hooks, const std::string& pattern, BackwardHookFn fn) {
  return hooks.attach(hooks.select(pattern), detail::backward_hook_forwarder(std::move(fn)));
}

}  // namespace mechlens
