// A model split over devices (LoadOptions::device_map) beside the same model on one device,
// measured — never asserted: the logits of a few prompts (max |split - one| over max |one|, for
// the bf16 tolerance the parity tests use, 4e-2 of the scale), the greedy tokens, load time and
// batch-1 decode tokens/s (median of --repeats). On one GPU the split is cuda:0 + cpu (offload).
//
//   bench_device_map --model /tmp/mechlens-bench/llama3-8b --map 0:16=cuda:0,16:32=cpu
//
// Prints one JSON object per line and a short summary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mechlens/core/dtype.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/models/load.hpp>

#ifdef MECHLENS_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

using namespace mechlens;
using Clock = std::chrono::steady_clock;

namespace {
void sync() {
#ifdef MECHLENS_WITH_CUDA
  if (at::hasCUDA()) c10::cuda::device_synchronize();
#endif
}
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Run {
  double load_s = 0;
  std::vector<at::Tensor> logits;             // per prompt, [1, n, vocab] float32 on the CPU
  std::vector<std::vector<int64_t>> tokens;   // greedy, per prompt
  double decode_tok_s = 0;
  bool used_cuda_graph = false;
};

Run run(const std::string& dir, const LoadOptions& lo, const std::vector<std::vector<int64_t>>& prompts, int64_t new_tokens,
        int repeats, bool graph) {
  Run r;
  sync();
  auto t0 = Clock::now();
  Model model = load_model(dir, lo);
  sync();
  r.load_s = seconds_since(t0);
  at::NoGradGuard no_grad;
  for (const auto& p : prompts) r.logits.push_back(model->forward(p).to(at::kFloat).cpu());
  GenerationOptions g;
  g.max_new_tokens = new_tokens;
  g.use_model_eos = false;
  g.use_cuda_graph = graph;
  for (const auto& p : prompts) r.tokens.push_back(generate(*model, {p}, g).tokens[0]);
  std::vector<double> rates;
  for (int i = 0; i < repeats; ++i) {
    PromptState s = prefill(*model, prompts[0], new_tokens);
    sync();
    auto t = Clock::now();
    auto out = decode(*model, s, g);
    sync();
    rates.push_back(static_cast<double>(new_tokens) / seconds_since(t));
    r.used_cuda_graph = out.used_cuda_graph;
  }
  r.decode_tok_s = median(rates);
  return r;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A model split over devices beside the same model on one device"};
  std::string model, map = "0:16=cuda:0,16:32=cpu", device = "cuda", dtype = "bfloat16";
  int64_t prompt_tokens = 64, new_tokens = 32, n_prompts = 4;
  int repeats = 3;
  app.add_option("--model", model, "checkpoint directory")->required();
  app.add_option("--map", map, "the split: begin:end=device ranges")->capture_default_str();
  app.add_option("--device", device, "the one device to compare with")->capture_default_str();
  app.add_option("--dtype", dtype)->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens)->capture_default_str();
  app.add_option("--new-tokens", new_tokens)->capture_default_str();
  app.add_option("--prompts", n_prompts)->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const ModelConfig cfg = ModelConfig::from_file(model);
    at::manual_seed(0);
    const at::Tensor ids = at::randint(cfg.vocab_size, {n_prompts, prompt_tokens}, at::TensorOptions().dtype(at::kLong));
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t i = 0; i < n_prompts; ++i) {
      const at::Tensor row = ids[i].contiguous();
      prompts.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + prompt_tokens);
    }
    LoadOptions one;
    one.dtype = parse_dtype(dtype);
    one.device = parse_device(device);
    // "auto" on this machine, for the record (where each layer would go).
    const auto planned = place_layers(DeviceMap::automatic_map(), cfg, one.dtype, 0.0);
    std::string plan;
    for (size_t l = 0; l < planned.size(); ++l) plan += (l ? "," : "") + planned[l].str();

    const Run a = run(model, one, prompts, new_tokens, repeats, /*graph=*/true);
    const Run eager = run(model, one, prompts, new_tokens, repeats, /*graph=*/false);
#ifdef MECHLENS_WITH_CUDA
    if (at::hasCUDA()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
    LoadOptions split = one;
    split.device = at::kCPU;
    split.device_map = DeviceMap::parse(map);
    const Run b = run(model, split, prompts, new_tokens, repeats, /*graph=*/true);

    double worst = 0;
    size_t same_tokens = 0, total_tokens = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const at::Tensor x = b.logits[i].to(at::kDouble), y = a.logits[i].to(at::kDouble);
      worst = std::max(worst, (x - y).abs().max().item<double>() / y.abs().max().item<double>());
      size_t k = 0;
      while (k < a.tokens[i].size() && a.tokens[i][k] == b.tokens[i][k]) ++k;
      same_tokens += k;
      total_tokens += a.tokens[i].size();
    }
    nlohmann::json out = {{"model", model},
                          {"map", map},
                          {"dtype", dtype},
                          {"auto_plan", plan},
                          {"prompts", n_prompts},
                          {"prompt_tokens", prompt_tokens},
                          {"new_tokens", new_tokens},
                          {"one_device_load_s", a.load_s},
                          {"split_load_s", b.load_s},
                          {"logits_max_rel_diff", worst},
                          {"greedy_leading_tokens_equal", same_tokens},
                          {"greedy_tokens", total_tokens},
                          {"one_device_decode_tok_s_graph", a.decode_tok_s},
                          {"one_device_decode_tok_s_eager", eager.decode_tok_s},
                          {"split_decode_tok_s", b.decode_tok_s},
                          {"split_used_cuda_graph", b.used_cuda_graph}};
    std::printf("%s\n", out.dump().c_str());
    std::printf("split %s vs %s: logits within %.3g of the scale (%s the bf16 tolerance 4e-2); greedy: %zu of %zu "
                "leading tokens equal; decode %.1f tok/s split, %.1f one device (graph), %.1f one device (eager steps)\n",
                map.c_str(), device.c_str(), worst, worst <= 4e-2 ? "within" : "OUTSIDE", same_tokens, total_tokens,
                b.decode_tok_s, a.decode_tok_s, eager.decode_tok_s);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_device_map: %s\n", e.what());
    return 1;
  }
}
