#pragma once
/// \file
/// Left-padding token rows into one batch: the one way mechlens lines up prompts of different
/// lengths (prefill, the single-pass patches' source runs, R_V). Each row's tokens end at the last
/// column; the padding before them is masked, and a padded forward counts each row's positions
/// from its own first token, so every row gets what it would get alone.
///
///   auto b = mechlens::left_pad({{5, 6, 7}, {8}});
///   // b.ids  = [[5, 6, 7], [0, 0, 8]]   b.live = [[1, 1, 1], [0, 0, 1]] (bool)   b.lengths = {3, 1}
///   mechlens::ForwardOptions opt;
///   if (b.padded()) opt.attention_mask = b.live;
///   model->forward(b.ids, opt);

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"

namespace mechlens {

struct LeftPadded {
  at::Tensor ids;                ///< [batch, longest] int64 (CPU): pad_id, then each row's tokens
  at::Tensor live;               ///< [batch, longest] bool (CPU): true at each row's real tokens
  std::vector<int64_t> lengths;  ///< each row's real tokens
  int64_t longest = 0;           ///< the longest row (the batch's width)

  /// Whether some row is shorter than the longest (a forward then needs `live` as its mask).
  bool padded() const {
    return std::any_of(lengths.begin(), lengths.end(), [&](int64_t n) { return n < longest; });
  }
};

/// The rows of a [batch, pos] int64 tensor of token ids (every row a whole prompt, no padding),
/// for the functions that take rows; `who` names the caller in the error for another shape or dtype.
inline std::vector<std::vector<int64_t>> rows_of_ids(const at::Tensor& ids, const char* who) {
  MECHLENS_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, ArgumentError,
                 "{}: ids must be a [batch, pos] int64 tensor, got {} {}", who, shape_str(ids.sizes()),
                 c10::toString(ids.scalar_type()));
  const at::Tensor host = ids.cpu().contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> rows;
  for (int64_t r = 0; r < host.size(0); ++r) rows.emplace_back(p + r * host.size(1), p + (r + 1) * host.size(1));
  return rows;
}

/// Left-pads `rows` with `pad_id` (see the file comment). Rows may be empty (all padding); an
/// empty list of rows is an ArgumentError.
inline LeftPadded left_pad(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id = 0) {
  MECHLENS_CHECK(!rows.empty(), ArgumentError, "left_pad: no rows to pad");
  LeftPadded out;
  for (const auto& r : rows) {
    out.lengths.push_back(static_cast<int64_t>(r.size()));
    out.longest = std::max<int64_t>(out.longest, static_cast<int64_t>(r.size()));
  }
  const auto b = static_cast<int64_t>(rows.size());
  std::vector<int64_t> ids(static_cast<size_t>(b * out.longest), pad_id);
  std::vector<uint8_t> live(static_cast<size_t>(b * out.longest), 0);
  for (int64_t r = 0; r < b; ++r) {
    const auto& row = rows[static_cast<size_t>(r)];
    const auto n = static_cast<int64_t>(row.size());
    for (int64_t i = 0; i < n; ++i) {
      const auto at = static_cast<size_t>(r * out.longest + out.longest - n + i);
      ids[at] = row[static_cast<size_t>(i)];
      live[at] = 1;
    }
  }
  out.ids = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({b, out.longest});
  out.live = at::tensor(std::vector<int64_t>(live.begin(), live.end()), at::TensorOptions().dtype(at::kLong))
                 .view({b, out.longest})
                 .to(at::kBool);
  return out;
}

}  // namespace mechlens
