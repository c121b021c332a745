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
/// Steps: by default an intervention acts on plain forwards and on the prefill of a generation
/// (HookContext::run.step <= 0) and leaves the decoding steps alone; `.during_decoding()` keeps it
/// active on every step (hooks then see the step index in their context).

#include <string>
#include <utility>
#include <vector>

#include "mechlens/hooks/hook_registry.hpp"

namespace mechlens {

class Intervention {
 public:
  struct Part {
    std::string pattern;  ///< exact hook name or glob
    HookFn fn;
    std::string label;    ///< what it does, for logs and results ("v_swap L24 positions all")
  };

  Intervention() = default;
  Intervention(std::string pattern, HookFn fn, std::string label = {}) {
    parts_.push_back({std::move(pattern), std::move(fn), std::move(label)});
  }

  /// Both, `*this` first (see the file comment for the order).
  Intervention operator|(const Intervention& other) const {
    Intervention out = *this;
    out.parts_.insert(out.parts_.end(), other.parts_.begin(), other.parts_.end());
    out.all_steps_ = all_steps_ && other.all_steps_;
    return out;
  }
  Intervention& operator|=(const Intervention& other) { return *this = *this | other; }

  /// Keeps the intervention active on decoding steps too.
  Intervention during_decoding() const {
    Intervention out = *this;
    out.all_steps_ = true;
    return out;
  }
  bool all_steps() const { return all_steps_; }

  const std::vector<Part>& parts() const { return parts_; }
  bool empty() const { return parts_.empty(); }
  std::string describe() const {
    std::string s;
    for (size_t i = 0; i < parts_.size(); ++i) s += (i ? " | " : "") + (parts_[i].label.empty() ? parts_[i].pattern : parts_[i].label);
    return s;
  }

  /// Attaches every part; all are detached together when the handle goes. A pattern that matches
  /// no hook point is an error, and nothing stays attached.
  [[nodiscard]] HookHandle apply(HookRegistry& registry) const {
    HookHandle all;
    for (const auto& part : parts_) {
      HookFn fn = part.fn;
      if (!all_steps_) {
        fn = [inner = part.fn](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
          if (ctx.run.step > 0) return std::nullopt;
          return inner(x, ctx);
        };
      }
      all.merge(registry.add_hook(part.pattern, std::move(fn)));
    }
    return all;
  }

 private:
  std::vector<Part> parts_;
  bool all_steps_ = false;
};

}  // namespace mechlens
