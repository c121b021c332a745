#pragma once
/// \file
/// Hook point names from a layer and a site, so that nobody writes
/// `"blocks." + std::to_string(L) + ...` by hand (TransformerLens' `get_act_name`):
///
///     hook_name(24, "attn.hook_v")   // "blocks.24.attn.hook_v"
///     hook_name(24, "v")             // the same: TransformerLens' short name
///
/// The short names are TransformerLens': q, k, v, z, rot_q, rot_k, attn_scores, pattern, result,
/// attn_out, resid_pre, resid_mid, resid_post, mlp_out, pre, pre_linear, post (mlp.hook_*), ln1 and
/// ln2 (ln1.hook_normalized, ln2.hook_normalized). docs/design.md
/// lists every hook point with its shape.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "mechlens/core/error.hpp"

namespace mechlens {

namespace detail {
/// TransformerLens' short names and the block sites they stand for.
inline const std::array<std::pair<std::string_view, std::string_view>, 19>& hook_short_names() {
  static const std::array<std::pair<std::string_view, std::string_view>, 19> names{{
      {"q", "attn.hook_q"},
      {"k", "attn.hook_k"},
      {"v", "attn.hook_v"},
      {"z", "attn.hook_z"},
      {"rot_q", "attn.hook_rot_q"},
      {"rot_k", "attn.hook_rot_k"},
      {"attn_scores", "attn.hook_attn_scores"},
      {"pattern", "attn.hook_pattern"},
      {"result", "attn.hook_result"},
      {"attn_out", "hook_attn_out"},
      {"resid_pre", "hook_resid_pre"},
      {"resid_mid", "hook_resid_mid"},
      {"resid_post", "hook_resid_post"},
      {"mlp_out", "hook_mlp_out"},
      {"ln1", "ln1.hook_normalized"},
      {"ln2", "ln2.hook_normalized"},
      {"pre", "mlp.hook_pre"},
      {"pre_linear", "mlp.hook_pre_linear"},
      {"post", "mlp.hook_post"},
  }};
  return names;
}
}  // namespace detail

/// "blocks.{layer}.{site}", where `site` is a block site ("attn.hook_v", "hook_resid_post") or one
/// of TransformerLens' short names ("v", "resid_post"). ArgumentError for a negative layer or an
/// empty site; the model's hook registry names the nearest valid names of a misspelt one.
inline std::string hook_name(int64_t layer, std::string_view site) {
  MECHLENS_CHECK(layer >= 0, ArgumentError, "hook_name: layer {} is negative (site '{}')", layer, site);
  MECHLENS_CHECK(!site.empty(), ArgumentError, "hook_name: no site given for layer {}", layer);
  for (const auto& [short_name, full] : detail::hook_short_names())
    if (site == short_name) return "blocks." + std::to_string(layer) + "." + std::string(full);
  return "blocks." + std::to_string(layer) + "." + std::string(site);
}

}  // namespace mechlens
