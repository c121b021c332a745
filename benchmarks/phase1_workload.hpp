#pragma once
// Phase 1 of the DEC7 study as bench_study and profile_phase1 run it: 100 prompt pairs of 64
// tokens, 4 conditions (baseline, recursive, baseline + recursive KV, recursive + baseline KV),
// 50 new tokens at temperature 0.7, every generation in one batch: one prefill of the 200 prompts,
// a 400-row cache made by selecting rows, one decode.
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include <mechlens/generation/generate.hpp>
#include <mechlens/models/model.hpp>

namespace mechlens::bench {

struct Phase1 {
  std::vector<std::vector<int64_t>> base, recursive;  ///< the pairs' two prompts
  int64_t n_new = 50;
  bool cuda_graph = true;  ///< GenerationOptions::use_cuda_graph

  int64_t pairs() const { return static_cast<int64_t>(base.size()); }

  /// Runs it; `between(stage)` is called after "prefill" and "splice" (a profiler's marks).
  GenerationResult run(ModelImpl& model, const std::function<void(const char*)>& between = {}) const {
    const int64_t n = pairs();
    const at::Device dev = model.device();
    std::vector<std::vector<int64_t>> all = base;
    all.insert(all.end(), recursive.begin(), recursive.end());
    PromptState both = prefill(model, all, 0);  // rows 0..n-1 baseline, n..2n-1 recursive
    if (between) between("prefill");
    std::vector<int64_t> cache_rows, pending_rows;
    for (int64_t c = 0; c < 4; ++c)
      for (int64_t i = 0; i < n; ++i) {
        const bool rec_cache = c == 1 || c == 2, rec_pending = c == 1 || c == 3;
        cache_rows.push_back(rec_cache ? n + i : i);
        pending_rows.push_back(rec_pending ? n + i : i);
      }
    auto rows = [&](const std::vector<int64_t>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(dev); };
    PromptState run;
    const int64_t prompt_len = static_cast<int64_t>(base.front().size());
    run.cache = both.cache.select_rows(rows(cache_rows), prompt_len + n_new);
    run.pending = both.pending.index_select(0, rows(pending_rows));
    run.position = both.position.index_select(0, rows(pending_rows));
    if (between) between("splice");
    GenerationOptions g;
    g.max_new_tokens = n_new;
    g.use_model_eos = false;
    g.sampling.temperature = 0.7;
    g.sampling.seed = 1;
    g.use_cuda_graph = cuda_graph;
    return decode(model, run, g);
  }
};

}  // namespace mechlens::bench
