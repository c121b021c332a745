#pragma once
/// \file
/// Activation patching: in the target run, replace the named activation at the selected rows,
/// positions and heads with the source's, taken from an ActivationCache of the source run.
///
///   auto [src_logits, src] = model->run_with_cache(source_ids, {{"blocks.3.attn.hook_v"}});
///   auto scope = model->apply(patch("blocks.3.attn.hook_v", src, Selection().at_positions(Positions::last(4))));
///
/// Prompts of different lengths need an explicit alignment (left: the first m = min(n_src,
/// n_tgt) positions of each; right: the last m); anything else is an error naming the hook, both
/// shapes and the selection. A source of batch 1 is broadcast over the target's rows.

#include <string>

#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/intervention.hpp"
#include "mechlens/interventions/detail/selection_mask.hpp"

namespace mechlens {

enum class Align { Exact, Left, Right };

inline std::string align_name(Align a) { return a == Align::Left ? "left" : a == Align::Right ? "right" : "exact"; }

inline Align parse_align(const std::string& s) {
  if (s == "left") return Align::Left;
  if (s == "right") return Align::Right;
  if (s == "exact" || s.empty()) return Align::Exact;
  detail::raise<ArgumentError>("unknown alignment '{}' (expected left or right)", s);
}

namespace detail {

/// The source activation laid over the target's shape, and the mask of target positions it covers.
inline at::Tensor patched(const at::Tensor& x, const at::Tensor& src_in, const HookLayout& layout, const Selection& sel,
                          Align align, const std::string& hook) {
  at::Tensor src = src_in.to(x.device());
  MECHLENS_CHECK(src.dim() == x.dim(), ShapeError, "patch at hook '{}': source activation {} vs target {}", hook,
                 shape_str(src.sizes()), shape_str(x.sizes()));
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d == layout.batch_dim || d == layout.pos_dim) continue;
    MECHLENS_CHECK(src.size(d) == x.size(d), ShapeError,
                   "patch at hook '{}': source activation {} does not match target {} in dimension {}", hook,
                   shape_str(src.sizes()), shape_str(x.sizes()), d);
  }
  MECHLENS_CHECK(src.size(layout.batch_dim) == x.size(layout.batch_dim) || src.size(layout.batch_dim) == 1, ShapeError,
                 "patch at hook '{}': source batch {} vs target batch {} (expected equal, or a source of 1)", hook,
                 src.size(layout.batch_dim), x.size(layout.batch_dim));
  at::Tensor mask = selection_mask(x, layout, sel, hook);
  if (layout.pos_dim < 0) return blend(x, mask, src);
  const int64_t nt = x.size(layout.pos_dim), ns = src.size(layout.pos_dim);
  if (nt == ns && align == Align::Exact) return blend(x, mask, src);
  MECHLENS_CHECK(align != Align::Exact, ShapeError,
                 "patch at hook '{}': the source has {} positions and the target {} (shapes {} vs {}, positions {}); "
                 "choose an alignment (left or right)",
                 hook, ns, nt, shape_str(src.sizes()), shape_str(x.sizes()), sel.positions.str());
  const int64_t m = std::min(nt, ns);
  const int64_t t0 = align == Align::Left ? 0 : nt - m, s0 = align == Align::Left ? 0 : ns - m;
  // With "all" positions the alignment's overlap is patched; positions named explicitly must
  // each have a source position under this alignment.
  if (!sel.positions.is_all())
    for (int64_t p : sel.positions.resolve(nt, "hook '" + hook + "'"))
    MECHLENS_CHECK(p >= t0 && p < t0 + m, ShapeError,
                   "patch at hook '{}': target position {} has no source position under {} alignment (source {}, "
                   "target {}, overlap target positions {}:{})",
                   hook, p, align_name(align), shape_str(src.sizes()), shape_str(x.sizes()), t0, t0 + m);
  at::Tensor over = x.clone();
  at::Tensor src_part = src.narrow(layout.pos_dim, s0, m);
  if (src.size(layout.batch_dim) != x.size(layout.batch_dim)) {
    auto sizes = over.narrow(layout.pos_dim, t0, m).sizes().vec();
    src_part = src_part.expand(sizes);
  }
  over.narrow(layout.pos_dim, t0, m).copy_(src_part);
  return mask.defined() ? at::where(mask, over, x) : over;
}

}  // namespace detail

/// Replaces `pattern`'s activation (exact name or "blocks.*.<site>" with sel.layers) by the
/// source's from `source` (which must hold every hook the pattern names).
inline Intervention patch(const std::string& pattern, const ActivationCache& source, Selection sel = {},
                          Align align = Align::Exact) {
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers)) {
    out |= Intervention(
        name,
        [source, sel, align](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          return detail::patched(x, source.get(ctx.name), hook_layout(ctx.point), sel, align, ctx.name);
        },
        "patch " + name + " positions " + sel.positions.str());
  }
  return out;
}

}  // namespace mechlens
