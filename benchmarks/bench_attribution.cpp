// The cost of attribution over the KV cache at Llama-3-8B shape (bf16, random weights built in
// memory), measured — never asserted — against what it replaces and against one forward pass.
//
//   bench_attribution --device cuda --out attribution.json
//   bench_attribution --tiny --device cpu        # a small model, to try it anywhere
//
// Workloads (each repeated, median reported; a target and a source prompt of 64 tokens):
//   forward          one forward over a 64-token prompt (no gradients): the unit of cost
//   prefill_pair     prefill of the target and the source (what any splice needs first)
//   kv_gradients     d log p(first generated token) / d every cached key and value
//   kv_attribution   the estimate of splicing each (layer, KV head, slot) entry: keys (AtP*'s
//                    recomputed softmax), values, both — first-token metric
//   kv_attribution_c16  the same with a teacher-forced continuation of 16 tokens
//   kv_attribution_b8   kv_attribution for 8 pairs in one call (a batch of 8 targets and sources)
//   kv_attribution_b100_padded  100 pairs of 50-70 tokens, right-aligned, 16-token continuation,
//                    one call (left-padded): how dec7_attribution runs a study's pairs
//   real_splice      one real single-entry splice scored by the same metric (clone the target's
//                    cache, splice, forward the pending token): the sweep the attribution replaces
//                    costs this once per entry (layers x KV heads x slots)
// Peak GPU memory is reported per workload (the model's weights included).
#include <atomic>
#include <cstdio>
#include <fstream>

#include <ATen/record_function.h>
#include <CLI/CLI.hpp>

#include <mechlens/attribution/kv_attribution.hpp>
#include <mechlens/core/dtype.hpp>
#include <mechlens/generation/prompt_state.hpp>
#include <mechlens/interventions/kv_splice.hpp>
#include <mechlens/models/model.hpp>

#include "bench_model.hpp"
#include "bench_util.hpp"

using namespace mechlens;
using namespace mechlens::bench;

int main(int argc, char** argv) {
  CLI::App app{"mechlens KV-cache attribution at Llama-3-8B shape (bf16, random weights)"};
  std::string device = "cuda", dtype = "bfloat16", out_path;
  bool tiny = false;
  int repeats = 5;
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--dtype", dtype, "model dtype")->capture_default_str();
  app.add_flag("--tiny", tiny, "a small 32-layer model instead of Llama-3-8B shape (smoke test)");
  app.add_option("--repeats", repeats, "repetitions per workload (median reported)")->capture_default_str();
  app.add_option("--out", out_path, "write the measurements as JSON here");
  CLI11_PARSE(app, argc, argv);

  const at::Device dev = parse_device(device);
  ModelConfig cfg = bench::llama3_8b_shape();
  if (tiny) {
    cfg.vocab_size = 512;
    cfg.hidden_size = 128;
    cfg.intermediate_size = 256;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 32;
  }
  Model model(cfg, at::TensorOptions().dtype(parse_dtype(dtype)).device(dev));
  bench::randomize(*model);
  for (auto& p : model->parameters()) p.set_requires_grad(false);  // as load_model leaves them
  Recorder rec;
  const int64_t len = 64;
  auto prompts = random_prompts(2, len, cfg.vocab_size, 11);
  const int64_t token = 42;
  const Metric first = token_logprob(token);
  const at::Tensor cont16 = at::tensor(random_prompts(1, 16, cfg.vocab_size, 12)[0], at::kLong);

  auto run = [&](const std::string& name, const std::function<void()>& fn) {
    std::vector<double> times;
    double peak = 0;
    for (int r = 0; r < repeats + 1; ++r) {  // the first run warms up
      reset_peak(dev);
      const double t = seconds_of(dev, fn);
      if (r > 0) times.push_back(t);
      peak = std::max(peak, peak_gib(dev));
    }
    const double ms = 1e3 * median(times);
    rec.add(name, "ms", ms, "ms", "median of " + std::to_string(repeats));
    rec.add(name, "peak_gib", peak, "GiB");
    return ms;
  };

  const double forward_ms = run("forward", [&] {
    at::NoGradGuard no_grad;
    model->forward(prompts[0]);
  });
  run("prefill_pair", [&] {
    PromptState t = prefill(*model, prompts[0], 0);
    PromptState s = prefill(*model, prompts[1], 0);
  });
  PromptState target = prefill(*model, prompts[0], 0);
  PromptState source = prefill(*model, prompts[1], 0);
  const double grad_ms = run("kv_gradients", [&] { kv_gradients(*model, target, first); });
  {
    // What a call launches: ATen operator calls (outermost only, as the profiler's top level) and
    // autograd nodes evaluated by backward().
    static std::atomic<int64_t> ops{0}, nodes{0}, depth{0};
    ops = nodes = 0;
    auto handle = at::addGlobalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION) ++nodes;
              else if (depth++ == 0) ++ops;
              return nullptr;
            },
            [](const at::RecordFunction& fn, at::ObserverContext*) {
              if (fn.scope() != at::RecordScope::BACKWARD_FUNCTION) --depth;
            })
            .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
    kv_gradients(*model, target, first);
    sync(dev);
    at::removeCallback(handle);
    rec.add("kv_gradients", "top_level_ops", static_cast<double>(ops.load()), "", "ATen calls, forward and backward");
    rec.add("kv_gradients", "autograd_nodes", static_cast<double>(nodes.load()), "", "evaluated by backward()");
  }
  const double attr_ms = run("kv_attribution", [&] { kv_attribution(*model, target, source.cache, first); });
  KVAttributionOptions o16;
  o16.continuation = cont16;
  const double attr16_ms =
      run("kv_attribution_c16", [&] { kv_attribution(*model, target, source.cache, continuation_logprob(cont16), o16); });
  // Eight pairs in one call: the backward's per-operation host overhead is shared by the rows.
  auto batch8 = random_prompts(16, len, cfg.vocab_size, 13);
  PromptState targets = prefill(*model, std::vector<std::vector<int64_t>>(batch8.begin(), batch8.begin() + 8), 0);
  PromptState sources = prefill(*model, std::vector<std::vector<int64_t>>(batch8.begin() + 8, batch8.end()), 0);
  const double attr8_ms = run("kv_attribution_b8", [&] { kv_attribution(*model, targets, sources.cache, first); });
  // 100 pairs of 50-70 tokens in one call, left-padded: how dec7_attribution runs a study's pairs.
  std::mt19937_64 rng(14);
  std::vector<std::vector<int64_t>> t100, s100;
  for (int i = 0; i < 100; ++i) {
    t100.push_back(random_prompts(1, 50 + static_cast<int64_t>(rng() % 21), cfg.vocab_size, 100 + i)[0]);
    s100.push_back(random_prompts(1, 50 + static_cast<int64_t>(rng() % 21), cfg.vocab_size, 300 + i)[0]);
  }
  PromptState tp = prefill(*model, t100, 0), sp = prefill(*model, s100, 0);
  KVAttributionOptions o100;
  o100.splice.align = Align::Right;
  o100.continuation = cont16;
  const double attr100_ms = run("kv_attribution_b100_padded", [&] {
    kv_attribution(*model, tp, sp.cache, continuation_logprob(cont16), o100);
  });
  const double splice_ms = run("real_splice", [&] {
    at::NoGradGuard no_grad;
    PromptState s = target.clone(target.cache.length() + 1);
    SpliceOptions so;
    so.layers = LayerRange::single(cfg.n_layers() / 2);
    so.kv_heads = IndexSet::only({0});
    so.slots = Positions::list({len / 2});
    splice_kv(s.cache, source.cache, so);
    ForwardOptions opt = mechlens::detail::pending_forward_options(s, s.cache, 1, false);
    first(model->forward(s.pending.view({1, 1}), opt)).item<double>();
  });
  const double entries = static_cast<double>(cfg.n_layers() * cfg.n_kv_heads() * (len - 1));
  rec.add("ratio", "kv_gradients_per_forward", grad_ms / forward_ms, "x");
  rec.add("ratio", "kv_attribution_per_forward", attr_ms / forward_ms, "x", "target: <= 3");
  rec.add("ratio", "kv_attribution_c16_per_forward", attr16_ms / forward_ms, "x");
  rec.add("ratio", "kv_attribution_b8_per_pair_per_forward", attr8_ms / 8 / forward_ms, "x", "8 pairs in one call");
  rec.add("ratio", "kv_attribution_b100_padded_per_pair_per_forward", attr100_ms / 100 / forward_ms, "x",
          "100 pairs of 50-70 tokens, 16-token continuation, one call");
  rec.add("sweep", "entries", entries, "", "layers x KV heads x slots");
  rec.add("sweep", "real_splices_s", entries * splice_ms / 1e3, "s", "one real splice per entry");
  rec.add("ratio", "sweep_per_attribution", entries * splice_ms / attr_ms, "x");
  if (!out_path.empty()) std::ofstream(out_path) << rec.rows.dump(2) << "\n";
  return 0;
}
