// Parity with Hugging Face transformers on the small random-weight checkpoints made by
// tests/reference/make_model_reference.py (transformers 5.x, float32, eager attention).
//
// Tolerance rule (issue 3): every hook point and the logits agree with the reference within
// 1e-4 of the reference tensor's scale, i.e. max|ours - ref| <= 1e-4 * max|ref|.
//
// bfloat16 (reference_bf16.safetensors, make_bf16_reference.py: transformers run in bfloat16 on
// the CPU, eager attention): rotary is compared bit for bit on transformers' own inputs; whole
// forwards agree within kBf16Tol of each tensor's scale with hooks on (mechlens' explicit
// attention, which rounds where transformers' eager attention rounds), kBf16FusedTol without
// (LibTorch 2.x's fused attention never rounds the pattern to bfloat16). Measured (12 prompts, 4
// models): hooked logits bit-identical on the CPU with LibTorch 2.11, at most 1.0e-2 on an H200
// (cuBLAS sums in another order); fused at most 2.6e-2 on the CPU, 3.2e-2 on the H200. For
// scale: transformers' own bfloat16 logits are 0.6-3.4 % of the scale away from its float32 ones.
#include <fstream>
#include <iostream>

#include <mechlens/io/json.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
constexpr double kTol = 1e-4;
constexpr double kBf16Tol = 2e-2;
constexpr double kBf16FusedTol = 4e-2;
const char* kModels[] = {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"};

std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

std::map<std::string, at::Tensor> reference(const std::string& name) {
  return io::load_safetensors(model_dir(name) + "/reference.safetensors");
}

/// max|ours - ref| / max|ref| over the finite entries; hook_attn_scores holds -inf where a query
/// may not attend, and those places must agree exactly.
double hook_diff(const std::string& hook, const at::Tensor& ours, const at::Tensor& ref) {
  if (hook.size() < 16 || hook.compare(hook.size() - 16, 16, "hook_attn_scores") != 0)
    return test::max_rel_diff(ours, ref);
  const at::Tensor a = ours.to(at::kDouble).cpu(), b = ref.to(at::kDouble).cpu();
  REQUIRE(at::equal(a.isinf(), b.isinf()));
  REQUIRE(at::equal(a.isneginf(), b.isneginf()));
  return test::max_rel_diff(a.masked_fill(a.isinf(), 0.0), b.masked_fill(b.isinf(), 0.0));
}

/// Every hook point, the per-head attn.hook_result included (a cache with no names leaves it out).
CacheOptions every_hook(const Model& model) {
  CacheOptions all;
  all.names = model->hook_names();
  return all;
}
}  // namespace

TEST_CASE("Every hook point and the logits match transformers on the reference checkpoints") {
  for (const char* name : kModels) {
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    auto ref = reference(name);
    for (int i = 0; i < 3; ++i) {
      const std::string p = "p" + std::to_string(i) + ".";
      at::Tensor ids = ref.at(p + "input_ids");
      // Every hook, including hook_pattern (forces the explicit attention path) and hook_result
      // (the attention output is then the sum of the per-head results).
      auto [logits, cache] = model->run_with_cache(ids, every_hook(model));
      INFO(name << " prompt " << i << " (" << ids.size(1) << " tokens)");
      REQUIRE(test::max_rel_diff(logits, ref.at(p + "logits")) <= kTol);
      for (const auto& hook : model->hook_names()) {
        INFO("hook " << hook);
        REQUIRE(ref.count(p + hook));
        REQUIRE(cache.get(hook).sizes() == ref.at(p + hook).sizes());
        REQUIRE(hook_diff(hook, cache.get(hook), ref.at(p + hook)) <= kTol);
      }
      // Without hooks LibTorch 2.x takes the fused attention path: the same numbers.
      at::Tensor plain = model->forward(ids);
      REQUIRE(test::max_rel_diff(plain, ref.at(p + "logits")) <= kTol);
    }
  }
}

TEST_CASE("The rotary inverse frequencies are transformers' (llama3 scaling with all three bands)") {
  for (const char* name : kModels) {
    INFO(name);
    ModelConfig cfg = ModelConfig::from_file(model_dir(name));
    at::Tensor ours = rope_inverse_frequencies(cfg.rope, cfg.d_head());
    REQUIRE(test::max_rel_diff(ours, reference(name).at("rope.inv_freq")) <= 1e-6);
  }
  REQUIRE(ModelConfig::from_file(model_dir("llama_gqa_llama3")).rope.type == "llama3");
}

TEST_CASE("A left-padded batch matches transformers at every real position") {
  Model model = load_model(model_dir("llama_gqa_llama3"), {at::kFloat, test::device()});
  auto ref = reference("llama_gqa_llama3");
  at::Tensor mask = ref.at("batch.attention_mask");
  at::Tensor logits = model->forward(ref.at("batch.input_ids"), test::with_mask(mask)).cpu();
  at::Tensor real = mask.to(at::kBool).unsqueeze(-1).expand_as(logits);
  at::Tensor expected = ref.at("batch.logits");
  double scale = expected.masked_select(real).abs().max().item<double>();
  double diff = (logits - expected).masked_select(real).abs().max().item<double>();
  REQUIRE(diff <= kTol * scale);
}

TEST_CASE("A bfloat16 checkpoint loads as float32, bfloat16 and float16") {
  auto ref = reference("llama_gqa_llama3");
  at::Tensor ids = ref.at("p1.input_ids");
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    if (dtype == at::kHalf && test::device().is_cpu() && !compat::kHasCpuHalfMatmul) {
      // LibTorch 1.13 has no float16 matrix products on the CPU: a clear error instead.
      REQUIRE_THROWS_WITH(load_model(model_dir("llama_gqa_llama3"), {dtype, at::kCPU}), Catch::Contains("float16"));
      continue;
    }
    Model model = load_model(model_dir("llama_gqa_llama3"), {dtype, test::device()});
    REQUIRE(model->embedding_weight().scalar_type() == dtype);
    at::Tensor logits = model->forward(ids);
    REQUIRE(logits.scalar_type() == dtype);
    // Half-precision activations: agreement to a few percent of the logits' scale.
    INFO(c10::toString(dtype));
    REQUIRE(test::max_rel_diff(logits, ref.at("p1.logits")) <= 5e-2);
  }
}

TEST_CASE("The configs are read in both rotary forms with their architectures") {
  ModelConfig classic = ModelConfig::from_file(model_dir("llama_gqa_llama3"));
  REQUIRE(classic.n_kv_heads() == 2);
  REQUIRE(classic.rope.original_max_position_embeddings == 64);
  ModelConfig tied = ModelConfig::from_file(model_dir("llama_tied"));
  REQUIRE(tied.tie_word_embeddings);
  REQUIRE(tied.d_head() == 16);
  ModelConfig mistral = ModelConfig::from_file(model_dir("mistral_swa"));
  REQUIRE(mistral.sliding_window == std::optional<int64_t>(8));
  REQUIRE(mistral.n_kv_heads() == 1);
}

TEST_CASE("Rotary rounds as transformers does in bfloat16: bit for bit on transformers' own q and k") {
  for (const char* name : kModels) {
    ModelConfig cfg = ModelConfig::from_file(model_dir(name));
    auto ref = io::load_safetensors(model_dir(name) + "/reference_bf16.safetensors");
    at::Tensor inv_freq = rope_inverse_frequencies(cfg.rope, cfg.d_head());
    for (int i = 0; i < 3; ++i)
      for (int64_t layer = 0; layer < cfg.n_layers(); ++layer)
        for (const char* site : {"q", "k"}) {
          const std::string p = "p" + std::to_string(i) + ".blocks." + std::to_string(layer) + ".attn.hook_";
          at::Tensor x = ref.at(p + site).to(at::kBFloat16);  // exact: bfloat16 values stored as float32
          const int64_t n = x.size(1);
          at::Tensor positions = at::arange(n, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
          at::Tensor ours = apply_rotary(x, rotary_angles(inv_freq, positions, at::kBFloat16)).to(at::kFloat);
          INFO(name << " " << p << "rot_" << site);
          REQUIRE((ours - ref.at(p + "rot_" + site)).abs().max().item<double>() == 0.0);
        }
  }
}

TEST_CASE("In bfloat16 every hook point and the logits match transformers run in bfloat16") {
  for (const char* name : kModels) {
    Model model = load_model(model_dir(name), {at::kBFloat16, test::device()});
    auto ref = io::load_safetensors(model_dir(name) + "/reference_bf16.safetensors");
    auto fp32 = reference(name);
    for (int i = 0; i < 3; ++i) {
      const std::string p = "p" + std::to_string(i) + ".";
      at::Tensor ids = ref.at(p + "input_ids");
      auto [logits, cache] = model->run_with_cache(ids, every_hook(model));
      INFO(name << " prompt " << i);
      REQUIRE(logits.scalar_type() == at::kBFloat16);
      const double d = test::max_rel_diff(logits, ref.at(p + "logits"));
      const double bf16_vs_fp32 = test::max_rel_diff(ref.at(p + "logits"), fp32.at(p + "logits"));
      INFO("logits: " << d << " of scale from transformers bf16; transformers bf16 vs fp32: " << bf16_vs_fp32);
      REQUIRE(d <= kBf16Tol);
      for (const auto& hook : model->hook_names()) {
        INFO("hook " << hook);
        REQUIRE(cache.get(hook).sizes() == ref.at(p + hook).sizes());
        REQUIRE(hook_diff(hook, cache.get(hook), ref.at(p + hook)) <= kBf16Tol);
      }
      // Without hooks LibTorch 2.x takes the fused attention (scaled_dot_product_attention), which
      // never rounds the pattern to bfloat16 as the eager reference does: a looser bound.
      at::Tensor plain = model->forward(ids);
      const double fused = test::max_rel_diff(plain, ref.at(p + "logits"));
      std::cout << "bf16 parity " << name << " p" << i << " on " << test::device() << ": hooked " << d << ", plain "
                << fused << " (transformers bf16 vs fp32 " << bf16_vs_fp32 << ")\n";
      REQUIRE(fused <= kBf16FusedTol);
    }
  }
}

TEST_CASE("qwen2: q/k/v biases are read, fused and used; per-layer sliding windows are refused") {
  ModelConfig cfg = ModelConfig::from_file(model_dir("qwen2_bias"));
  REQUIRE(cfg.model_type == "qwen2");
  REQUIRE(cfg.attention_bias);
  REQUIRE_FALSE(cfg.sliding_window.has_value());
  nlohmann::json j = io::read_json_file(model_dir("qwen2_bias") + "/config.json");
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4;
  j["max_window_layers"] = 2;
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j, "config.json"), Catch::Contains("use_sliding_window true") &&
                                                                   Catch::Contains("max_window_layers 2"));
  nlohmann::json mixed = io::read_json_file(model_dir("qwen2_bias") + "/config.json");
  mixed["layer_types"] = {"full_attention", "sliding_attention", "full_attention"};
  REQUIRE_THROWS_WITH(ModelConfig::from_json(mixed, "config.json"), Catch::Contains("layer_types[1]"));
}
