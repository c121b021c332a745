#pragma once
/// \file
/// HookPoint: a named site in a forward pass where user code can read or replace an activation.
/// With nothing attached a hook point is one branch on an empty vector: it costs nothing
/// measurable (benchmarks/bench_hooks.cpp measures it).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"

namespace mechlens {

/// What the model is doing while hooks run. Set by the model before each forward.
struct RunState {
  /// -1: a plain forward; 0: prefill of a generation; k >= 1: the k-th decoding step.
  int64_t step = -1;
  /// [batch, pos] absolute position of each token of this forward (int64).
  at::Tensor positions;
  /// [batch, pos] true for real tokens, false for left padding; undefined when nothing is padded.
  at::Tensor live;
};

class HookPoint;

/// What a hook is told besides the activation.
struct HookContext {
  const std::string& name;  ///< the hook point's full name, e.g. "blocks.3.attn.hook_v"
  int64_t layer;            ///< its layer, or -1 for hooks outside the blocks
  const RunState& run;      ///< step, positions, live rows and positions
  const HookPoint& point;   ///< the hook point itself (documented shape, layout)
};

/// A hook reads the activation and returns std::nullopt, or returns a replacement of the same
/// shape (dtype and device are converted to the activation's).
using HookFn = std::function<std::optional<at::Tensor>(const at::Tensor& activation, const HookContext& ctx)>;

/// Symbolic dimensions in a hook point's documented shape.
enum : int64_t { kDimBatch = -1, kDimPos = -2, kDimKeyPos = -3 };

class HookPoint {
 public:
  /// `shape` documents the activation's shape; kDimBatch / kDimPos / kDimKeyPos stand for the
  /// batch size, the number of query positions and the number of key positions.
  HookPoint(std::string name, int64_t layer, std::vector<int64_t> shape, const RunState* run)
      : name_(std::move(name)), layer_(layer), shape_(std::move(shape)), run_(run) {}

  /// Runs the attached hooks in the order they were attached; each sees the previous one's result.
  at::Tensor operator()(at::Tensor x) const {
    if (hooks_.empty()) return x;
    return run_hooks(std::move(x));
  }

  const std::string& name() const { return name_; }
  int64_t layer() const { return layer_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  bool active() const { return !hooks_.empty(); }
  size_t hook_count() const { return hooks_.size(); }

  /// The documented shape with the symbolic dimensions filled in.
  std::vector<int64_t> concrete_shape(int64_t batch, int64_t pos, int64_t key_pos) const {
    std::vector<int64_t> s = shape_;
    for (auto& d : s) d = d == kDimBatch ? batch : d == kDimPos ? pos : d == kDimKeyPos ? key_pos : d;
    return s;
  }

  /// Low-level: prefer HookRegistry::add_hook, which returns a handle that detaches.
  void attach(uint64_t id, HookFn fn) { hooks_.emplace_back(id, std::move(fn)); }
  void detach(uint64_t id) {
    for (auto it = hooks_.begin(); it != hooks_.end(); ++it)
      if (it->first == id) { hooks_.erase(it); return; }
  }
  void detach_all() { hooks_.clear(); }

 private:
  at::Tensor run_hooks(at::Tensor x) const {
    HookContext ctx{name_, layer_, *run_, *this};
    // Copy: a hook may detach itself (or others) while running.
    auto hooks = hooks_;
    for (auto& [id, fn] : hooks) {
      std::optional<at::Tensor> out = fn(x, ctx);
      if (!out) continue;
      MECHLENS_CHECK(out->defined(), ShapeError, "hook on '{}' returned an undefined tensor", name_);
      MECHLENS_CHECK(out->sizes() == x.sizes(), ShapeError,
                     "hook on '{}' returned shape {} but the activation has shape {}", name_,
                     shape_str(out->sizes()), shape_str(x.sizes()));
      x = (out->scalar_type() == x.scalar_type() && out->device() == x.device()) ? *out
                                                                                : out->to(x.options());
    }
    return x;
  }

  std::string name_;
  int64_t layer_;
  std::vector<int64_t> shape_;
  const RunState* run_;
  std::vector<std::pair<uint64_t, HookFn>> hooks_;
};

}  // namespace mechlens
