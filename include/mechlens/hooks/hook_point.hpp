#pragma once
/// \file
/// HookPoint: a named site in a forward pass where user code can read or replace an activation.
/// With nothing attached a hook point is one branch on an empty vector: it costs nothing
/// measurable (benchmarks/bench_hooks.cpp measures it).

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"

namespace mechlens {

/// What the model is doing while hooks run. Set by the model before each forward.
///
/// Columns: the tokens of a sequence in order, prompt first (left padding included, a KV prefix
/// excluded), then the generated tokens. A prompt of P columns is prefilled in columns 0..P-2;
/// its last token (pending) is column P-1, fed by the first decoding step; the g-th generated
/// token is column P-1+g. A plain forward is a prompt of its own length.
struct RunState {
  /// -1: a plain forward; 0: prefill of a generation; k >= 1: the k-th decoding step.
  int64_t step = -1;
  /// [batch, pos] absolute position of each token of this forward (int64).
  at::Tensor positions;
  /// [batch, pos] true for real tokens, false for left padding; undefined when nothing is padded.
  at::Tensor live;
  /// The column of this forward's first token.
  int64_t first_column = 0;
  /// The prompt's columns (pending token included); outside a generation, every column is prompt.
  int64_t prompt_columns = std::numeric_limits<int64_t>::max();
  /// This forward's tokens.
  int64_t columns = 0;

  /// The generation step a column belongs to: 0 for every prompt column (the pending token
  /// too), g for the g-th generated token (see Steps).
  int64_t step_of(int64_t column) const { return column < prompt_columns ? 0 : column - prompt_columns + 1; }
  int64_t first_step() const { return step_of(first_column); }
  int64_t last_step() const { return step_of(first_column + std::max<int64_t>(columns, 1) - 1); }
};

/// The generation steps a hook acts in, half-open [begin, end): step 0 is the whole prompt (a
/// plain forward, a prefill and the pending last token), step g >= 1 the forward over the g-th
/// generated token (nnsight's `iter[g]`; transformers' g-th generate() forward counted from 0).
struct Steps {
  static constexpr int64_t kOpen = std::numeric_limits<int64_t>::max();
  int64_t begin = 0;
  int64_t end = kOpen;

  /// Every prompt token, the pending one included (the default scope of an intervention).
  static Steps prompt() { return {0, 1}; }
  /// Generated tokens only.
  static Steps generated() { return {1, kOpen}; }
  /// Prompt and generated tokens.
  static Steps all() { return {0, kOpen}; }
  /// Steps [begin, end); end = Steps::kOpen for no end.
  static Steps range(int64_t begin, int64_t end = kOpen) { return {begin, end}; }

  bool contains(int64_t step) const { return step >= begin && step < end; }
  bool overlaps(int64_t first, int64_t last) const { return first < end && last >= begin; }
  bool covers(int64_t first, int64_t last) const { return first >= begin && last < end; }
  bool operator==(const Steps& o) const { return begin == o.begin && end == o.end; }
  bool operator!=(const Steps& o) const { return !(*this == o); }
  /// "prompt", "generated", "both" or "steps a:b".
  std::string str() const {
    if (*this == prompt()) return "prompt";
    if (*this == generated()) return "generated";
    if (*this == all()) return "both";
    return "steps " + std::to_string(begin) + ":" + (end == kOpen ? std::string() : std::to_string(end));
  }
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
///
/// Capturable hooks: decode() replays its steps as a captured CUDA graph (generation/cuda_graph.hpp),
/// where a hook's host code runs once, at capture, and only its device work is replayed for every
/// later token. A hook declared capturable (HookRegistry::add_hook's `capturable`,
/// Intervention::capturable) promises that this is the same computation: for every generated token
/// it acts on it launches the same device work on tensors of the same shapes, and it does no host
/// work that must happen per token — no .item() or other synchronisation, no tensor made from host
/// data (at::tensor, a CPU tensor's .to(cuda)) after its first call, no host-side state it updates.
/// steer, scale, zero_ablate, mean_ablate (with a mean tensor) and an ActivationCache with
/// CacheOptions::reserve are capturable; other hooks make the steps they act in run eagerly.
using HookFn = std::function<std::optional<at::Tensor>(const at::Tensor& activation, const HookContext& ctx)>;

/// Symbolic dimensions in a hook point's documented shape.
enum : int64_t { kDimBatch = -1, kDimPos = -2, kDimKeyPos = -3 };

class HookPoint {
 public:
  /// `shape` documents the activation's shape; kDimBatch / kDimPos / kDimKeyPos stand for the
  /// batch size, the number of query positions and the number of key positions.
  HookPoint(std::string name, int64_t layer, std::vector<int64_t> shape, const RunState* run)
      : name_(std::move(name)), layer_(layer), shape_(std::move(shape)), run_(run) {}

  /// Runs the attached hooks whose steps this forward reaches, in the order they were attached;
  /// each sees the previous one's result. A hook whose steps cover only some of this forward's
  /// columns changes only those (the others keep the value it was given).
  at::Tensor operator()(at::Tensor x) const {
    if (hooks_.empty()) return x;
    return run_hooks(std::move(x));
  }

  const std::string& name() const { return name_; }
  int64_t layer() const { return layer_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  /// Whether a hook will run in the current forward (one is attached and its steps reach this
  /// forward's columns; RunState).
  bool active() const {
    if (hooks_.empty()) return false;
    const int64_t first = run_->first_step(), last = run_->last_step();
    for (const auto& h : hooks_)
      if (h.steps.overlaps(first, last)) return true;
    return false;
  }
  /// Whether any hook is attached, whatever its steps.
  bool attached() const { return !hooks_.empty(); }
  /// Whether this point's activation has a key-position dimension (hook_attn_scores,
  /// hook_pattern): in a captured step it spans the cache's whole capacity, not its length, so no
  /// hook here runs inside a graph.
  bool has_key_positions() const { return std::find(shape_.begin(), shape_.end(), kDimKeyPos) != shape_.end(); }
  size_t hook_count() const { return hooks_.size(); }
  /// Calls f(steps, capturable) for each attached hook (capturable: declared so, and not on a
  /// point with key positions).
  template <class F>
  void for_each_hook(F&& f) const {
    for (const auto& h : hooks_) f(h.steps, h.capturable && !has_key_positions());
  }

  /// The documented shape with the symbolic dimensions filled in.
  std::vector<int64_t> concrete_shape(int64_t batch, int64_t pos, int64_t key_pos) const {
    std::vector<int64_t> s = shape_;
    for (auto& d : s) d = d == kDimBatch ? batch : d == kDimPos ? pos : d == kDimKeyPos ? key_pos : d;
    return s;
  }

  /// Low-level: prefer HookRegistry::add_hook, which returns a handle that detaches.
  void attach(uint64_t id, HookFn fn, Steps steps = Steps::all(), bool capturable = false) {
    MECHLENS_CHECK(steps.begin >= 0 && steps.begin < steps.end, ArgumentError,
                   "hook on '{}': steps {}:{} are empty or negative (expected 0 <= begin < end)", name_, steps.begin,
                   steps.end);
    hooks_.push_back({id, std::move(fn), steps, capturable});
  }
  void detach(uint64_t id) {
    for (auto it = hooks_.begin(); it != hooks_.end(); ++it)
      if (it->id == id) { hooks_.erase(it); return; }
  }
  void detach_all() { hooks_.clear(); }

 private:
  struct Attached {
    uint64_t id;
    HookFn fn;
    Steps steps;
    bool capturable;
  };

  at::Tensor run_hooks(at::Tensor x) const {
    HookContext ctx{name_, layer_, *run_, *this};
    const int64_t first = run_->first_step(), last = run_->last_step();
    // Copy: a hook may detach itself (or others) while running.
    auto hooks = hooks_;
    for (auto& h : hooks) {
      if (!h.steps.overlaps(first, last)) continue;
      const at::Tensor before = x;
      std::optional<at::Tensor> out = h.fn(x, ctx);
      if (!out) continue;
      MECHLENS_CHECK(out->defined(), ShapeError, "hook on '{}' returned an undefined tensor", name_);
      MECHLENS_CHECK(out->sizes() == x.sizes(), ShapeError,
                     "hook on '{}' returned shape {} but the activation has shape {}", name_,
                     shape_str(out->sizes()), shape_str(x.sizes()));
      x = (out->scalar_type() == x.scalar_type() && out->device() == x.device()) ? *out
                                                                                : out->to(x.options());
      if (!h.steps.covers(first, last)) x = keep_outside(before, x, h.steps);
    }
    return x;
  }

  /// `changed` at the columns whose step is in `steps`, `before` elsewhere (along positions).
  at::Tensor keep_outside(const at::Tensor& before, const at::Tensor& changed, const Steps& steps) const {
    int64_t pos_dim = -1;
    for (size_t d = 0; d < shape_.size(); ++d)
      if (shape_[d] == kDimPos) pos_dim = static_cast<int64_t>(d);
    MECHLENS_CHECK(pos_dim >= 0 && pos_dim < changed.dim() && changed.size(pos_dim) == run_->columns, ShapeError,
                   "hook on '{}' acts in steps {} of a forward over columns {}:{}, but its activation {} has no "
                   "position dimension of {} to split them",
                   name_, steps.str(), run_->first_column, run_->first_column + run_->columns,
                   shape_str(changed.sizes()), run_->columns);
    std::vector<uint8_t> in(static_cast<size_t>(run_->columns));
    for (int64_t j = 0; j < run_->columns; ++j) in[static_cast<size_t>(j)] = steps.contains(run_->step_of(run_->first_column + j));
    std::vector<int64_t> view(static_cast<size_t>(changed.dim()), 1);
    view[static_cast<size_t>(pos_dim)] = run_->columns;
    at::Tensor mask = at::tensor(std::vector<int64_t>(in.begin(), in.end()), at::TensorOptions().dtype(at::kLong))
                          .to(changed.device()).to(at::kBool).view(view);
    return at::where(mask, changed, before);
  }

  std::string name_;
  int64_t layer_;
  std::vector<int64_t> shape_;
  const RunState* run_;
  std::vector<Attached> hooks_;
};

}  // namespace mechlens
