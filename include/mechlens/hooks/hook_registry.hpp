#pragma once
/// \file
/// HookRegistry: every hook point of a model (or of a user's hooked modules) by dotted name;
/// attach hooks by exact name, glob (`blocks.*.attn.hook_v`) or predicate, and get back an RAII
/// HookHandle that detaches them.

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mechlens/core/error.hpp"
#include "mechlens/core/names.hpp"
#include "mechlens/hooks/hook_point.hpp"

namespace mechlens {

namespace detail {

/// Glob match: `*` matches any run of characters (dots included), `?` one character.
inline bool glob_match(std::string_view pattern, std::string_view text) {
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1, t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

inline bool is_glob(std::string_view s) { return s.find_first_of("*?") != std::string_view::npos; }

struct RegistryCore {
  RunState run;
  std::deque<HookPoint> points;  // deque: addresses stay valid as points are added
  std::map<std::string, HookPoint*, std::less<>> by_name;
  uint64_t next_id = 1;
};

}  // namespace detail

/// Detaches its hooks when destroyed (or on reset()). Movable, not copyable. A handle that
/// outlives its registry does nothing.
class HookHandle {
 public:
  HookHandle() = default;
  HookHandle(std::weak_ptr<detail::RegistryCore> core, std::vector<std::pair<HookPoint*, uint64_t>> hooks)
      : core_(std::move(core)), hooks_(std::move(hooks)) {}
  HookHandle(HookHandle&& o) noexcept : core_(std::move(o.core_)), hooks_(std::move(o.hooks_)) { o.hooks_.clear(); }
  HookHandle& operator=(HookHandle&& o) noexcept {
    if (this != &o) {
      reset();
      core_ = std::move(o.core_);
      hooks_ = std::move(o.hooks_);
      o.hooks_.clear();
    }
    return *this;
  }
  HookHandle(const HookHandle&) = delete;
  HookHandle& operator=(const HookHandle&) = delete;
  ~HookHandle() { reset(); }

  /// Detaches now.
  void reset() {
    if (auto core = core_.lock())
      for (auto& [point, id] : hooks_) point->detach(id);
    hooks_.clear();
  }
  /// Joins another handle's hooks into this one (both are detached together).
  void merge(HookHandle&& other) {
    for (auto& h : other.hooks_) hooks_.push_back(h);
    other.hooks_.clear();
    if (core_.expired()) core_ = other.core_;
  }
  /// The hook points this handle holds hooks on, in attachment order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (auto& [point, id] : hooks_) out.push_back(point->name());
    return out;
  }
  size_t size() const { return hooks_.size(); }

 private:
  std::weak_ptr<detail::RegistryCore> core_;
  std::vector<std::pair<HookPoint*, uint64_t>> hooks_;
};

class HookRegistry {
 public:
  HookRegistry() : core_(std::make_shared<detail::RegistryCore>()) {}

  /// Creates a hook point. Names are unique; a duplicate is an ArgumentError.
  HookPoint& add_point(const std::string& name, int64_t layer = -1, std::vector<int64_t> shape = {}) {
    MECHLENS_CHECK(!core_->by_name.count(name), ArgumentError, "hook point '{}' is defined twice", name);
    core_->points.emplace_back(name, layer, std::move(shape), &core_->run);
    HookPoint& p = core_->points.back();
    core_->by_name.emplace(name, &p);
    return p;
  }

  /// All hook point names in the order they were created (the order a forward meets them).
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& p : core_->points) out.push_back(p.name());
    return out;
  }
  const std::deque<HookPoint>& points() const { return core_->points; }

  /// The hook point of that exact name, or nullptr.
  HookPoint* find(std::string_view name) const {
    auto it = core_->by_name.find(name);
    return it == core_->by_name.end() ? nullptr : it->second;
  }
  /// The hook point of that exact name; a NotFoundError suggesting the nearest names otherwise.
  HookPoint& at(const std::string& name) const {
    if (auto* p = find(name)) return *p;
    detail::raise<NotFoundError>("no hook point named '{}'; did you mean {}?", name,
                                 detail::quoted_list(detail::nearest_names(name, names())));
  }

  /// The hook points an exact name or a glob selects. An exact name that does not exist, or a glob
  /// that matches nothing, is a NotFoundError (with suggestions).
  std::vector<HookPoint*> select(const std::string& pattern) const {
    if (!detail::is_glob(pattern)) return {&at(pattern)};
    std::vector<HookPoint*> out;
    for (auto& p : core_->points)
      if (detail::glob_match(pattern, p.name())) out.push_back(const_cast<HookPoint*>(&p));
    MECHLENS_CHECK(!out.empty(), NotFoundError, "hook pattern '{}' matches no hook point; nearest names: {}",
                   pattern, detail::quoted_list(detail::nearest_names(pattern, names())));
    return out;
  }
  std::vector<HookPoint*> select(const std::function<bool(const std::string&)>& predicate) const {
    std::vector<HookPoint*> out;
    for (auto& p : core_->points)
      if (predicate(p.name())) out.push_back(const_cast<HookPoint*>(&p));
    return out;
  }

  /// Attaches `fn` to every hook point `pattern` selects (exact name or glob). The hooks stay
  /// attached until the returned handle is destroyed or reset. `steps`: the generation steps they
  /// act in (Steps, hook_point.hpp; default every forward).
  /// `capturable`: the hook may run inside decode()'s captured CUDA-graph steps (see HookFn for
  /// what that promises).
  [[nodiscard]] HookHandle add_hook(const std::string& pattern, HookFn fn, Steps steps = Steps::all(),
                                    bool capturable = false) {
    return attach(select(pattern), fn, steps, capturable);
  }
  [[nodiscard]] HookHandle add_hook(const std::function<bool(const std::string&)>& predicate, HookFn fn,
                                    Steps steps = Steps::all(), bool capturable = false) {
    return attach(select(predicate), fn, steps, capturable);
  }
  [[nodiscard]] HookHandle attach(const std::vector<HookPoint*>& points, const HookFn& fn, Steps steps = Steps::all(),
                                  bool capturable = false) {
    std::vector<std::pair<HookPoint*, uint64_t>> added;
    for (auto* p : points) {
      uint64_t id = core_->next_id++;
      p->attach(id, fn, steps, capturable);
      added.emplace_back(p, id);
    }
    return HookHandle(core_, std::move(added));
  }

  /// Detaches every hook from every point (handles then do nothing).
  void clear_hooks() {
    for (auto& p : core_->points) p.detach_all();
  }
  /// True when any hook point has a hook attached.
  bool any_attached() const {
    for (auto& p : core_->points)
      if (p.attached()) return true;
    return false;
  }

  /// The first generation step (>= 1) from which the attached hooks can run inside a captured
  /// CUDA graph: the set of hooks acting stays the same for every later step (no attached hook's
  /// steps begin or end after it), and each of them is capturable. Steps::kOpen when no such step
  /// exists (a hook that is not capturable acts in every later step). With nothing attached, 1.
  int64_t graph_steps_begin() const {
    int64_t begin = 1;
    for (auto& p : core_->points)
      p.for_each_hook([&](const Steps& s, bool) {
        begin = std::max(begin, s.begin);
        if (s.end != Steps::kOpen) begin = std::max(begin, s.end);
      });
    bool capturable = true;
    for (auto& p : core_->points)
      p.for_each_hook([&](const Steps& s, bool c) {
        if (s.contains(begin) && !c) capturable = false;
      });
    return capturable ? begin : Steps::kOpen;
  }

  RunState& run_state() { return core_->run; }
  const RunState& run_state() const { return core_->run; }

 private:
  std::shared_ptr<detail::RegistryCore> core_;
};

}  // namespace mechlens
