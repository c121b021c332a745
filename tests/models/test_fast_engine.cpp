// The fast engine (models/fast_engine.hpp) against the readable path (ForwardOptions::fast_engine
// = false), on small random models of every supported shape: grouped-query attention, a sliding
// window, q/k/v biases (qwen2), tied embeddings. Both paths are also checked against transformers
// in test_hf_parity.cpp. Tolerance: float32, max|fast - readable| <= 1e-5 of the readable
// tensor's scale (the paths differ only in GEMM shapes, hence float32 summation order);
// bfloat16, 2e-2 (the parity tests' bound for hooked vs unhooked paths).
#include <mechlens/generation/generate.hpp>
#include <mechlens/interventions/ablation.hpp>
#include <mechlens/interventions/steering.hpp>
#include <mechlens/models/init.hpp>
#include <mechlens/models/model.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
enum class Shape { Gqa, Sliding, Bias, Tied };

ModelConfig config(Shape s) {
  ModelConfig c;
  c.model_type = s == Shape::Sliding ? "mistral" : s == Shape::Bias ? "qwen2" : "llama";
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.rms_norm_eps = 1e-5;
  if (s == Shape::Sliding) c.sliding_window = 4;
  c.attention_bias = s == Shape::Bias;
  c.tie_word_embeddings = s == Shape::Tied;
  return c;
}

Model fused_model(Shape s, at::ScalarType dtype = at::kFloat) {
  Model m(config(s), at::TensorOptions().dtype(at::kFloat));
  init_weights(*m, 11, 0.2);
  m->to(test::device(), dtype);
  m->fuse_projections();
  return m;
}

ForwardOptions readable(ForwardOptions o = {}) {
  o.fast_engine = false;
  return o;
}

const Shape kShapes[] = {Shape::Gqa, Shape::Sliding, Shape::Bias, Shape::Tied};

// Prefills ids' first 3 tokens, then runs positions 3..7 one token at a time through the
// static-shape step (what CUDA graphs capture); each step's logits must be `full`'s at that
// position (float32, 1e-5 of scale).
void check_static_steps(ModelImpl& m, const at::Tensor& ids, const at::Tensor& full) {
  const int64_t batch = ids.size(0);
  KVCache cache = KVCache::for_model(m.config(), batch, 10, m.options());
  m.forward(ids.narrow(1, 0, 3), test::with_cache(cache));
  for (int64_t t = 3; t < 8; ++t) {
    ForwardOptions o;
    o.cache = &cache;
    o.positions = at::full({batch, 1}, t, at::TensorOptions().dtype(at::kLong).device(test::device()));
    at::Tensor slot = at::full({1}, t, at::TensorOptions().dtype(at::kLong).device(test::device()));
    at::Tensor step = mechlens::detail::StaticStep::run(m, ids.narrow(1, t, 1), o, slot);
    cache.set_length(t + 1, false);
    INFO("position " << t);
    REQUIRE(test::max_rel_diff(step, full.narrow(1, t, 1)) <= 1e-5);
  }
}
}  // namespace

TEST_CASE("The fast engine computes the readable path's logits: plain, padded and cached forwards") {
  at::NoGradGuard no_grad;
  for (Shape s : kShapes) {
    Model m = fused_model(s);
    INFO("shape " << static_cast<int>(s));
    at::Tensor ids = at::randint(0, 64, {2, 9}, at::kLong).to(test::device());
    REQUIRE(test::max_rel_diff(m->forward(ids), m->forward(ids, readable())) <= 1e-5);

    at::Tensor mask = at::ones({2, 9}, at::kLong);
    mask[1].narrow(0, 0, 3).zero_();  // row 1 left-padded by 3
    REQUIRE(test::max_rel_diff(m->forward(ids, test::with_mask(mask)), m->forward(ids, readable(test::with_mask(mask)))) <=
            1e-5);

    // Prefill 5 tokens, then 4 one-token steps, each path with its own cache.
    KVCache fast = KVCache::for_model(m->config(), 2, 9, m->options());
    KVCache slow = KVCache::for_model(m->config(), 2, 9, m->options());
    at::Tensor a = m->forward(ids.narrow(1, 0, 5), test::with_cache(fast));
    at::Tensor b = m->forward(ids.narrow(1, 0, 5), readable(test::with_cache(slow)));
    REQUIRE(test::max_rel_diff(a, b) <= 1e-5);
    for (int64_t t = 5; t < 9; ++t) {
      a = m->forward(ids.narrow(1, t, 1), test::with_cache(fast));
      b = m->forward(ids.narrow(1, t, 1), readable(test::with_cache(slow)));
      INFO("step at position " << t);
      REQUIRE(test::max_rel_diff(a, b) <= 1e-5);
    }
    REQUIRE(test::max_rel_diff(fast.keys(2), slow.keys(2)) <= 1e-5);
    REQUIRE(test::max_rel_diff(fast.values(0), slow.values(0)) <= 1e-5);
  }
}

TEST_CASE("The fast engine's static-shape step (CUDA graphs' step) computes the readable path's logits") {
  at::NoGradGuard no_grad;
  for (Shape s : kShapes) {
    for (int64_t batch : {1, 2}) {
      Model m = fused_model(s);
      INFO("shape " << static_cast<int>(s) << " batch " << batch);
      at::Tensor ids = at::randint(0, 64, {batch, 8}, at::kLong).to(test::device());
      at::Tensor full = m->forward(ids, readable());
      check_static_steps(*m, ids, full);
    }
  }
}

TEST_CASE("A static-shape step refuses an unfused model") {
  at::NoGradGuard no_grad;
  Model m(config(Shape::Gqa), at::TensorOptions().dtype(at::kFloat));
  init_weights(*m, 11, 0.2);
  KVCache cache = KVCache::for_model(m->config(), 1, 4, m->options());
  ForwardOptions o;
  o.cache = &cache;
  o.positions = at::zeros({1, 1}, at::kLong);
  REQUIRE_THROWS_WITH(mechlens::detail::StaticStep::run(*m, at::zeros({1, 1}, at::kLong), o, at::zeros({1}, at::kLong)),
                      Catch::Contains("fused model"));
}

TEST_CASE("A static-shape step runs hooked blocks on the readable path at the same slot: the readable logits") {
  // What a captured CUDA-graph step with capturable hooks runs (generation/cuda_graph.hpp).
  at::NoGradGuard no_grad;
  for (Shape s : kShapes) {
    for (int64_t batch : {1, 2}) {
      Model m = fused_model(s);
      INFO("shape " << static_cast<int>(s) << " batch " << batch);
      at::Tensor ids = at::randint(0, 64, {batch, 8}, at::kLong).to(test::device());
      const at::Tensor plain = m->forward(ids, readable());
      auto scope = m->apply((steer("blocks.1.hook_resid_post", at::randn({64}, at::kFloat), 0.5) |
                             zero_ablate("blocks.0.attn.hook_z", Selection().at_heads({1})))
                                .scope(Scope::Both));
      const at::Tensor full = m->forward(ids, readable());
      REQUIRE(test::max_rel_diff(full, plain) > 1e-3);  // the hooks change the logits
      check_static_steps(*m, ids, full);
    }
  }
}

TEST_CASE("A hooked block takes the readable path while the others stay in the engine: same result") {
  at::NoGradGuard no_grad;
  for (Shape s : kShapes) {
    Model m = fused_model(s);
    at::Tensor ids = at::randint(0, 64, {2, 7}, at::kLong).to(test::device());
    at::Tensor steer = at::randn({m->config().d_model()}, at::kFloat).to(test::device());
    auto h = m->add_hook("blocks.1.hook_resid_mid", [&](const at::Tensor& x, const HookContext&) {
      return std::optional<at::Tensor>(x + steer);
    });
    INFO("shape " << static_cast<int>(s));
    at::Tensor mixed = m->forward(ids), all_readable = m->forward(ids, readable());
    REQUIRE(test::max_rel_diff(mixed, all_readable) <= 1e-5);
    h.reset();
    REQUIRE(test::max_rel_diff(m->forward(ids), mixed) > 1e-3);  // the steering did act
  }
}

TEST_CASE("In bfloat16 the fast engine stays within the parity bound of the readable path") {
  at::NoGradGuard no_grad;
  for (Shape s : kShapes) {
    Model m = fused_model(s, at::kBFloat16);
    at::Tensor ids = at::randint(0, 64, {2, 9}, at::kLong).to(test::device());
    INFO("shape " << static_cast<int>(s));
    REQUIRE(m->forward(ids).scalar_type() == at::kBFloat16);
    REQUIRE(test::max_rel_diff(m->forward(ids), m->forward(ids, readable())) <= 2e-2);
  }
}

TEST_CASE("The fusion survives to(): parameters stay views of the fused matrices, edits still act") {
  at::NoGradGuard no_grad;
  Model m = fused_model(Shape::Bias);
  m->to(at::kDouble);
  REQUIRE(m->dtype() == at::kDouble);
  REQUIRE(m->fused());
  auto params = m->named_parameters();
  const at::Tensor& q = params["model.layers.0.self_attn.q_proj.weight"];
  const at::Tensor& k = params["model.layers.0.self_attn.k_proj.weight"];
  const at::Tensor& gate = params["model.layers.2.mlp.gate_proj.weight"];
  const at::Tensor& up = params["model.layers.2.mlp.up_proj.weight"];
  REQUIRE(q.scalar_type() == at::kDouble);
  // Adjacent rows of one matrix, as fuse_projections left them.
  REQUIRE(static_cast<const char*>(k.data_ptr()) == static_cast<const char*>(q.data_ptr()) + q.nbytes());
  REQUIRE(static_cast<const char*>(up.data_ptr()) == static_cast<const char*>(gate.data_ptr()) + gate.nbytes());

  at::Tensor ids = at::randint(0, 64, {1, 6}, at::kLong).to(test::device());
  at::Tensor before = m->forward(ids);
  REQUIRE(before.scalar_type() == at::kDouble);
  REQUIRE(test::max_rel_diff(before, m->forward(ids, readable())) <= 1e-12);
  params["model.layers.1.self_attn.v_proj.weight"].mul_(0.5);  // an in-place edit reaches both paths
  at::Tensor after = m->forward(ids);
  REQUIRE(test::max_rel_diff(after, before) > 1e-3);
  REQUIRE(test::max_rel_diff(after, m->forward(ids, readable())) <= 1e-12);
}

TEST_CASE("Gradients with respect to activations flow through a fused model (the engine steps aside)") {
  Model m = fused_model(Shape::Gqa);
  for (auto& p : m->parameters()) p.set_requires_grad(false);  // frozen weights, as load_model leaves them
  at::Tensor ids = at::randint(0, 64, {1, 6}, at::kLong).to(test::device());
  auto grad_of_embedding = [&](bool engine) {
    at::Tensor leaf;
    auto h = m->add_hook("hook_embed", [&](const at::Tensor& x, const HookContext&) {
      leaf = x.detach().requires_grad_(true);
      return std::optional<at::Tensor>(leaf);
    });
    ForwardOptions o;
    o.fast_engine = engine;
    m->forward(ids, o).select(1, 5).select(0, 0)[3].backward();
    REQUIRE(leaf.grad().defined());
    return leaf.grad();
  };
  at::Tensor fast = grad_of_embedding(true), slow = grad_of_embedding(false);
  REQUIRE(fast.abs().max().item<double>() > 0);
  REQUIRE(test::max_rel_diff(fast, slow) <= 1e-6);
}

TEST_CASE("generate() gives the same tokens with and without the fast engine", "[generation]") {
  at::NoGradGuard no_grad;
  for (Shape s : kShapes) {
    Model m = fused_model(s);
    std::vector<std::vector<int64_t>> prompts{{1, 5, 9, 2}, {3, 4}};
    GenerationOptions g;
    g.max_new_tokens = 6;
    g.use_model_eos = false;
    g.record_margins = true;
    GenerationResult fast = generate(*m, prompts, g);
    // An identity hook on every block's output sends every block down the readable path.
    auto h = m->add_hook("blocks.*.hook_resid_post", [](const at::Tensor&, const HookContext&) { return std::nullopt; });
    GenerationResult slow = generate(*m, prompts, g);
    INFO("shape " << static_cast<int>(s));
    for (size_t r = 0; r < prompts.size(); ++r) {
      // Compare up to the first near-tie (float32 summation order may pick either token there).
      size_t n = 0;
      while (n < slow.margins[r].size() && slow.margins[r][n] > 1e-4) ++n;
      REQUIRE(std::vector<int64_t>(fast.tokens[r].begin(), fast.tokens[r].begin() + static_cast<long>(n)) ==
              std::vector<int64_t>(slow.tokens[r].begin(), slow.tokens[r].begin() + static_cast<long>(n)));
    }
  }
}
