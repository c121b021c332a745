// Gradients against torch.autograd on transformers (tests/reference/make_gradient_references.py,
// gradients.safetensors per test checkpoint): d(teacher-forced log-likelihood of the prompt) / d
// every hook point's activation (run_with_gradients), and d(log p of the first generated token, or
// of a teacher-forced continuation) / d every cached key and value (kv_gradients). Float32 within
// 1e-4 of each reference tensor's largest magnitude; bfloat16 against the float32 reference by
// cosine similarity >= 0.99 per tensor (bfloat16 keeps 8 bits of mantissa).
#include <mechlens/attribution/gradients.hpp>
#include <mechlens/attribution/kv_attribution.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/hooks/backward_hook.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/init.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
constexpr double kTol = 1e-4;
constexpr double kBf16Cosine = 0.99;
const char* kModels[] = {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"};

std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }
std::map<std::string, at::Tensor> gradients_ref(const std::string& name) {
  return io::load_safetensors(model_dir(name) + "/gradients.safetensors");
}
std::vector<int64_t> ids_of(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous().view({-1});
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}
double cosine(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kDouble).cpu().flatten(), y = b.to(at::kDouble).cpu().flatten();
  return (x * y).sum().item<double>() / std::max(x.norm().item<double>() * y.norm().item<double>(), 1e-300);
}
// The prompt's own tokens after the first, scored teacher-forced: the reference's metric.
Metric self_likelihood(const std::vector<int64_t>& ids) {
  return continuation_logprob(at::tensor(std::vector<int64_t>(ids.begin() + 1, ids.end()), at::kLong));
}
}  // namespace

TEST_CASE("Gradients at every hook point match torch.autograd on transformers") {
  for (const char* name : kModels) {
    INFO(name);
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    auto ref = gradients_ref(name);
    const auto ids = ids_of(ref.at("hooks.input_ids"));
    GradientRun run = run_with_gradients(*model, ids, self_likelihood(ids));
    CHECK(std::abs(run.metric.item<double>() - ref.at("hooks.metric").item<double>()) <=
          kTol * std::abs(ref.at("hooks.metric").item<double>()));
    size_t compared = 0;
    for (const auto& [key, expected] : ref) {
      if (key.rfind("hooks.", 0) != 0 || key == "hooks.input_ids" || key == "hooks.metric") continue;
      const std::string hook = key.substr(6);
      INFO(hook);
      REQUIRE(run.gradients.contains(hook));
      const at::Tensor ours = run.gradients.get(hook);
      REQUIRE(ours.sizes() == expected.sizes());
      CHECK(test::max_rel_diff(ours, expected) <= kTol);
      ++compared;
    }
    // Every hook point of the default selection has its reference (the per-head results are not
    // cached by default).
    CHECK(compared == run.gradients.names().size());
    CHECK(compared == run.activations.names().size());
  }
}

TEST_CASE("A head's result carries the attention output's gradient; a backward hook can replace a gradient") {
  Model model = load_model(model_dir("llama_gqa_llama3"), {at::kFloat, test::device()});
  auto ref = gradients_ref("llama_gqa_llama3");
  const auto ids = ids_of(ref.at("hooks.input_ids"));
  CacheOptions co;
  co.names = {"blocks.2.attn.hook_result", "blocks.2.hook_attn_out", "hook_embed"};
  GradientRun run = run_with_gradients(*model, ids, self_likelihood(ids), co);
  // attn_out = Σ_heads result (+ bias): each head's result has the output's gradient.
  const at::Tensor g = run.gradients.get("blocks.2.attn.hook_result");  // [1, pos, heads, d_model]
  const at::Tensor out = run.gradients.get("blocks.2.hook_attn_out");   // [1, pos, d_model]
  for (int64_t h = 0; h < g.size(2); ++h) CHECK(test::max_rel_diff(g.select(2, h), out) <= kTol);
  CHECK(test::max_rel_diff(run.gradients.get("blocks.2.hook_attn_out"), ref.at("hooks.blocks.2.hook_attn_out")) <= kTol);

  // Every path from the embeddings to the logits passes through block 1's output: a backward hook
  // that zeroes the gradient there leaves none upstream. Another, on hook_embed, sees that zero.
  double seen_norm = -1;
  HookHandle zero = add_backward_hook(model->hooks(), "blocks.1.hook_resid_post",
                                      [](const at::Tensor& grad, const HookContext&) -> std::optional<at::Tensor> {
                                        return at::zeros_like(grad);
                                      });
  HookHandle watch = add_backward_hook(model->hooks(), "hook_embed",
                                       [&](const at::Tensor& grad, const HookContext& ctx) -> std::optional<at::Tensor> {
                                         CHECK(ctx.name == "hook_embed");
                                         CHECK(ctx.run.columns == static_cast<int64_t>(ids.size()));
                                         seen_norm = grad.norm().item<double>();
                                         return std::nullopt;
                                       });
  GradientRun zeroed = run_with_gradients(*model, ids, self_likelihood(ids), co);
  CHECK(seen_norm == 0.0);
  CHECK(zeroed.gradients.get("hook_embed").abs().max().item<double>() == 0.0);
  // Downstream of the hook the gradients are untouched.
  CHECK(test::max_rel_diff(zeroed.gradients.get("blocks.2.hook_attn_out"), out) == 0.0);
  zero.reset();
  watch.reset();
  GradientRun again = run_with_gradients(*model, ids, self_likelihood(ids), co);
  CHECK(test::max_rel_diff(again.gradients.get("hook_embed"), ref.at("hooks.hook_embed")) <= kTol);
}

TEST_CASE("Gradients with respect to every cached key and value match torch.autograd on transformers") {
  for (const char* name : kModels) {
    INFO(name);
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    auto ref = gradients_ref(name);
    for (const std::string tag : {"kv1", "kvc"}) {
      INFO(tag);
      const auto prompt = ids_of(ref.at(tag + ".prompt_ids"));
      PromptState state = prefill(*model, prompt, 0);
      const bool teacher_forced = ref.count(tag + ".continuation") > 0;
      Metric metric = teacher_forced ? continuation_logprob(ref.at(tag + ".continuation"))
                                     : token_logprob(ref.at(tag + ".token").item<int64_t>());
      at::Tensor cont = teacher_forced ? ref.at(tag + ".continuation") : at::Tensor();
      auto [dk, dv, value] = kv_gradients(*model, state, metric, cont);
      CHECK(std::abs(value.item<double>() - ref.at(tag + ".metric").item<double>()) <=
            kTol * std::abs(ref.at(tag + ".metric").item<double>()));
      const int64_t slots = state.cache.length();
      REQUIRE(dk.sizes() == dv.sizes());
      REQUIRE(dk.size(3) == slots);
      for (int64_t l = 0; l < model->config().n_layers(); ++l) {
        INFO("layer " << l);
        const at::Tensor rk = ref.at(tag + ".keys." + std::to_string(l)), rv = ref.at(tag + ".values." + std::to_string(l));
        const int64_t held = rk.size(2);  // a sliding-window layer of transformers keeps its last window - 1
        REQUIRE(held <= slots);
        const at::Tensor ok = dk.select(0, l).narrow(2, slots - held, held), ov = dv.select(0, l).narrow(2, slots - held, held);
        CHECK(test::max_rel_diff(ok, rk) <= kTol);
        CHECK(test::max_rel_diff(ov, rv) <= kTol);
        if (held < slots) {  // slots outside every query's window: no gradient at all
          CHECK(dk.select(0, l).narrow(2, 0, slots - held).abs().max().item<double>() == 0.0);
          CHECK(dv.select(0, l).narrow(2, 0, slots - held).abs().max().item<double>() == 0.0);
        }
      }
      // The target's state is left as it was: decoding it afterwards gives plain greedy tokens.
      CHECK(state.cache.length() == slots);
    }
  }
}

TEST_CASE("bfloat16 gradients follow the float32 reference", "[bf16]") {
  for (const char* name : kModels) {
    INFO(name);
    Model model = load_model(model_dir(name), {at::kBFloat16, test::device()});
    auto ref = gradients_ref(name);
    const auto ids = ids_of(ref.at("hooks.input_ids"));
    GradientRun run = run_with_gradients(*model, ids, self_likelihood(ids));
    for (const auto& [key, expected] : ref) {
      if (key.rfind("hooks.", 0) != 0 || key == "hooks.input_ids" || key == "hooks.metric") continue;
      const std::string hook = key.substr(6);
      INFO(hook);
      const at::Tensor ours = run.gradients.get(hook);
      REQUIRE(ours.scalar_type() == at::kBFloat16);
      CHECK(cosine(ours, expected) >= kBf16Cosine);
    }
    const auto prompt = ids_of(ref.at("kvc.prompt_ids"));
    PromptState state = prefill(*model, prompt, 0);
    auto [dk, dv, value] = kv_gradients(*model, state, continuation_logprob(ref.at("kvc.continuation")),
                                        ref.at("kvc.continuation"));
    for (int64_t l = 0; l < model->config().n_layers(); ++l) {
      const at::Tensor rv = ref.at("kvc.values." + std::to_string(l));
      CHECK(cosine(dv.select(0, l).narrow(2, dv.size(3) - rv.size(2), rv.size(2)), rv) >= kBf16Cosine);
    }
  }
}

TEST_CASE("Gradients are refused, naming the hook, where a forward carries none") {
  Model model = load_model(model_dir("llama_tied"), {at::kFloat, test::device()});
  HookHandle h = add_backward_hook(model->hooks(), "blocks.0.attn.hook_v",
                                   [](const at::Tensor&, const HookContext&) -> std::optional<at::Tensor> { return std::nullopt; });
  GenerationOptions g;
  g.max_new_tokens = 2;
  CHECK_THROWS_WITH(generate(*model, {{5, 6, 7}}, g),
                    Catch::Contains("backward hook on 'blocks.0.attn.hook_v'") &&
                        Catch::Contains("activation_gradients"));
  h.reset();
  CHECK_THROWS_WITH(run_with_gradients(*model, std::vector<int64_t>{5, 6, 7},
                                       [](const at::Tensor& logits) { return logits.detach().sum(); }),
                    Catch::Contains("carries no gradient"));
  CHECK_THROWS_WITH(run_with_gradients(*model, std::vector<int64_t>{5, 6, 7},
                                       [](const at::Tensor& logits) { return logits.sum(-1); }),
                    Catch::Contains("expected one"));
  CacheOptions acc;
  acc.accumulate = true;
  CHECK_THROWS_WITH(run_with_gradients(*model, std::vector<int64_t>{5, 6, 7}, token_logprob(3), acc),
                    Catch::Contains("accumulate"));
  PromptState one = prefill(*model, std::vector<int64_t>{5}, 0);
  CHECK_THROWS_WITH(kv_gradients(*model, one, token_logprob(3)), Catch::Contains("holds no slots"));
  PromptState three = prefill(*model, std::vector<int64_t>{5, 6, 7}, 0);
  CHECK_THROWS_WITH(kv_gradients(*model, three, token_logprob(300)), Catch::Contains("outside the vocabulary"));
  // After the errors the model runs as before, with no hook left attached.
  CHECK_FALSE(model->hooks().any_attached());
}

TEST_CASE("Gradients leave a model built in memory as it was: no weight gradients, weights still trainable") {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  Model model(c, at::TensorOptions().dtype(at::kFloat));
  init_weights(*model, 7, 0.2);
  for (const auto& p : model->parameters()) REQUIRE(p.requires_grad());
  GradientRun run = run_with_gradients(*model, std::vector<int64_t>{1, 5, 9, 3}, token_logprob(4));
  PromptState state = prefill(*model, std::vector<int64_t>{1, 5, 9, 3}, 0);
  PromptState source = prefill(*model, std::vector<int64_t>{1, 7, 2, 3}, 0);
  KVAttribution a = kv_attribution(*model, state, source.cache, token_logprob(4));
  CHECK(run.gradients.get("blocks.1.hook_resid_pre").abs().max().item<double>() > 0.0);
  CHECK(a.value_gradients.abs().max().item<double>() > 0.0);
  for (const auto& p : model->parameters()) {
    CHECK(p.requires_grad());
    CHECK_FALSE(p.grad().defined());
  }
}
