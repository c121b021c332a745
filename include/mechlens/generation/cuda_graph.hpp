#pragma once
/// \file
/// CudaGraphStep: one decoding step captured as a CUDA graph and replayed for every later token,
/// so a step costs one graph launch instead of ~1,500 LibTorch dispatches. The step is the
/// static-shape step (detail::StaticStep, models/model.hpp): keys and values are written at a device-side slot
/// index and attention covers the cache's whole capacity, masked by slot validity, so every
/// replay has the same shapes and addresses. Compiled only where LibTorch has CUDA
/// (MECHLENS_WITH_CUDA); decode() uses it on CUDA for a fused model from the step on which the
/// hooks acting no longer change and are all capturable (HookRegistry::graph_steps_begin): their
/// host code runs at capture, their device work at every replay; a hooked block takes its
/// readable path inside the graph.

#ifdef MECHLENS_WITH_CUDA

#include <optional>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

class CudaGraphStep {
 public:
  CudaGraphStep(ModelImpl& model, KVCache& cache)
      : model_(model), cache_(cache) {
    auto opts = at::TensorOptions().dtype(at::kLong).device(model.device());
    token_ = at::zeros({cache.batch(), 1}, opts);
    position_ = at::zeros({cache.batch(), 1}, opts);
    slot_ = at::zeros({1}, opts);
  }

  /// Runs one step for token / position [batch, 1] (on the device) and returns the logits
  /// [batch, vocab]. The first call runs eagerly (warming up cuBLAS and the allocator on this
  /// stream), the second captures, later ones replay. Must run on a non-default stream.
  /// `column` / `prompt_columns` (RunState) tell attached hooks which step this is: decode()
  /// replays only steps with the same acting hooks as the captured one.
  at::Tensor operator()(const at::Tensor& token, const at::Tensor& position, int64_t column = 0,
                        int64_t prompt_columns = -1, int64_t generation_step = 1) {
    column_ = column;
    prompt_columns_ = prompt_columns;
    step_ = generation_step;
    const int64_t length = cache_.length();
    MECHLENS_CHECK(length < cache_.capacity(), ArgumentError,
                   "CUDA-graph decoding: the KV cache is full ({} slots); reserve room before decoding",
                   cache_.capacity());
    token_.copy_(token);
    position_.copy_(position);
    slot_.fill_(length);
    at::Tensor logits;
    if (calls_ == 0) {
      logits = step();
    } else {
      if (!graph_) {
        graph_.emplace();
        graph_->capture_begin();
        out_ = step();
        graph_->capture_end();
      }
      graph_->replay();
      logits = out_;
    }
    ++calls_;
    cache_.set_length(length + 1, cache_.has_padding());
    return logits;
  }

 private:
  at::Tensor step() {
    ForwardOptions opt;
    opt.cache = &cache_;
    opt.positions = position_;
    opt.last_position_only = true;
    opt.step = step_;
    opt.first_column = column_;
    opt.prompt_columns = prompt_columns_;
    opt.allow_long_context = true;  // decode checked the generation's length against the context
    return detail::StaticStep::run(model_, token_, opt, slot_).select(1, 0);
  }

  ModelImpl& model_;
  KVCache& cache_;
  at::Tensor token_, position_, slot_, out_;
  std::optional<at::cuda::CUDAGraph> graph_;
  int64_t calls_ = 0;
  int64_t column_ = 0, prompt_columns_ = -1, step_ = 1;
};

}  // namespace mechlens

#endif  // MECHLENS_WITH_CUDA
