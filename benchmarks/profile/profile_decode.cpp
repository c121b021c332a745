// Where the time of one batch-1 decoding step goes, at Llama-3-8B shape in bf16 (random weights).
// Prints: the step time with the CUDA graph and eagerly (fused kernels on and off, and without
// early launch), the time of the step's matrix products alone (the same matrices, replayed as one
// graph, by cuBLAS and by mechlens' matrix-vector kernel: the floor the other kernels add to), and
// writes a Kineto trace of a few eager and graph steps (kernel names and GPU durations), which
// benchmarks/profile/kernels.py summarises.
//
//   profile_decode trace.json && python3 benchmarks/profile/kernels.py trace.json
#include <chrono>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <mechlens/generation/generate.hpp>
#include <mechlens/kernels/fused_ops.hpp>
#include <mechlens/models/model.hpp>

#include "../bench_model.hpp"

using namespace mechlens;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

int main(int argc, char** argv) {
  std::string trace = argc > 1 ? argv[argc - 1] : "decode_trace.json";
  at::NoGradGuard no_grad;
  const at::Device dev(at::kCUDA, 0);
  const ModelConfig cfg = bench::llama3_8b_shape();
  auto options = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  Model model(cfg, options);
  bench::randomize(*model);

  std::vector<int64_t> prompt;
  for (int64_t i = 0; i < 64; ++i) prompt.push_back(100 + 37 * i);
  GenerationOptions g;
  g.max_new_tokens = 128;
  g.use_model_eos = false;
  // Modes 0-3: graph / eager x fused / ATen kernels; mode 4: graph, fused, without early launch.
  for (int mode = 0; mode < 5; ++mode) {
    const bool graph = mode % 2 == 0, fused = mode < 2 || mode == 4;
    kernels::set_fused_enabled(fused);
    kernels::set_early_launch_enabled(mode != 4);
    g.use_cuda_graph = graph;
    double best = 1e9;
    for (int r = 0; r < 4; ++r) {
      PromptState s = prefill(*model, prompt, g.max_new_tokens);
      c10::cuda::device_synchronize();
      double t0 = now();
      decode(*model, s, g);
      c10::cuda::device_synchronize();
      if (r > 0) best = std::min(best, now() - t0);
    }
    std::printf("decode %-6s %-16s %.3f ms/token  %.1f tok/s (best of 3)\n", graph ? "graph" : "eager",
                mode == 4 ? "fused, no early" : fused ? "fused" : "aten", 1e3 * best / 128, 128 / best);
  }
  kernels::set_fused_enabled(true);
  kernels::set_early_launch_enabled(true);

  // The GEMM floor: the step's matrices (fused as load_model fuses them), batch 1, one graph.
  {
    std::vector<at::Tensor> mats;
    const int64_t d = cfg.d_model(), f = cfg.intermediate_size, kv = cfg.n_kv_heads() * cfg.d_head();
    for (int64_t l = 0; l < cfg.n_layers(); ++l) {
      mats.push_back(at::randn({d + 2 * kv, d}, options) * 0.02);
      mats.push_back(at::randn({d, d}, options) * 0.02);
      mats.push_back(at::randn({2 * f, d}, options) * 0.02);
      mats.push_back(at::randn({d, f}, options) * 0.02);
    }
    mats.push_back(at::randn({cfg.vocab_size, d}, options) * 0.02);
    at::Tensor xd = at::randn({1, 1, d}, options), xf = at::randn({1, 1, f}, options);
    auto stream = c10::cuda::getStreamFromPool(false, 0);
    c10::cuda::CUDAStreamGuard guard(stream);
    double bytes = 0;
    for (auto& m : mats) bytes += m.numel() * 2.0;
    // cuBLAS (at::linear) and mechlens' matrix-vector kernel over the same matrices.
    for (bool ours : {false, true}) {
      auto run = [&] {
        for (auto& m : mats) {
          const at::Tensor& x = m.size(1) == d ? xd : xf;
          if (ours)
            kernels::matvec(x, m, {}, /*weights_settled=*/true);
          else
            at::linear(x, m);
        }
      };
      run();
      stream.synchronize();
      at::cuda::CUDAGraph graph;
      graph.capture_begin();
      run();
      graph.capture_end();
      graph.replay();
      stream.synchronize();
      double t0 = now();
      for (int i = 0; i < 50; ++i) graph.replay();
      stream.synchronize();
      double ms = (now() - t0) / 50 * 1e3;
      std::printf("%s floor  %.3f ms/step (%zu products, %.2f GB: %.0f GB/s)\n", ours ? "matvec" : "cublas", ms,
                  mats.size(), bytes / 1e9, bytes / 1e9 / (ms / 1e3));
    }
    mats.clear();
  }

  // A trace of 4 eager steps and 4 graph steps.
  {
    using namespace torch::profiler::impl;
    ProfilerConfig pc(ProfilerState::KINETO);
    std::set<ActivityType> acts{ActivityType::CPU, ActivityType::CUDA};
    torch::autograd::profiler::prepareProfiler(pc, acts);
    PromptState s = prefill(*model, prompt, 16);
    PromptState s2 = prefill(*model, prompt, 16);
    c10::cuda::device_synchronize();
    torch::autograd::profiler::enableProfiler(pc, acts);
    g.max_new_tokens = 4;
    g.use_cuda_graph = false;
    decode(*model, s, g);
    g.max_new_tokens = 6;
    g.use_cuda_graph = true;
    decode(*model, s2, g);
    c10::cuda::device_synchronize();
    auto result = torch::autograd::profiler::disableProfiler();
    result->save(trace);
    std::printf("trace written to %s\n", trace.c_str());
  }
  return 0;
}
