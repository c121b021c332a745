#pragma once
/// \file
/// Activation patches of left-padded batches, row by row: at each named hook, row r of the target
/// run takes row r of the source activations over the overlap of the two rows' real tokens,
/// right-aligned (the last m = min(n_src, n_tgt) tokens of each) or left-aligned. patch()
/// (patch.hpp) aligns the padded tensors as a whole, which in a batch of prompts of different
/// lengths would copy padding into real positions of some rows (patch refuses it); this does not.
///
/// Made for the prefill of a generation (it acts on step 0 and plain forwards, as every
/// Intervention does by default): the source activations are those of the source prompts'
/// prefilled tokens, so the patched prefill writes the patched keys and values into the cache.

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
/// comment). `source` must hold every name, shaped [batch or 1, pos_src, ...]; `n_source[r]` and
/// `n_target[r]` are the real tokens of row r (left padding before them).
/// Like patch(), it reads a snapshot of `source_cache` taken here.
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
          const int64_t b = x.size(0), lt = x.size(1), ls = src.size(1);
          MECHLENS_CHECK(src.size(0) == b || src.size(0) == 1, ShapeError,
                         "patch_rows at hook '{}': source batch {} vs target batch {}", name, src.size(0), b);
          MECHLENS_CHECK(static_cast<int64_t>(n_target.size()) == b, ShapeError,
                         "patch_rows at hook '{}': {} target lengths for a batch of {}", name, n_target.size(), b);
          for (int64_t d = 2; d < x.dim(); ++d)
            MECHLENS_CHECK(src.size(d) == x.size(d), ShapeError, "patch_rows at hook '{}': source {} vs target {}", name,
                           shape_str(src.sizes()), shape_str(x.sizes()));
          at::Tensor out = x.clone();
          for (int64_t r = 0; r < b; ++r) {
            const int64_t rs = src.size(0) == 1 ? 0 : r;
            const int64_t nt = n_target[static_cast<size_t>(r)], ns = n_source[static_cast<size_t>(rs)];
            MECHLENS_CHECK(nt <= lt && ns <= ls, ShapeError,
                           "patch_rows at hook '{}': row {} has {} target / {} source tokens in tensors of {} / {} positions",
                           name, r, nt, ns, lt, ls);
            const int64_t m = std::min(nt, ns);
            if (m == 0) continue;
            const int64_t t0 = align == Align::Left ? lt - nt : lt - m;
            const int64_t s0 = align == Align::Left ? ls - ns : ls - m;
            out.select(0, r).narrow(0, t0, m).copy_(src.select(0, rs).narrow(0, s0, m));
          }
          return out;
        },
        "row patch " + name + " (" + align_name(align) + "-aligned)");
  }
  return out;
}

}  // namespace mechlens
