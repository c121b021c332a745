// Where the time of phase 1 goes (benchmarks/phase1_workload.hpp: 200 prefills of 63 tokens, a
// 400-row cache by row selection, 50 decoding steps of 400 rows at T = 0.7), at Llama-3-8B shape
// in bf16 (random weights). Prints:
//   - each stage's wall time (device synchronised between stages), decode with and without the
//     CUDA graph;
//   - the floor of the matrix products alone at the workload's shapes (cuBLAS, the same matrices
//     and row counts, replayed as one CUDA graph), and what the measured bf16 GEMM rate of an
//     8192^3 product gives for the same FLOPs;
//   - a Kineto trace of one whole run (benchmarks/profile/kernels.py summarises it by kernel and
//     by kind: GEMM, attention, sampling, the rest).
//
//   profile_phase1 trace.json && python3 benchmarks/profile/kernels.py trace.json
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include "../bench_model.hpp"
#include "../bench_util.hpp"
#include "../phase1_workload.hpp"

using namespace mechlens;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Median seconds of `fn` replayed as one CUDA graph (3 warm replays, then 10 timed).
double graph_seconds(const std::function<void()>& fn) {
  auto stream = c10::cuda::getStreamFromPool(false, 0);
  c10::cuda::CUDAStreamGuard guard(stream);
  fn();
  stream.synchronize();
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  fn();
  graph.capture_end();
  for (int i = 0; i < 3; ++i) graph.replay();
  stream.synchronize();
  std::vector<double> t;
  for (int i = 0; i < 10; ++i) {
    double t0 = now();
    graph.replay();
    stream.synchronize();
    t.push_back(now() - t0);
  }
  return bench::median(t);
}
}  // namespace

int main(int argc, char** argv) {
  std::string trace = argc > 1 ? argv[argc - 1] : "phase1_trace.json";
  at::NoGradGuard no_grad;
  const at::Device dev(at::kCUDA, 0);
  const ModelConfig cfg = bench::llama3_8b_shape();
  auto options = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  Model model(cfg, options);
  bench::randomize(*model);
  const int64_t pairs = 100, prompt_len = 64;
  bench::Phase1 phase1{bench::random_prompts(pairs, prompt_len, cfg.vocab_size, 11),
                       bench::random_prompts(pairs, prompt_len, cfg.vocab_size, 13), 50};

  // Stages, device synchronised between them (medians of 3 after a warm-up).
  for (bool graph : {true, false}) {
    phase1.cuda_graph = graph;
    std::map<std::string, std::vector<double>> stages;
    for (int r = 0; r < 4; ++r) {
      c10::cuda::device_synchronize();
      double t0 = now(), last = t0;
      phase1.run(*model, [&](const char* stage) {
        c10::cuda::device_synchronize();
        double t = now();
        if (r > 0) stages[stage].push_back(t - last);
        last = t;
      });
      c10::cuda::device_synchronize();
      if (r > 0) {
        stages["decode"].push_back(now() - last);
        stages["total"].push_back(now() - t0);
      }
    }
    for (const char* s : {"prefill", "splice", "decode", "total"})
      std::printf("phase1 %-8s %-6s %8.3f s\n", graph ? "graph" : "eager", s, bench::median(stages[s]));
    std::printf("phase1 %-8s per decoding step (400 rows) %.2f ms\n", graph ? "graph" : "eager",
                1e3 * bench::median(stages["decode"]) / phase1.n_new);
  }
  phase1.cuda_graph = true;

  // The matrix products alone, at the workload's row counts: prefill 200 x 63 rows through every
  // layer and the last row of each through lm_head; each decoding step 400 rows through every
  // layer and lm_head.
  {
    const int64_t d = cfg.d_model(), f = cfg.intermediate_size, kv = cfg.n_kv_heads() * cfg.d_head();
    std::vector<std::pair<at::Tensor, int64_t>> layer_mats = {
        {at::randn({d + 2 * kv, d}, options) * 0.02, d}, {at::randn({d, d}, options) * 0.02, d},
        {at::randn({2 * f, d}, options) * 0.02, d}, {at::randn({d, f}, options) * 0.02, f}};
    at::Tensor head = at::randn({cfg.vocab_size, d}, options) * 0.02;
    auto products = [&](int64_t rows, int64_t head_rows) {
      double flops = 0;
      std::vector<std::pair<at::Tensor, at::Tensor>> work;
      for (auto& [w, k] : layer_mats) {
        work.emplace_back(at::randn({rows, k}, options), w);
        flops += 2.0 * rows * k * w.size(0) * cfg.n_layers();
      }
      at::Tensor x_head = at::randn({head_rows, d}, options);
      flops += 2.0 * head_rows * d * cfg.vocab_size;
      double s = graph_seconds([&] {
        for (int64_t l = 0; l < cfg.n_layers(); ++l)
          for (auto& [x, w] : work) at::linear(x, w);
        at::linear(x_head, head);
      });
      return std::make_pair(s, flops);
    };
    auto [prefill_s, prefill_flops] = products(200 * (prompt_len - 1), 200);
    auto [step_s, step_flops] = products(400, 400);
    at::Tensor a = at::randn({8192, 8192}, options), b = at::randn({8192, 8192}, options);
    double mm = graph_seconds([&] { at::mm(a, b); });
    const double rate = 2.0 * 8192 * 8192 * 8192 / mm;
    std::printf("bf16 GEMM 8192^3: %.0f TFLOP/s\n", rate / 1e12);
    std::printf("prefill products: %.3f s for %.3g FLOP (%.0f TFLOP/s; at the 8192^3 rate %.3f s)\n", prefill_s,
                prefill_flops, prefill_flops / prefill_s / 1e12, prefill_flops / rate);
    std::printf("decode-step products: %.2f ms for %.3g FLOP (%.0f TFLOP/s; at the 8192^3 rate %.2f ms); x %ld "
                "steps = %.3f s\n",
                1e3 * step_s, step_flops, step_flops / step_s / 1e12, 1e3 * step_flops / rate,
                static_cast<long>(phase1.n_new), step_s * phase1.n_new);
    std::printf("phase 1 products: %.3f s at these shapes; %.3f s at the 8192^3 rate\n",
                prefill_s + step_s * phase1.n_new, (prefill_flops + step_flops * phase1.n_new) / rate);
  }

  // A trace of one whole run.
  {
    using namespace torch::profiler::impl;
    ProfilerConfig pc(ProfilerState::KINETO);
    std::set<ActivityType> acts{ActivityType::CPU, ActivityType::CUDA};
    torch::autograd::profiler::prepareProfiler(pc, acts);
    c10::cuda::device_synchronize();
    torch::autograd::profiler::enableProfiler(pc, acts);
    double t0 = now();
    phase1.run(*model);
    c10::cuda::device_synchronize();
    std::printf("traced run: %.3f s wall (with the profiler)\n", now() - t0);
    auto result = torch::autograd::profiler::disableProfiler();
    result->save(trace);
    std::printf("trace written to %s\n", trace.c_str());
  }
  return 0;
}
