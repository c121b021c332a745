#pragma once
/// \file
/// Which dimension of a hook point's activation holds positions and which holds heads, from its
/// documented shape and TransformerLens name: attention hooks q/k/v/rot_q/rot_k/z are
/// [batch, pos, heads, d_head], hook_result [batch, pos, heads, d_model], hook_attn_scores and
/// hook_pattern [batch, heads, pos, key_pos] (their key positions are the `key_pos_dim`), the rest
/// [batch, pos, ...] without heads.

#include <algorithm>
#include <string>

#include "mechlens/hooks/hook_point.hpp"

namespace mechlens {

struct HookLayout {
  int64_t batch_dim = 0;
  int64_t pos_dim = -1;   ///< -1: the activation has no position dimension
  int64_t head_dim = -1;  ///< -1: the activation has no head dimension
  int64_t key_pos_dim = -1;  ///< -1: the activation has no key-position dimension (hook_pattern has)
};

namespace detail {
inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace detail

inline HookLayout hook_layout(const HookPoint& point) {
  HookLayout layout;
  const auto& shape = point.shape();
  auto pos = std::find(shape.begin(), shape.end(), int64_t{kDimPos});
  if (pos != shape.end()) layout.pos_dim = pos - shape.begin();
  auto key_pos = std::find(shape.begin(), shape.end(), int64_t{kDimKeyPos});
  if (key_pos != shape.end()) layout.key_pos_dim = key_pos - shape.begin();
  const std::string& n = point.name();
  for (const char* s : {"attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_z",
                        "attn.hook_result"})
    if (detail::ends_with(n, s)) layout.head_dim = 2;
  if (detail::ends_with(n, "attn.hook_pattern") || detail::ends_with(n, "attn.hook_attn_scores")) layout.head_dim = 1;
  return layout;
}

}  // namespace mechlens
