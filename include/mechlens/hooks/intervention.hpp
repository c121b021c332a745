#pragma once
/// \file
/// Intervention: a value made of (hook pattern, hook function) parts that composes with `|` and
/// is applied for a scope:
///
///   auto scope = model->apply(v_swap(source, 24) | steer("blocks.10.hook_resid_post", dir, 4.0));
///   model->forward(ids);   // both active
///   // scope destroyed: both detached
///
/// Order (tested): in `a | b` the parts of `a` are attached first, so at a hook point both touch,
/// `a` runs first and `b` sees `a`'s result. Parts at different hook points run in forward order.
///
/// Scope: which tokens an intervention touches when it stays applied through a generation
/// (docs/design.md, "Intervention scopes"). By default, the whole prompt: every prompt token in a
/// plain forward or a prefill, and the pending last token, which the first decoding step feeds;
/// generated tokens are left alone. `.scope(Scope::Generated)` touches only generated tokens,
/// `.scope(Scope::Both)` all of them, `.at_steps(a, b)` the generation steps [a, b) (step 0 is the
/// prompt, step g the g-th generated token: nnsight's `iter[a:b]`). Hooks see the step and the
/// column of each token in their context (RunState). Scopes belong to each part: in `a | b` each
/// keeps its own, and a scope set on `a | b` applies to both.
///
/// Capturable: steer, scale, zero_ablate and mean_ablate with a mean tensor run inside decode()'s
/// captured CUDA-graph steps (see HookFn, hook_point.hpp); `.capturable()` declares a hand-made
/// intervention so. Other parts make the steps they act in run eagerly.

#include <string>
#include <utility>
#include <vector>

#include "mechlens/hooks/hook_registry.hpp"

namespace mechlens {

/// The named scopes (Steps for the general case).
enum class Scope { Prompt, Generated, Both };

inline Steps steps_of(Scope s) {
  switch (s) {
    case Scope::Prompt: return Steps::prompt();
    case Scope::Generated: return Steps::generated();
    case Scope::Both: return Steps::all();
  }
  return Steps::prompt();
}

class Intervention {
 public:
  struct Part {
    std::string pattern;  ///< exact hook name or glob
    HookFn fn;
    std::string label;    ///< what it does, for logs and results ("v_swap L24 positions all")
    Steps steps = Steps::prompt();  ///< the generation steps it acts in
    bool capturable = false;        ///< may run inside a captured CUDA graph (HookFn)
  };

  Intervention() = default;
  Intervention(std::string pattern, HookFn fn, std::string label = {}) {
    parts_.push_back({std::move(pattern), std::move(fn), std::move(label), Steps::prompt(), false});
  }

  /// Both, `*this` first (see the file comment for the order).
  Intervention operator|(const Intervention& other) const {
    Intervention out = *this;
    out.parts_.insert(out.parts_.end(), other.parts_.begin(), other.parts_.end());
    return out;
  }
  Intervention& operator|=(const Intervention& other) { return *this = *this | other; }

  /// Every part acts in this scope.
  Intervention scope(Scope s) const { return at_steps(steps_of(s)); }
  /// Every part acts in generation steps [begin, end) (Steps::kOpen: no end).
  Intervention at_steps(int64_t begin, int64_t end = Steps::kOpen) const { return at_steps(Steps::range(begin, end)); }
  Intervention at_steps(Steps steps) const {
    MECHLENS_CHECK(steps.begin >= 0 && steps.begin < steps.end, ArgumentError,
                   "Intervention::at_steps({}, {}): expected 0 <= begin < end (step 0 is the prompt, g the g-th "
                   "generated token)",
                   steps.begin, steps.end);
    Intervention out = *this;
    for (auto& p : out.parts_) p.steps = steps;
    return out;
  }
  /// The prompt and every generated token: scope(Scope::Both).
  Intervention during_decoding() const { return scope(Scope::Both); }

  /// Every part declared capturable (or not): it may run inside decode()'s captured CUDA-graph
  /// steps. Declare only hooks that keep HookFn's promise (hook_point.hpp).
  Intervention capturable(bool yes = true) const {
    Intervention out = *this;
    for (auto& p : out.parts_) p.capturable = yes;
    return out;
  }
  /// Whether every part is capturable.
  bool is_capturable() const {
    for (const auto& p : parts_)
      if (!p.capturable) return false;
    return true;
  }

  const std::vector<Part>& parts() const { return parts_; }
  bool empty() const { return parts_.empty(); }
  /// The scope every part shares; "mixed" when the parts differ.
  std::string scope_str() const {
    if (parts_.empty()) return Steps::prompt().str();
    for (const auto& p : parts_)
      if (p.steps != parts_.front().steps) return "mixed";
    return parts_.front().steps.str();
  }
  std::string describe() const {
    std::string s;
    for (size_t i = 0; i < parts_.size(); ++i) {
      const Part& p = parts_[i];
      s += (i ? " | " : "") + (p.label.empty() ? p.pattern : p.label);
      if (p.steps != Steps::prompt()) s += " [" + p.steps.str() + "]";
    }
    return s;
  }

  /// Attaches every part; all are detached together when the handle goes. A pattern that matches
  /// no hook point is an error, and nothing stays attached.
  [[nodiscard]] HookHandle apply(HookRegistry& registry) const {
    HookHandle all;
    for (const auto& part : parts_) all.merge(registry.add_hook(part.pattern, part.fn, part.steps, part.capturable));
    return all;
  }

 private:
  std::vector<Part> parts_;
};

}  // namespace mechlens
