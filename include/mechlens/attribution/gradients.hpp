#pragma once
/// \file
/// run_with_gradients: TransformerLens' run_with_cache with `incl_bwd=True` — one forward with the
/// selected activations recorded, a scalar metric of its logits, one backward, and the gradient
/// of the metric with respect to each recorded activation (same names, same shapes).
///
///   auto run = mechlens::run_with_gradients(*model, ids, mechlens::logit_difference(good, bad),
///                                           {{"blocks.*.attn.hook_v"}});
///   at::Tensor v = run.activations("v", 3), dv = run.gradients("v", 3);   // [batch, pos, kv, d]
///
/// Only activations get gradients: the forward starts its autograd graph at the token embeddings
/// (ForwardOptions::activation_gradients) and the weights are frozen for the call (load_model
/// freezes them anyway; a model built in memory gets them back afterwards), so nothing is
/// computed or left behind for the parameters. Every block runs its readable path (the fast
/// engine has no backward). Works on CPU and CUDA, in float32 and in bfloat16 / float16 (the
/// gradients are then in that dtype, as transformers' are).

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include "mechlens/attribution/metric.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

namespace detail {
/// Turns requires_grad off on every parameter that has it for the guard's life, so that a backward
/// computes nothing for the weights and leaves no .grad on them (a model built in memory, unlike
/// one from load_model, starts with trainable weights); restores them after.
class FrozenWeights {
 public:
  explicit FrozenWeights(torch::nn::Module& model) {
    for (auto& p : model.parameters())
      if (p.requires_grad() && p.is_leaf()) {
        p.set_requires_grad(false);
        changed_.push_back(p);
      }
  }
  ~FrozenWeights() {
    for (auto& p : changed_) p.set_requires_grad(true);
  }
  FrozenWeights(const FrozenWeights&) = delete;
  FrozenWeights& operator=(const FrozenWeights&) = delete;

 private:
  std::vector<at::Tensor> changed_;
};
}  // namespace detail

struct GradientRun {
  at::Tensor logits;            ///< [batch, pos, vocab] (no gradient attached)
  at::Tensor metric;            ///< the metric's value, a scalar (no gradient attached)
  ActivationCache activations;  ///< the selected activations (CacheOptions)
  ActivationCache gradients;    ///< d metric / d activation, for the same hook points
};

/// One forward of `ids` [batch, pos] with the activations `cache` selects recorded, the metric of
/// its logits, one backward, and the gradients at the same hook points. CacheOptions::accumulate
/// is refused (one forward). `opt` is the forward's options (an attention mask, positions, a
/// KV cache to append to); activation_gradients is set. Forward hooks and interventions attached
/// to the model run as usual, and the gradients are those of the intervened forward.
inline GradientRun run_with_gradients(ModelImpl& model, const at::Tensor& ids, const Metric& metric,
                                      const CacheOptions& cache = {}, ForwardOptions opt = {}) {
  MECHLENS_CHECK(!cache.accumulate, ArgumentError,
                 "run_with_gradients: CacheOptions::accumulate records several forwards; gradients come from one");
  MECHLENS_CHECK(static_cast<bool>(metric), ArgumentError, "run_with_gradients: no metric given");
  MECHLENS_CHECK(ids.dim() == 2, ShapeError, "run_with_gradients: ids have shape {}, expected [batch, pos]",
                 shape_str(ids.sizes()));
  at::AutoGradMode grad_mode(true);
  detail::FrozenWeights frozen(model);
  opt.activation_gradients = true;
  const int64_t key_pos = ids.size(1) + (opt.cache ? opt.cache->length() : 0);
  ActivationCache::check_budget(model.hooks(), cache, ids.size(0), ids.size(1), key_pos, model.dtype());
  GradientRun run;
  run.activations = ActivationCache::attach(model.hooks(), cache);
  run.gradients = ActivationCache::attach_gradients(model.hooks(), cache);
  at::Tensor value;
  try {
    at::Tensor logits = model.forward(ids, opt);
    value = metric(logits);
    MECHLENS_CHECK(value.defined() && value.numel() == 1, ShapeError,
                   "run_with_gradients: the metric returned {} values, expected one (a scalar; sum over rows)",
                   value.defined() ? value.numel() : 0);
    MECHLENS_CHECK(value.requires_grad(), ArgumentError,
                   "run_with_gradients: the metric's value carries no gradient (was it computed from the logits, "
                   "or from a detached copy?)");
    run.activations.detach();
    value.backward();
    run.logits = logits.detach();
  } catch (...) {
    run.activations.detach();
    run.gradients.detach();
    throw;
  }
  run.gradients.detach();
  run.metric = value.detach();
  return run;
}

/// The same for one prompt's token ids.
inline GradientRun run_with_gradients(ModelImpl& model, const std::vector<int64_t>& ids, const Metric& metric,
                                      const CacheOptions& cache = {}, ForwardOptions opt = {}) {
  return run_with_gradients(model, model.ids_tensor(ids), metric, cache, std::move(opt));
}

}  // namespace mechlens
