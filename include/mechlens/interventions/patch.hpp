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
/// shapes and the selection. During a generation a patch acts in its scope (by default the whole
/// prompt: the prefill and the pending last token; Intervention::scope) and each token takes the
/// source position of its column, not of its place in that forward; generated tokens take the
/// source's generated tokens (a source cache accumulated over a generation). A source of batch 1 is broadcast over the target's rows. One
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

/// Where each of x's positions takes its source activation from: x position `target[i]` receives
/// source position `source[i]`. Positions with no source under the alignment are absent.
struct PatchMap {
  std::vector<int64_t> target, source;
};

/// The column map of a patch (docs/design.md, "Intervention scopes"). x covers columns
/// [cols.first, cols.first + pos) of a target sequence whose prompt has cols.prompt columns; the
/// source holds `ns` positions, the first `source_prompt` of them its prompt (the rest, if any,
/// tokens it generated). Prompt columns are aligned as `align` says (exact: equal prompts; left:
/// the first m = min of each; right: the last m); the g-th generated target token takes the
/// source's g-th generated token. A selected column whose source position the cache lacks is an
/// error naming it.
inline PatchMap patch_map(const ForwardColumns& cols, int64_t pos, int64_t ns, int64_t source_prompt, Align align,
                          bool all_positions, const std::vector<int64_t>& selected, const std::string& hook,
                          const std::string& shapes) {
  const int64_t nt = cols.prompt, nsp = source_prompt;
  MECHLENS_CHECK(align != Align::Exact || nt == nsp, ShapeError,
                 "patch at hook '{}': the source prompt has {} positions and the target {} ({}); choose an alignment "
                 "(left or right)",
                 hook, nsp, nt, shapes);
  const int64_t m = std::min(nt, nsp);
  PatchMap map;
  std::vector<uint8_t> chosen(static_cast<size_t>(pos), all_positions ? 1 : 0);
  for (int64_t j : selected) chosen[static_cast<size_t>(j)] = 1;
  for (int64_t j = 0; j < pos; ++j) {
    const int64_t c = cols.first + j;
    int64_t s = -1;
    if (c < nt) {
      if (align == Align::Right) s = c >= nt - m ? c - nt + nsp : -1;
      else s = c < m ? c : -1;
      MECHLENS_CHECK(s >= 0 || !chosen[static_cast<size_t>(j)] || all_positions, ShapeError,
                     "patch at hook '{}': target position {} has no source position under {} alignment ({}; overlap: "
                     "target positions {}:{})",
                     hook, c, align_name(align), shapes, align == Align::Right ? nt - m : 0,
                     align == Align::Right ? nt : m);
    } else {
      s = nsp + (c - nt);
    }
    if (s < 0) continue;
    MECHLENS_CHECK(s < ns || !chosen[static_cast<size_t>(j)], ShapeError,
                   "patch at hook '{}': {} {} (column {}) takes source position {}, but the source cache holds "
                   "positions 0..{} only ({} of them its prompt; {}); {}",
                   hook, c < nt ? "target prompt position" : "generated token", c < nt ? c : c - nt + 1, c, s, ns - 1,
                   nsp, shapes,
                   c < nt ? "record the source over its whole prompt, the last token included (run_with_cache), "
                            "not a prefill, which leaves the last token pending"
                          : "generated tokens take the source's generated tokens: record the source's generation with "
                            "CacheOptions::accumulate, or scope the patch to the prompt");
    if (s < ns) {
      map.target.push_back(j);
      map.source.push_back(s);
    }
  }
  return map;
}

/// Refuses a patch that would put a source activation taken at left padding into a real target
/// token. `source_live` / `target_live` are [batch, pos] (true = real; undefined = every token
/// real); `mask` the selection over x.
inline void check_padding(const at::Tensor& x, const at::Tensor& mask, const HookLayout& layout, const PatchMap& map,
                          const at::Tensor& target_live, const at::Tensor& source_live, Align align,
                          const std::string& hook, int64_t source_pos, const ForwardColumns& cols) {
  if (!source_live.defined() || map.target.empty()) return;  // the source held no padding
  const int64_t b = x.size(layout.batch_dim), nt = x.size(layout.pos_dim);
  const int64_t m = static_cast<int64_t>(map.target.size());
  auto longs = at::TensorOptions().dtype(at::kLong);
  at::Tensor tgt_idx = at::tensor(map.target, longs).to(x.device()), src_idx = at::tensor(map.source, longs).to(x.device());
  auto bools = at::TensorOptions().dtype(at::kBool).device(x.device());
  at::Tensor src_real = source_live.to(x.device()).to(at::kBool).index_select(1, src_idx);
  if (src_real.size(0) != b) src_real = src_real.expand({b, m});
  at::Tensor tgt_real = target_live.defined() && target_live.size(1) == nt
                            ? target_live.to(x.device()).to(at::kBool).index_select(1, tgt_idx)
                            : at::ones({b, m}, bools);
  at::Tensor touched = at::ones({b, m}, bools);
  if (mask.defined()) {
    std::vector<int64_t> order{layout.batch_dim, layout.pos_dim};
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != layout.batch_dim && d != layout.pos_dim) order.push_back(d);
    // The selection mask broadcasts over x: expand it first.
    touched = mask.expand(x.sizes()).permute(order).reshape({b, nt, -1}).any(2).index_select(1, tgt_idx);
  }
  at::Tensor bad = touched.logical_and(tgt_real).logical_and(src_real.logical_not());
  if (!bad.any().item<bool>()) return;
  at::Tensor first = bad.nonzero().select(0, 0).cpu();
  const int64_t row = first[0].item<int64_t>(), j = first[1].item<int64_t>();
  raise<ArgumentError>(
      "patch at hook '{}': target row {} position {} (a real token) would receive source position {}, which is "
      "left padding in source row {} ({} alignment, source {} positions, target prompt {}); rows of different "
      "lengths need a patch per row (patch_rows, interventions/patch_rows.hpp) or positions that are real in every "
      "source row",
      hook, row, cols.first + map.target[static_cast<size_t>(j)], map.source[static_cast<size_t>(j)],
      source_live.size(0) == 1 ? 0 : row, align_name(align), source_pos, cols.prompt);
}

/// The source activation laid over the target's (see patch_map for which position takes which),
/// where the selection picks. `run` places x among the target's columns (nullptr: x is a whole
/// prompt); `source_prompt` is how many of the source's positions are its prompt (-1: all).
/// With `source_live` (which source positions were real tokens), a patch that would carry padding
/// into a real target token is an error (check_padding).
inline at::Tensor patched(const at::Tensor& x, const at::Tensor& src_in, const HookLayout& layout, const Selection& sel,
                          Align align, const std::string& hook, const RunState* run = nullptr,
                          const at::Tensor& source_live = {}, int64_t source_prompt = -1) {
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
  at::Tensor mask = selection_mask(x, layout, sel, hook, run);
  if (layout.pos_dim < 0) return blend(x, mask, src);
  const int64_t nt = x.size(layout.pos_dim), ns = src.size(layout.pos_dim);
  const ForwardColumns cols = ForwardColumns::of(run, nt);
  const int64_t nsp = source_prompt >= 0 ? source_prompt : ns;
  const std::string shapes = "source " + shape_str(src.sizes()) + ", target " + shape_str(x.sizes()) + " at columns " +
                             std::to_string(cols.first) + ":" + std::to_string(cols.first + nt) + " of a " +
                             std::to_string(cols.prompt) + "-position prompt, positions " + sel.positions.str();
  const std::vector<int64_t> selected =
      sel.positions.is_all() ? std::vector<int64_t>{}
                             : positions_in_forward(sel.positions, cols, nt, "hook '" + hook + "'");
  const PatchMap map = patch_map(cols, nt, ns, nsp, align, sel.positions.is_all(), selected, hook, shapes);
  check_padding(x, mask, layout, map, run ? run->live : at::Tensor(), source_live, align, hook, ns, cols);
  if (map.target.empty()) return x;
  auto longs = at::TensorOptions().dtype(at::kLong);
  at::Tensor over;
  at::Tensor src_part;
  const bool contiguous = map.source.back() - map.source.front() + 1 == static_cast<int64_t>(map.source.size());
  src_part = contiguous ? src.narrow(layout.pos_dim, map.source.front(), static_cast<int64_t>(map.source.size()))
                        : src.index_select(layout.pos_dim, at::tensor(map.source, longs).to(src.device()));
  if (src.size(layout.batch_dim) != x.size(layout.batch_dim)) {
    auto sizes = x.sizes().vec();
    sizes[static_cast<size_t>(layout.pos_dim)] = src_part.size(layout.pos_dim);
    src_part = src_part.expand(sizes);
  }
  over = x.clone();
  if (map.target.back() - map.target.front() + 1 == static_cast<int64_t>(map.target.size()))
    over.narrow(layout.pos_dim, map.target.front(), static_cast<int64_t>(map.target.size())).copy_(src_part);
  else
    over.index_copy_(layout.pos_dim, at::tensor(map.target, longs).to(x.device()), src_part.to(x.options()));
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
          return detail::patched(x, source.get(ctx.name), hook_layout(ctx.point), sel, align, ctx.name, &ctx.run,
                                 source.live(ctx.name), source.prompt_columns(ctx.name));
        },
        "patch " + name + " positions " + sel.positions.str());
  }
  return out;
}

}  // namespace mechlens
