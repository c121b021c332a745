// The smallest mechlens program: load a Hugging Face checkpoint directory, run a prompt of token
// ids, print the model's most likely next tokens and one hook's activation norm.
//
//   next_token --model tests/data/models/llama_tied --ids 5,17,42
#include <cstdio>

#include <CLI/CLI.hpp>
#include <ATen/ATen.h>

#include <mechlens/core/dtype.hpp>
#include <mechlens/models/load.hpp>

int main(int argc, char** argv) {
  CLI::App app{"Load a checkpoint and print its next-token prediction for a prompt of token ids."};
  std::string model_dir = MECHLENS_DEFAULT_TINY_MODEL;
  std::vector<int64_t> ids{5, 17, 42, 99, 7};
  std::string dtype = "float32";
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory (config.json + safetensors)")
      ->capture_default_str();
  app.add_option("--ids", ids, "prompt token ids, comma separated")->delimiter(',')->capture_default_str();
  app.add_option("--dtype", dtype, "float32, bfloat16 or float16")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    at::NoGradGuard no_grad;
    mechlens::Model model = mechlens::load_model(model_dir, {mechlens::parse_dtype(dtype), at::kCPU});
    const auto& cfg = model->config();
    std::printf("%s: %lld layers, d_model %lld, %lld heads (%lld KV), vocab %lld\n", cfg.model_type.c_str(),
                (long long)cfg.n_layers(), (long long)cfg.d_model(), (long long)cfg.n_heads(),
                (long long)cfg.n_kv_heads(), (long long)cfg.vocab_size);
    mechlens::CacheOptions keep;
    keep.names = {"blocks.0.hook_resid_post"};
    at::Tensor input = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1});
    auto [logits, cache] = model->run_with_cache(input, keep);
    at::Tensor probs = at::softmax(logits[0][-1].to(at::kFloat), -1);
    auto top = probs.topk(5);
    std::printf("next token after %zu prompt tokens:\n", ids.size());
    for (int i = 0; i < 5; ++i)
      std::printf("  id %6lld  p = %.4f\n", (long long)std::get<1>(top)[i].item<int64_t>(),
                  std::get<0>(top)[i].item<double>());
    std::printf("|blocks.0.hook_resid_post| at the last position = %.4f\n",
                cache.get("blocks.0.hook_resid_post")[0][-1].norm().item<double>());
  } catch (const mechlens::Error& e) {
    std::fprintf(stderr, "next_token: %s\n", e.what());
    return 2;
  }
  return 0;
}
