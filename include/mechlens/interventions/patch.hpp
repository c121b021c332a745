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
/// shapes and the selection. A source of batch 1 is broadcast over the target's rows. One
/// position map serves every row: where the source run was left-padded (rows of different
/// lengths), a patch that would put a padding activation into a real target token is an error
/// naming the row and positions (patch row by row: patch_rows, interventions/patch_rows.hpp).

#include <string>
#include <vector>

#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/intervention.hpp"
#include "mechlens/interventions/align.hpp"
#include "mechlens/interventions/detail/selection_mask.hpp"

namespace mechlens {

namespace detail {

/// Refuses a patch that would put a source activation taken at left padding into a real target
/// token: target positions [t0, t0 + m) receive source positions [s0, s0 + m) in every row, so
/// rows of different lengths can pair padding with real tokens. `source_live` / `target_live` are
/// [batch, pos] (true = real; undefined = every token real); `mask` the selection over x.
inline void check_padding(const at::Tensor& x, const at::Tensor& mask, const HookLayout& layout, int64_t t0, int64_t s0,
                          int64_t m, const at::Tensor& target_live, const at::Tensor& source_live, Align align,
                          const std::string& hook, int64_t source_pos) {
  if (!source_live.defined() || m == 0) return;  // the source held no padding
  const int64_t b = x.size(layout.batch_dim), nt = x.size(layout.pos_dim);
  auto bools = at::TensorOptions().dtype(at::kBool).device(x.device());
  at::Tensor src_real = source_live.to(x.device()).to(at::kBool).narrow(1, s0, m);
  if (src_real.size(0) != b) src_real = src_real.expand({b, m});
  at::Tensor tgt_real =
      target_live.defined() ? target_live.to(x.device()).to(at::kBool).narrow(1, t0, m) : at::ones({b, m}, bools);
  at::Tensor touched = at::ones({b, m}, bools);
  if (mask.defined()) {
    std::vector<int64_t> order{layout.batch_dim, layout.pos_dim};
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != layout.batch_dim && d != layout.pos_dim) order.push_back(d);
    // The selection mask broadcasts over x: expand it first.
    touched = mask.expand(x.sizes()).permute(order).reshape({b, nt, -1}).any(2).narrow(1, t0, m);
  }
  at::Tensor bad = touched.logical_and(tgt_real).logical_and(src_real.logical_not());
  if (!bad.any().item<bool>()) return;
  at::Tensor first = bad.nonzero().select(0, 0).cpu();
  const int64_t row = first[0].item<int64_t>(), j = first[1].item<int64_t>();
  raise<ArgumentError>(
      "patch at hook '{}': target row {} position {} (a real token) would receive source position {}, which is "
      "left padding in source row {} ({} alignment, source {} positions, target {}); rows of different lengths "
      "need a patch per row (patch_rows, interventions/patch_rows.hpp) or positions that are real in every source row",
      hook, row, t0 + j, s0 + j, source_live.size(0) == 1 ? 0 : row, align_name(align), source_pos, nt);
}

/// The source activation laid over the target's shape, and the mask of target positions it covers.
/// With `source_live` (which source positions were real tokens), a patch that would carry padding
/// into a real target token is an error (check_padding).
inline at::Tensor patched(const at::Tensor& x, const at::Tensor& src_in, const HookLayout& layout, const Selection& sel,
                          Align align, const std::string& hook, const at::Tensor& target_live = {},
                          const at::Tensor& source_live = {}) {
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
  if (nt == ns && align == Align::Exact) {
    check_padding(x, mask, layout, 0, 0, nt, target_live, source_live, align, hook, ns);
    return blend(x, mask, src);
  }
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
  check_padding(x, mask, layout, t0, s0, m, target_live, source_live, align, hook, ns);
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
/// The patch reads a snapshot of `source` taken here: a cache that is still recording (attached
/// to this model) would otherwise be overwritten by the target's own activation before the patch
/// reads it, and the patch would silently become an identity.
inline Intervention patch(const std::string& pattern, const ActivationCache& source_cache, Selection sel = {},
                          Align align = Align::Exact) {
  const ActivationCache source = source_cache.snapshot();
  Intervention out;
  for (const auto& name : detail::expand_layers(pattern, sel.layers)) {
    out |= Intervention(
        name,
        [source, sel, align](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          return detail::patched(x, source.get(ctx.name), hook_layout(ctx.point), sel, align, ctx.name, ctx.run.live,
                                 source.live(ctx.name));
        },
        "patch " + name + " positions " + sel.positions.str());
  }
  return out;
}

}  // namespace mechlens
