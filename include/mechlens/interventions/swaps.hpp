#pragma once
/// \file
/// The study's single-pass patches, each one expression (docs/study.md):
/// V swap, Q swap, K swap (projection outputs before rotary: hook_v / hook_q / hook_k),
/// Q+K+V block swap at a layer, residual-stream patch (the decoder layer's output,
/// hook_resid_post) at one layer or a range, and a head patch on hook_z (the o_proj input).
/// Each takes the source run's ActivationCache; `source_hooks_*` name what that cache must hold.

#include <string>
#include <vector>

#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/interventions/patch.hpp"

namespace mechlens {

namespace detail {
inline std::string block_hook(int64_t layer, const std::string& site) {
  return hook_name(layer, site);
}
inline Selection with_positions(Positions p) { Selection s; s.positions = std::move(p); return s; }
}  // namespace detail

inline Intervention v_swap(const ActivationCache& source, int64_t layer, Positions positions = Positions::all(),
                           Align align = Align::Exact) {
  return patch(detail::block_hook(layer, "attn.hook_v"), source, detail::with_positions(positions), align);
}
inline Intervention q_swap(const ActivationCache& source, int64_t layer, Positions positions = Positions::all(),
                           Align align = Align::Exact) {
  return patch(detail::block_hook(layer, "attn.hook_q"), source, detail::with_positions(positions), align);
}
inline Intervention k_swap(const ActivationCache& source, int64_t layer, Positions positions = Positions::all(),
                           Align align = Align::Exact) {
  return patch(detail::block_hook(layer, "attn.hook_k"), source, detail::with_positions(positions), align);
}
/// Q, K and V of one layer together.
inline Intervention qkv_swap(const ActivationCache& source, int64_t layer, Positions positions = Positions::all(),
                             Align align = Align::Exact) {
  return q_swap(source, layer, positions, align) | k_swap(source, layer, positions, align) |
         v_swap(source, layer, positions, align);
}
/// The residual stream after each layer of `layers` (hook_resid_post).
inline Intervention resid_patch(const ActivationCache& source, LayerRange layers, Positions positions = Positions::all(),
                                Align align = Align::Exact) {
  Selection s = detail::with_positions(positions);
  s.layers = layers;
  return patch("blocks.*.hook_resid_post", source, s, align);
}
/// One query head's attention output (hook_z) at a layer.
inline Intervention head_patch(const ActivationCache& source, int64_t layer, int64_t head,
                               Positions positions = Positions::all(), Align align = Align::Exact) {
  Selection s = detail::with_positions(positions);
  s.heads = IndexSet::only({head});
  return patch(detail::block_hook(layer, "attn.hook_z"), source, s, align);
}

/// The hooks a source cache must hold for these helpers at `layer`.
inline std::vector<std::string> swap_source_hooks(int64_t layer) {
  return {detail::block_hook(layer, "attn.hook_q"), detail::block_hook(layer, "attn.hook_k"),
          detail::block_hook(layer, "attn.hook_v"), detail::block_hook(layer, "attn.hook_z"),
          detail::block_hook(layer, "hook_resid_post")};
}

}  // namespace mechlens
