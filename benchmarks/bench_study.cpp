// The DEC7 study's workloads at Llama-3-8B shape (issue 10), measured — never asserted. Random
// bf16 weights are built in memory (no download); benchmarks/hf_baseline.py runs the same
// workloads with transformers and benchmarks/compare.py prints one table with ratios.
//
//   bench_study --device cuda --out mechlens.json          # Llama-3-8B shape, bf16
//   bench_study --tiny --device cpu                         # a small model, to try it anywhere
//
// Workloads (each repeated, median reported):
//   decode_splice   batch-1 decode of 128 new tokens after a 64-token prompt whose KV cache has
//                   layers 16:32 spliced from another 64-token prompt (greedy)
//   decode_plain    the same without the splice
//   decode_splice_eager / decode_splice_aten: decode_splice without the CUDA graph / with the
//                   ATen kernels instead of the fused ones (what each of the two buys)
//   decode_steer / decode_ablate / decode_cache: decode_plain with an intervention at every
//                   step, prompt and generated tokens: a steering vector added to layer 16's
//                   hook_resid_post, query head 3 of layer 16's hook_z zeroed, an activation cache
//                   of layer 16's hook_resid_post with a reserve (all capturable: the steps replay
//                   the CUDA graph); decode_steer_eager: the steering with eager steps
//   phase1          100 prompt pairs of 64 tokens, 4 conditions (baseline, recursive, baseline +
//                   recursive KV, recursive + baseline KV), 50 new tokens at temperature 0.7, all
//                   400 generations in one batch
//   rv              R_V (layers 4 and 24, W = 16) over 1,000 prompts of 64 tokens
//   forward_*       forward throughput, batch 32 x 64 tokens: plain, a no-op hook attached at
//                   every hook point but hook_pattern, an activation cache of every hook_v, a V
//                   swap at one layer, and plain again (the spread of the two plain runs is the
//                   measurement's noise)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mechlens/core/dtype.hpp>
#include <mechlens/experiments/rv.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/hooks/hook_name.hpp>
#include <mechlens/interventions/ablation.hpp>
#include <mechlens/interventions/kv_splice.hpp>
#include <mechlens/interventions/steering.hpp>
#include <mechlens/interventions/swaps.hpp>
#include <mechlens/kernels/fused_ops.hpp>
#include <mechlens/models/model.hpp>

#include "bench_model.hpp"
#include "bench_util.hpp"
#include "phase1_workload.hpp"

using namespace mechlens;
using namespace mechlens::bench;

namespace {

ModelConfig tiny_shape() {
  ModelConfig c = bench::llama3_8b_shape();
  c.vocab_size = 512;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  return c;
}


}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mechlens study workloads at Llama-3-8B shape (bf16, random weights)"};
  std::string device = "cuda", dtype = "bfloat16", out_path;
  bool tiny = false;
  int repeats = 3;
  std::vector<std::string> only;
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--dtype", dtype, "model dtype")->capture_default_str();
  app.add_flag("--tiny", tiny, "a small 32-layer model instead of Llama-3-8B shape (smoke test)");
  app.add_option("--repeats", repeats, "repetitions per workload (median reported)")->capture_default_str();
  app.add_option("--only", only, "run only these workloads (decode_splice, decode_plain, decode_splice_eager, decode_splice_aten, "
                 "decode_steer, decode_ablate, decode_cache, decode_steer_eager, phase1, rv, forward)");
  app.add_option("--out", out_path, "write the measurements as JSON here");
  CLI11_PARSE(app, argc, argv);
  auto want = [&](const std::string& w) { return only.empty() || std::find(only.begin(), only.end(), w) != only.end(); };

  at::NoGradGuard no_grad;
  const at::Device dev = parse_device(device);
  const ModelConfig cfg = tiny ? tiny_shape() : bench::llama3_8b_shape();
  auto options = at::TensorOptions().dtype(parse_dtype(dtype)).device(dev);
  Model model(cfg, options);
  bench::randomize(*model);
  int64_t weight_bytes = 0;
  for (auto& p : model->parameters()) weight_bytes += p.numel() * static_cast<int64_t>(p.element_size());
  const int64_t kv_bytes_per_token = 2 * cfg.n_layers() * cfg.n_kv_heads() * cfg.d_head() *
                                     static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
  Recorder rec;
  rec.add("model", "weight_bytes", static_cast<double>(weight_bytes) / (1ull << 30), "GiB",
          tiny ? "tiny shape" : "Llama-3-8B shape");
  rec.add("model", "kv_bytes_per_token", static_cast<double>(kv_bytes_per_token) / 1024.0, "KiB");

  const int64_t prompt_len = 64;
#ifdef MECHLENS_WITH_CUDA
  rec.add("model", "cuda_graph_decoding", dev.is_cuda() ? 1.0 : 0.0, "", "1 = decode steps replay a CUDA graph");
#endif
  // --- batch-1 decode with and without a KV splice of layers 16:32 ----------------------------
  const char* decode_variants[] = {"decode_splice", "decode_plain",  "decode_splice_eager", "decode_splice_aten",
                                   "decode_steer",  "decode_ablate", "decode_cache",        "decode_steer_eager"};
  for (int variant = 0; variant < 8; ++variant) {
    const std::string name = decode_variants[variant];
    if (!want(name)) continue;
    const bool splice = name.rfind("decode_splice", 0) == 0, aten = name == "decode_splice_aten";
    const bool eager = name == "decode_splice_eager" || name == "decode_steer_eager";
    // Interventions at every step (prompt and generated tokens), at layer 16.
    const int64_t mid = cfg.n_layers() / 2;
    HookHandle hooks;
    std::optional<ActivationCache> cache;
    if (name.rfind("decode_steer", 0) == 0)
      hooks = model->apply(steer(hook_name(mid, "hook_resid_post"), at::randn({cfg.d_model()}, options) * 0.02, 4.0)
                               .scope(Scope::Both));
    if (name == "decode_ablate")
      hooks = model->apply(zero_ablate(hook_name(mid, "attn.hook_z"), Selection().at_heads({3})).scope(Scope::Both));
    CacheOptions cache_options;
    cache_options.names = {hook_name(mid, "hook_resid_post")};
    cache_options.accumulate = true;
    cache_options.reserve = prompt_len + 128;
    kernels::set_fused_enabled(!aten);  // decode_splice_aten: the ATen kernels instead of the fused ones
    auto prompts = random_prompts(2, prompt_len, cfg.vocab_size, 7);
    GenerationOptions g;
    g.max_new_tokens = 128;
    g.use_model_eos = false;
    g.use_cuda_graph = !eager;
    std::vector<double> times;
    double peak = 0;
    for (int r = 0; r < repeats + 1; ++r) {  // the first run warms up (and captures nothing twice)
      reset_peak(dev);
      PromptState target = prefill(*model, prompts[0], g.max_new_tokens);
      if (splice) {
        PromptState source = prefill(*model, prompts[1], 0);
        SpliceOptions s;
        s.layers = LayerRange{16, 32};
        splice_kv(target.cache, source.cache, s);
      }
      if (name == "decode_cache") {  // a fresh cache per generation, recording from the prefill on
        cache.reset();
        cache = ActivationCache::attach(model->hooks(), cache_options);
        target = prefill(*model, prompts[0], g.max_new_tokens);
      }
      bool graph = false;
      double t = seconds_of(dev, [&] { graph = decode(*model, target, g).used_cuda_graph; });
      if (r > 0) times.push_back(t);
      peak = std::max(peak, peak_gib(dev));
      if (r == 0) rec.add(name, "cuda_graph", graph ? 1.0 : 0.0, "", "1 = the steps replayed a CUDA graph");
    }
    if (cache) {
      cache->detach();
      MECHLENS_CHECK(cache->get(cache_options.names[0]).size(1) == prompt_len + 127, ArgumentError,
                     "decode_cache recorded {} positions", cache->get(cache_options.names[0]).size(1));
    }
    rec.add(name, "new_tokens_per_s", 128.0 / median(times), "tok/s", "decode only, batch 1");
    rec.add(name, "peak_gib", peak, "GiB");
  }
  kernels::set_fused_enabled(true);

  // --- phase 1: 100 pairs, 4 conditions, 50 new tokens at T = 0.7, one batch -------------------
  if (want("phase1")) {
    const int64_t pairs = 100, n_new = 50;
    Phase1 phase1{random_prompts(pairs, prompt_len, cfg.vocab_size, 11),
                  random_prompts(pairs, prompt_len, cfg.vocab_size, 13), n_new};
    std::vector<double> times;
    double peak = 0;
    for (int r = 0; r < repeats + 1; ++r) {
      reset_peak(dev);
      double t = seconds_of(dev, [&] { phase1.run(*model); });
      if (r > 0) times.push_back(t);
      peak = std::max(peak, peak_gib(dev));
    }
    rec.add("phase1", "new_tokens_per_s", 4.0 * pairs * n_new / median(times), "tok/s",
            "400 generations x 50 tokens incl. prefill and KV transfer, one batch");
    rec.add("phase1", "seconds", median(times), "s");
    rec.add("phase1", "peak_gib", peak, "GiB");
  }

  // --- R_V over 1,000 prompts -----------------------------------------------------------------
  if (want("rv")) {
    const int64_t n = 1000, batch = 100;
    auto prompts = random_prompts(n, prompt_len, cfg.vocab_size, 17);
    RvOptions o;
    o.early = 4;
    o.late = 24;
    std::vector<double> times;
    double peak = 0;
    for (int r = 0; r < repeats + 1; ++r) {
      reset_peak(dev);
      double t = seconds_of(dev, [&] {
        for (int64_t i = 0; i < n; i += batch) {
          std::vector<std::vector<int64_t>> chunk(prompts.begin() + i, prompts.begin() + std::min(n, i + batch));
          measure_rv(*model, chunk, o);
        }
      });
      if (r > 0) times.push_back(t);
      peak = std::max(peak, peak_gib(dev));
    }
    rec.add("rv", "prompts_per_s", n / median(times), "prompts/s", "batches of 100, stops after layer 24");
    rec.add("rv", "peak_gib", peak, "GiB");
  }

  // --- forward throughput with hooks ----------------------------------------------------------
  if (want("forward")) {
    auto prompts = random_prompts(32, prompt_len, cfg.vocab_size, 19);
    std::vector<int64_t> flat;
    for (auto& p : prompts) flat.insert(flat.end(), p.begin(), p.end());
    at::Tensor ids = at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({32, prompt_len}).to(dev);
    // The source of the patch mode: hook_v of layer cfg.n_layers() * 3 / 4 from another batch.
    const int64_t patch_layer = cfg.n_layers() * 3 / 4;
    CacheOptions src_opts;
    src_opts.names = {"blocks." + std::to_string(patch_layer) + ".attn.hook_v"};
    auto src = model->run_with_cache(ids.flip({0}), src_opts).second;
    for (const char* mode : {"plain", "noop_hooks", "cache_hook_v", "patch_v", "plain_again"}) {
      HookHandle hooks;
      std::optional<ActivationCache> cache;
      if (std::string(mode) == "patch_v") hooks = model->apply(v_swap(src, patch_layer));
      if (std::string(mode) == "noop_hooks")
        hooks = model->hooks().add_hook([](const std::string& n) { return n.find("hook_pattern") == std::string::npos; },
                                        [](const at::Tensor&, const HookContext&) { return std::nullopt; });
      if (std::string(mode) == "cache_hook_v") {
        CacheOptions co;
        co.names = {"blocks.*.attn.hook_v"};
        cache = ActivationCache::attach(model->hooks(), co);
      }
      std::vector<double> times;
      reset_peak(dev);
      for (int r = 0; r < 3 * repeats + 2; ++r) {
        double t = seconds_of(dev, [&] { model->forward(ids); });
        if (r >= 2) times.push_back(t);
      }
      rec.add(std::string("forward_") + mode, "tokens_per_s", 32.0 * prompt_len / median(times), "tok/s",
              "batch 32 x 64, full logits");
      rec.add(std::string("forward_") + mode, "peak_gib", peak_gib(dev), "GiB");
    }
  }

  if (!out_path.empty()) std::ofstream(out_path) << nlohmann::json{{"tool", "mechlens"}, {"rows", rec.rows}}.dump(1);
  return 0;
}
