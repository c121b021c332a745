#pragma once
/// \file
/// Hooked<M>: wraps any LibTorch module holder (torch::nn::Linear, a user's own TORCH_MODULE,
/// a whole model) so the input and output of its forward become hook points
/// `<name>.hook_in` and `<name>.hook_out`, without editing the module.
///
///   mechlens::HookRegistry hooks;
///   mechlens::Hooked<torch::nn::Linear> proj(hooks, "proj", torch::nn::Linear(8, 4));
///   auto cache = mechlens::ActivationCache::attach(hooks, {"proj.*"});
///   auto y = proj(x);   // cache.get("proj.hook_in"), cache.get("proj.hook_out")
///
/// The library's own models are built from the same HookPoint / HookRegistry primitives, so user
/// modules and ours are hooked, cached and patched alike.

#include <string>
#include <utility>

#include "mechlens/hooks/hook_registry.hpp"

namespace mechlens {

template <class ModuleHolder>
class Hooked {
 public:
  Hooked(HookRegistry& registry, const std::string& name, ModuleHolder module, int64_t layer = -1)
      : module_(std::move(module)),
        hook_in_(&registry.add_point(name + ".hook_in", layer)),
        hook_out_(&registry.add_point(name + ".hook_out", layer)) {}

  /// hook_in(x) -> module->forward(x', rest...) -> hook_out.
  template <class... Rest>
  at::Tensor operator()(const at::Tensor& x, Rest&&... rest) {
    at::Tensor y = module_->forward((*hook_in_)(x), std::forward<Rest>(rest)...);
    return (*hook_out_)(std::move(y));
  }

  ModuleHolder& module() { return module_; }
  ModuleHolder& operator*() { return module_; }
  ModuleHolder* operator->() { return &module_; }

 private:
  ModuleHolder module_;
  HookPoint* hook_in_;
  HookPoint* hook_out_;
};

}  // namespace mechlens
