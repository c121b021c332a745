#pragma once
/// \file
/// Activation patches of left-padded batches, row by row: at each named hook, row r of the target
/// run takes row r of the source activations over the overlap of the two rows' real tokens,
/// right-aligned (the last m = min(n_src, n_tgt) tokens of each) or left-aligned. patch()
/// (patch.hpp) aligns the padded tensors as a whole, which in a batch of prompts of different
/// lengths would copy padding into real positions of some rows (patch refuses it); this does not.
///
/// Like every Intervention it acts on the whole prompt by default: in a generation, the prefill
/// and the pending last token (the first decoding step), each token taking the source position
/// of its column; the source cache is a run over the source prompts, last token included
/// (run_with_cache over the left-padded prompts). Scoped to generated tokens too, the g-th
/// generated token of every row takes the source's g-th (a cache accumulated over the source's
/// generation).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/hook_layout.hpp"
#include "mechlens/hooks/intervention.hpp"
#include "mechlens/interventions/patch.hpp"

namespace mechlens {

/// Replaces, at each hook of `names`, the target's activation by the source's (see the file
/// comment). `source` must hold every name, shaped [batch or 1, source columns, ...];
/// `n_source[r]` and `n_target[r]` count the real tokens of row r's whole prompt, its last token
/// included (left padding before them). Like patch(), it reads a snapshot of `source_cache` taken
/// here.
inline Intervention patch_rows(const std::vector<std::string>& names, const ActivationCache& source_cache,
                              std::vector<int64_t> n_source, std::vector<int64_t> n_target, Align align = Align::Exact) {
  const ActivationCache source = source_cache.snapshot();
  MECHLENS_CHECK(align != Align::Exact || n_source == n_target, ArgumentError,
                 "patch_rows: source and target prompts differ in length; choose an alignment (left or right)");
  Intervention out;
  for (const auto& name : names) {
    MECHLENS_CHECK(source.contains(name), NotFoundError, "patch_rows: the source cache holds no '{}'", name);
    out |= Intervention(
        name,
        [source, name, n_source, n_target, align](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          const HookLayout layout = hook_layout(ctx.point);
          MECHLENS_CHECK(layout.pos_dim == 1 && layout.batch_dim == 0, ShapeError,
                         "patch_rows at hook '{}': expected [batch, pos, ...] activations", name);
          const at::Tensor src = source.get(name).to(x.device(), x.scalar_type());
          const int64_t b = x.size(0), px = x.size(1), ls = src.size(1);
          MECHLENS_CHECK(src.size(0) == b || src.size(0) == 1, ShapeError,
                         "patch_rows at hook '{}': source batch {} vs target batch {}", name, src.size(0), b);
          MECHLENS_CHECK(static_cast<int64_t>(n_target.size()) == b, ShapeError,
                         "patch_rows at hook '{}': {} target lengths for a batch of {}", name, n_target.size(), b);
          MECHLENS_CHECK(static_cast<int64_t>(n_source.size()) == src.size(0), ShapeError,
                         "patch_rows at hook '{}': {} source lengths for a source batch of {}", name, n_source.size(),
                         src.size(0));
          for (int64_t d = 2; d < x.dim(); ++d)
            MECHLENS_CHECK(src.size(d) == x.size(d), ShapeError, "patch_rows at hook '{}': source {} vs target {}", name,
                           shape_str(src.sizes()), shape_str(x.sizes()));
          const detail::ForwardColumns cols = detail::ForwardColumns::of(&ctx.run, px);
          const int64_t c0 = cols.first, c1 = cols.first + px, nt_cols = cols.prompt;
          const int64_t ns_cols = source.prompt_columns(name) >= 0 ? source.prompt_columns(name) : ls;
          // The lengths must describe this run: row r's real prompt tokens are columns
          // [nt_cols - n_target[r], nt_cols), so this forward holds that many of them.
          std::vector<int64_t> real;
          if (ctx.run.live.defined() && ctx.run.live.size(1) == px) {
            at::Tensor counts = ctx.run.live.to(at::kLong).sum(1).cpu();
            for (int64_t r = 0; r < b; ++r) real.push_back(counts[r].item<int64_t>());
          }
          for (int64_t r = 0; r < b; ++r) {
            const int64_t nt = n_target[static_cast<size_t>(r)];
            const int64_t lo = std::max(nt_cols - nt, c0), hi = std::min(nt_cols, c1);
            const int64_t expect = std::max<int64_t>(hi - lo, 0) + std::max<int64_t>(c1 - std::max(c0, nt_cols), 0);
            const int64_t have = real.empty() ? px : real[static_cast<size_t>(r)];
            MECHLENS_CHECK(nt >= 1 && nt <= nt_cols && have == expect, ArgumentError,
                           "patch_rows at hook '{}': target row {} is given {} prompt tokens, but this forward (columns "
                           "{}:{} of a {}-column prompt) holds {} real tokens of it, where those lengths give {}; "
                           "n_target counts each row's whole prompt, its last (pending) token included",
                           name, r, nt, c0, c1, nt_cols, have, expect);
          }
          at::Tensor out = x.clone();
          for (int64_t r = 0; r < b; ++r) {
            const int64_t rs = src.size(0) == 1 ? 0 : r;
            const int64_t nt = n_target[static_cast<size_t>(r)], ns = n_source[static_cast<size_t>(rs)];
            MECHLENS_CHECK(ns >= 1 && ns <= ns_cols && ns_cols <= ls, ShapeError,
                           "patch_rows at hook '{}': source row {} has {} tokens, its prompt {} columns, the source "
                           "tensor {} positions (record the source over its whole prompts, last token included)",
                           name, rs, ns, ns_cols, ls);
            const int64_t m = std::min(nt, ns);
            // Prompt columns [t0, t0 + m) take source columns from s0 (see the file comment).
            const int64_t t0 = align == Align::Right ? nt_cols - m : nt_cols - nt;
            const int64_t s0 = align == Align::Right ? ns_cols - m : ns_cols - ns;
            const int64_t lo = std::max(t0, c0), hi = std::min(t0 + m, c1);
            if (hi > lo) out.select(0, r).narrow(0, lo - c0, hi - lo).copy_(src.select(0, rs).narrow(0, s0 + lo - t0, hi - lo));
            // Generated columns: the source's generated tokens, in order.
            const int64_t g0 = std::max(c0, nt_cols);
            if (c1 > g0) {
              MECHLENS_CHECK(ns_cols + (c1 - nt_cols) <= ls, ShapeError,
                             "patch_rows at hook '{}': generated tokens {}..{} take the source's generated tokens, but "
                             "the source cache holds {} positions, {} of them its prompt (record the source's "
                             "generation with CacheOptions::accumulate, or scope the patch to the prompt)",
                             name, g0 - nt_cols + 1, c1 - nt_cols, ls, ns_cols);
              out.select(0, r).narrow(0, g0 - c0, c1 - g0).copy_(src.select(0, rs).narrow(0, ns_cols + g0 - nt_cols, c1 - g0));
            }
          }
          return out;
        },
        "row patch " + name + " (" + align_name(align) + "-aligned)");
  }
  return out;
}

}  // namespace mechlens
