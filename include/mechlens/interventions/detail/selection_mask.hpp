#pragma once
/// \file
/// Internals shared by the interventions: turning a Selection into a boolean mask that broadcasts
/// over an activation, and expanding "blocks.*." patterns over a layer range.

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/selection.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/hooks/hook_layout.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/hook_registry.hpp"

namespace mechlens::detail {

/// The columns of a forward whose activation has `pos` positions (RunState): the model's when it
/// set them for this forward, else a plain forward of its own (columns 0..pos-1, all prompt).
struct ForwardColumns {
  int64_t first = 0;   ///< the column of position 0
  int64_t prompt = 0;  ///< the prompt's columns
  static ForwardColumns of(const RunState* run, int64_t pos) {
    if (run && run->columns == pos && run->prompt_columns != std::numeric_limits<int64_t>::max())
      return {run->first_column, run->prompt_columns};
    return {0, pos};
  }
};

/// The indices along x's positions that a Positions selection picks. Positions name the
/// prompt's columns (last(n): the prompt's last n tokens, the pending one included), wherever
/// the forward runs: the prefill holds all but the last of them, the first decoding step the
/// last. Generated tokens are picked only by Positions::all() (choose them by steps).
inline std::vector<int64_t> positions_in_forward(const Positions& positions, const ForwardColumns& cols, int64_t pos,
                                                 const std::string& where) {
  std::vector<int64_t> out;
  for (int64_t c : positions.resolve(cols.prompt, where))
    if (c >= cols.first && c < cols.first + pos) out.push_back(c - cols.first);
  return out;
}

/// A bool mask broadcastable to x (true = selected), or undefined when everything is selected.
/// Every index is checked (positions against the prompt's columns, rows and heads against x); the
/// error names the hook, x's shape and the selection. `run` places x's positions among the
/// sequence's columns (nullptr: x is a whole prompt).
inline at::Tensor selection_mask(const at::Tensor& x, const HookLayout& layout, const Selection& sel,
                                 const std::string& hook, const RunState* run = nullptr) {
  at::Tensor mask;
  auto restrict = [&](int64_t dim, const std::vector<int64_t>& idx) {
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[static_cast<size_t>(dim)] = x.size(dim);
    // Filled run by run of consecutive indices, on the device: no host tensor is uploaded, so the
    // mask can be built inside a captured CUDA graph (capturable hooks, hook_point.hpp).
    at::Tensor m = at::zeros({x.size(dim)}, at::TensorOptions().dtype(at::kBool).device(x.device()));
    std::vector<int64_t> sorted = idx;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size();) {
      size_t j = i + 1;
      while (j < sorted.size() && sorted[j] <= sorted[j - 1] + 1) ++j;
      m.narrow(0, sorted[i], sorted[j - 1] - sorted[i] + 1).fill_(true);
      i = j;
    }
    m = m.view(shape);
    mask = mask.defined() ? mask.logical_and(m) : m;
  };
  const std::string where = "hook '" + hook + "' (activation " + shape_str(x.sizes()) + ")";
  if (!sel.rows.is_all()) restrict(layout.batch_dim, sel.rows.resolve(x.size(layout.batch_dim), "batch row", where));
  if (!sel.positions.is_all()) {
    MECHLENS_CHECK(layout.pos_dim >= 0, ArgumentError, "{}: positions {} selected but it has no position dimension",
                   where, sel.positions.str());
    const int64_t pos = x.size(layout.pos_dim);
    restrict(layout.pos_dim, positions_in_forward(sel.positions, ForwardColumns::of(run, pos), pos, where));
  }
  if (!sel.heads.is_all()) {
    MECHLENS_CHECK(layout.head_dim >= 0, ArgumentError,
                   "{}: heads selected but it has no head dimension (heads exist on attn.hook_q/k/v/rot_q/rot_k/z/pattern)",
                   where);
    restrict(layout.head_dim, sel.heads.resolve(x.size(layout.head_dim), "head", where));
  }
  return mask;
}

/// A tensor handed to a hook, converted once to the activation's dtype and device and kept: a
/// capturable hook (hook_point.hpp) then uploads nothing after its first call. Copies share the
/// converted tensor.
class DeviceCopy {
 public:
  explicit DeviceCopy(at::Tensor t) : source_(std::move(t)), held_(std::make_shared<at::Tensor>()) {}
  const at::Tensor& source() const { return source_; }
  /// The tensor in `options`' dtype and device (converted on the first call with them).
  const at::Tensor& as(const at::TensorOptions& options) const {
    if (!held_->defined() || held_->scalar_type() != options.dtype().toScalarType() ||
        held_->device() != options.device())
      *held_ = source_.to(options);
    return *held_;
  }

 private:
  at::Tensor source_;
  std::shared_ptr<at::Tensor> held_;
};

/// x where the mask is false, replacement where it is true (replacement broadcasts to x).
inline at::Tensor blend(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& replacement) {
  at::Tensor r = replacement.to(x.options());
  if (!mask.defined()) return r.expand(x.sizes()).clone();
  return at::where(mask, r, x);
}

/// "blocks.*.attn.hook_v" over layers 16:32 -> "blocks.16.attn.hook_v", ... "blocks.31.attn.hook_v".
/// Without layers the pattern is returned as is.
inline std::vector<std::string> expand_layers(const std::string& pattern, const std::optional<LayerRange>& layers) {
  if (!layers) return {pattern};
  const std::string prefix = "blocks.*.";
  MECHLENS_CHECK(pattern.compare(0, prefix.size(), prefix) == 0, ArgumentError,
                 "a layer range ({}) was given for hook pattern '{}', which does not start with 'blocks.*.'",
                 layers->str(), pattern);
  MECHLENS_CHECK(layers->begin >= 0 && layers->begin < layers->end, ArgumentError,
                 "layer range {} is empty or negative (ranges are half-open: lo:hi with lo < hi)", layers->str());
  std::vector<std::string> out;
  for (int64_t l = layers->begin; l < layers->end; ++l)
    out.push_back(hook_name(l, pattern.substr(prefix.size())));
  return out;
}

}  // namespace mechlens::detail
