#pragma once
/// \file
/// Decoding from a prompt state: the pending token first, then each sampled token, with every
/// token kept on the device (no host round trip per token; the stop check syncs once every
/// `sync_every` steps) and the KV cache written in place (reserved by prefill()).
///
///   auto state = mechlens::prefill(*model, prompt_ids, /*extra_capacity=*/50);
///   mechlens::SpliceOptions splice;                      // optional edits
///   splice.layers = mechlens::LayerRange{16, 32};
///   mechlens::splice_kv(state.cache, source.cache, splice);
///   mechlens::GenerationOptions gen;
///   gen.max_new_tokens = 50;
///   auto out = mechlens::decode(*model, state, gen);
///
/// Interventions applied to the model stay active, each in its scope (hooks/intervention.hpp): by
/// default the whole prompt, so the first step (the pending token) runs them too; those scoped to
/// generated tokens act on the later steps. On CUDA, with a fused model, the steps from the first
/// one after which the acting hooks no longer change, and are all capturable (steer, scale,
/// zero_ablate, mean_ablate, an ActivationCache with CacheOptions::reserve; hook_point.hpp), run as
/// one captured CUDA graph replayed per token; the steps before it run eagerly.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/generation/cuda_graph.hpp"
#include "mechlens/generation/prompt_state.hpp"
#include "mechlens/generation/sampler.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

struct GenerationOptions {
  int64_t max_new_tokens = 50;
  SamplingOptions sampling;  ///< default: greedy
  /// Tokens that end a row; default (empty + use_model_eos): the model's eos ids (config.json
  /// and generation_config.json, e.g. Llama-3-Instruct's <|eot_id|>).
  std::vector<int64_t> stop_tokens;
  bool use_model_eos = true;
  /// Record each step's top-1 minus top-2 logit margin (for tests against references).
  bool record_margins = false;
  /// How often (in steps) the host checks whether every row has stopped.
  int64_t sync_every = 8;
  /// On CUDA, capture the decoding step as a CUDA graph and replay it (for a fused model, over the
  /// steps where every acting hook is capturable: see decode(); results equal the eager steps').
  bool use_cuda_graph = true;
  /// Decode past the model's context (max_position_embeddings): refused by default, since
  /// positions there were never trained (ForwardOptions::allow_long_context).
  bool allow_long_context = false;
};

namespace detail {
/// Refuses a generation whose prompt (`held` cache slots + the pending token) plus new tokens
/// exceeds the model's context, before anything is allocated for it.
inline void check_generation_length(const ModelImpl& model, int64_t held, const GenerationOptions& options,
                                    const char* who) {
  MECHLENS_CHECK(options.max_new_tokens >= 0, ArgumentError, "{}: max_new_tokens {} is negative", who,
                 options.max_new_tokens);
  if (options.allow_long_context) return;
  const int64_t context = model.config().max_position_embeddings;
  // Compared without overflow: max_new_tokens may be anything up to 2^63 - 1.
  MECHLENS_CHECK(options.max_new_tokens <= context && held + options.max_new_tokens <= context, ArgumentError,
                 "{}: a prompt of {} tokens + max_new_tokens {} exceeds the model's context of {} "
                 "(max_position_embeddings in config.json); lower max_new_tokens or set allow_long_context",
                 who, held + 1, options.max_new_tokens, context);
}
}  // namespace detail

struct GenerationResult {
  /// Per row: the new tokens, up to and including a stop token (none after it).
  std::vector<std::vector<int64_t>> tokens;
  /// Per row: whether it ended on a stop token.
  std::vector<bool> stopped;
  /// Per row and step: top-1 minus top-2 logit (only with record_margins).
  std::vector<std::vector<double>> margins;
  /// Whether the decoding steps ran as a captured CUDA graph (see GenerationOptions::use_cuda_graph:
  /// CUDA build and device, a fused model on one device, more than one step from the first one the graph can
  /// take: HookRegistry::graph_steps_begin).
  bool used_cuda_graph = false;
};

/// Decodes up to max_new_tokens tokens per row from `state` (which it advances).
inline GenerationResult decode(ModelImpl& model, PromptState& state, const GenerationOptions& options) {
  at::NoGradGuard no_grad;
  detail::check_generation_length(model, state.cache.length(), options, "decode");
  const int64_t b = state.batch(), steps = options.max_new_tokens;
  const auto dev = model.device();
  std::vector<int64_t> stops = options.stop_tokens;
  if (options.use_model_eos)
    for (int64_t id : model.config().eos_token_ids) stops.push_back(id);
  at::Tensor stop_ids = at::tensor(stops.empty() ? std::vector<int64_t>{-1} : stops,
                                   at::TensorOptions().dtype(at::kLong)).to(dev);

  Sampler sampler(options.sampling, dev);
  state.cache.reserve(steps);  // no growth inside the loop
  auto long_opts = at::TensorOptions().dtype(at::kLong).device(dev);
  at::Tensor out = at::full({b, std::max<int64_t>(steps, 1)}, -1, long_opts);
  at::Tensor margins = options.record_margins
                           ? at::zeros({b, std::max<int64_t>(steps, 1)}, at::TensorOptions().dtype(at::kDouble).device(dev))
                           : at::Tensor();
  at::Tensor done = at::zeros({b}, at::TensorOptions().dtype(at::kBool).device(dev));
  at::Tensor token = state.pending.view({b, 1});
  at::Tensor position = state.position.view({b, 1});
  int64_t taken = 0;
  bool used_cuda_graph = false;
  // Columns (RunState): the prompt's P columns end with the pending token, fed first.
  if (state.prompt_columns < 0) state.prompt_columns = state.cache.length() + 1 - state.decoded;
  const int64_t prompt_columns = state.prompt_columns;
  auto column_of = [&](int64_t step) { return prompt_columns - 1 + state.decoded + step; };
  // Steps before the first one the graph can take run eagerly: from graph_steps_begin on, the
  // hooks acting stay the same and each is capturable, so one captured step serves every later
  // token (hook_registry.hpp).
  const int64_t graph_begin = model.hooks().graph_steps_begin();
  int64_t eager_steps = 0;
  while (eager_steps < steps && column_of(eager_steps) - prompt_columns + 1 < graph_begin) ++eager_steps;

  // One step: logits [b, vocab] for `token` at `position`, appending to the cache.
  auto eager_step = [&](int64_t step) {
    ForwardOptions opt;
    opt.cache = &state.cache;
    opt.positions = position;
    opt.step = state.decoded + step + 1;
    opt.first_column = column_of(step);
    opt.prompt_columns = prompt_columns;
    opt.last_position_only = true;
    opt.allow_long_context = options.allow_long_context;
    return model.forward(token, opt).select(1, 0);
  };
  auto loop = [&](const std::function<at::Tensor(int64_t)>& run_step) {
    for (int64_t step = 0; step < steps; ++step) {
      at::Tensor logits = run_step(step);
      if (options.record_margins) {
        at::Tensor top2 = std::get<0>(logits.to(at::kDouble).topk(2, -1));
        margins.select(1, step).copy_(top2.select(1, 0) - top2.select(1, 1));
      }
      at::Tensor next = sampler(logits);
      next = at::where(done, at::full_like(next, -1), next);
      out.select(1, step).copy_(next);
      done = done.logical_or(at::isin(next, stop_ids));
      token = next.clamp_min(0).view({b, 1});
      position = position + 1;
      taken = step + 1;
      if ((step + 1) % options.sync_every == 0 && done.all().item<bool>()) break;
    }
  };
#ifdef MECHLENS_WITH_CUDA
  if (options.use_cuda_graph && dev.is_cuda() && model.fused() && model.on_one_device() && steps - eager_steps > 1) {
    // Graphs are captured on a side stream; the whole loop runs there, joined at both ends.
    c10::cuda::getCurrentCUDAStream().synchronize();
    {
      c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, dev.index());
      c10::cuda::CUDAStreamGuard guard(stream);
      CudaGraphStep graph_step(model, state.cache);
      used_cuda_graph = true;
      loop([&](int64_t step) {
        if (step < eager_steps) return eager_step(step);
        return graph_step(token, position, column_of(step), prompt_columns, state.decoded + step + 1);
      });
      stream.synchronize();
    }
  } else {
    loop(eager_step);
  }
#else
  loop(eager_step);
#endif
  state.pending = token.view({b});
  state.position = position.view({b});
  state.decoded += taken;

  GenerationResult result;
  result.used_cuda_graph = used_cuda_graph;
  at::Tensor host = out.cpu().contiguous();
  at::Tensor host_margins = options.record_margins ? margins.cpu().contiguous() : at::Tensor();
  const int64_t width = host.size(1);
  const int64_t* ids = host.data_ptr<int64_t>();
  const double* mg = options.record_margins ? host_margins.data_ptr<double>() : nullptr;
  for (int64_t r = 0; r < b; ++r) {
    std::vector<int64_t> row;
    std::vector<double> row_margins;
    bool stopped = false;
    for (int64_t t = 0; t < taken; ++t) {
      int64_t id = ids[r * width + t];
      if (id < 0) break;
      row.push_back(id);
      if (options.record_margins) row_margins.push_back(mg[r * width + t]);
      if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
        stopped = true;
        break;
      }
    }
    result.tokens.push_back(std::move(row));
    result.stopped.push_back(stopped);
    result.margins.push_back(std::move(row_margins));
  }
  return result;
}

/// prefill + decode for a batch of prompts.
inline GenerationResult generate(ModelImpl& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& options) {
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()) - 1);
  detail::check_generation_length(model, longest, options, "generate");
  PromptState state = prefill(model, prompts, options.max_new_tokens, nullptr, options.allow_long_context);
  return decode(model, state, options);
}

}  // namespace mechlens
