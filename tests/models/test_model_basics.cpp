// Invariants of the model that need no reference file: hook names, caching, padding.
#include <mechlens/models/init.hpp>
#include <mechlens/models/model.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
ModelConfig tiny_config(bool sliding = false) {
  ModelConfig c;
  c.model_type = sliding ? "mistral" : "llama";
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  if (sliding) c.sliding_window = 4;
  return c;
}
Model tiny_model(bool sliding = false) {
  Model m(tiny_config(sliding), at::TensorOptions().dtype(at::kFloat));
  init_weights(*m, 7, 0.2);
  return m;
}
}  // namespace

TEST_CASE("The model lists every DESIGN.md hook point, per layer, in forward order") {
  Model m = tiny_model();
  auto names = m->hook_names();
  REQUIRE(names.front() == "hook_embed");
  REQUIRE(names.back() == "ln_final.hook_normalized");
  for (const char* site : {"hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                           "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_pattern", "attn.hook_z",
                           "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "hook_mlp_out",
                           "hook_resid_post"}) {
    for (int l = 0; l < 3; ++l) {
      std::string name = "blocks." + std::to_string(l) + "." + site;
      INFO(name);
      REQUIRE(std::find(names.begin(), names.end(), name) != names.end());
    }
  }
  REQUIRE(names.size() == 2 + 3 * 14);
}

TEST_CASE("Parameter names are the Hugging Face checkpoint keys") {
  Model m = tiny_model();
  std::set<std::string> keys;
  for (auto& p : m->named_parameters()) keys.insert(p.key());
  REQUIRE(keys.count("model.embed_tokens.weight"));
  REQUIRE(keys.count("model.layers.2.self_attn.q_proj.weight"));
  REQUIRE(keys.count("model.layers.0.mlp.down_proj.weight"));
  REQUIRE(keys.count("model.layers.1.post_attention_layernorm.weight"));
  REQUIRE(keys.count("model.norm.weight"));
  REQUIRE(keys.count("lm_head.weight"));
}

TEST_CASE("A misspelt hook name is an error that suggests the right one") {
  Model m = tiny_model();
  REQUIRE_THROWS_WITH(m->add_hook("blocks.1.attn.hook_vv", [](auto&, auto&) { return std::nullopt; }),
                      Catch::Contains("blocks.1.attn.hook_v"));
  REQUIRE_THROWS_AS(m->add_hook("blocks.*.attn.hook_nothing", [](auto&, auto&) { return std::nullopt; }),
                    NotFoundError);
}

TEST_CASE("Hook points report the documented shapes") {
  Model m = tiny_model();
  at::Tensor ids = at::randint(0, 50, {2, 6}, at::kLong);
  std::map<std::string, std::vector<int64_t>> seen;
  auto handle = m->add_hook("*", [&](const at::Tensor& x, const HookContext& ctx) {
    seen[ctx.name] = x.sizes().vec();
    return std::nullopt;
  });
  m->forward(ids);
  for (const auto& info : m->hook_info()) {
    INFO(info.name);
    REQUIRE(seen.count(info.name));
    auto* point = m->hooks().find(info.name);
    REQUIRE(seen[info.name] == point->concrete_shape(2, 6, 6));
  }
  REQUIRE(seen["blocks.0.attn.hook_k"] == std::vector<int64_t>{2, 6, 2, 8});
  REQUIRE(seen["blocks.0.attn.hook_pattern"] == std::vector<int64_t>{2, 4, 6, 6});
}

TEST_CASE("Decoding token by token through the KV cache gives the full forward's logits") {
  for (bool sliding : {false, true}) {
    Model m = tiny_model(sliding);
    at::Tensor ids = at::randint(0, 50, {1, 9}, at::kLong);
    at::Tensor full = m->forward(ids);
    KVCache cache = KVCache::for_model(m->config(), 1, 4, m->options());  // grows past 4
    at::Tensor first = m->forward(ids.narrow(1, 0, 5), test::with_cache(cache));
    REQUIRE(test::max_rel_diff(first, full.narrow(1, 0, 5)) < 1e-5);
    for (int64_t t = 5; t < 9; ++t) {
      at::Tensor step = m->forward(ids.narrow(1, t, 1), test::with_cache(cache));
      INFO("sliding " << sliding << " position " << t);
      REQUIRE(test::max_rel_diff(step, full.narrow(1, t, 1)) < 1e-5);
    }
    REQUIRE(cache.length() == 9);
  }
}

TEST_CASE("A left-padded batch gives each row's own logits") {
  for (bool sliding : {false, true}) {
    Model m = tiny_model(sliding);
    std::vector<int64_t> lengths{3, 7, 5};
    const int64_t n = 7;
    at::Tensor ids = at::zeros({3, n}, at::kLong), mask = at::zeros({3, n}, at::kLong);
    std::vector<at::Tensor> rows;
    for (int64_t r = 0; r < 3; ++r) {
      at::Tensor row = at::randint(1, 50, {1, lengths[r]}, at::kLong);
      rows.push_back(row);
      ids[r].narrow(0, n - lengths[r], lengths[r]).copy_(row[0]);
      mask[r].narrow(0, n - lengths[r], lengths[r]).fill_(1);
    }
    at::Tensor batched = m->forward(ids, test::with_mask(mask));
    for (int64_t r = 0; r < 3; ++r) {
      at::Tensor alone = m->forward(rows[r]);
      INFO("row " << r << " sliding " << sliding);
      REQUIRE(test::max_rel_diff(batched[r].narrow(0, n - lengths[r], lengths[r]), alone[0]) < 1e-5);
    }
  }
}

TEST_CASE("Static-shape decoding steps (what CUDA graphs capture) give the eager steps' logits") {
  for (bool sliding : {false, true}) {
    Model m = tiny_model(sliding);
    at::Tensor ids = at::randint(0, 50, {2, 8}, at::kLong);
    at::Tensor full = m->forward(ids);
    KVCache cache = KVCache::for_model(m->config(), 2, 12, m->options());
    m->forward(ids.narrow(1, 0, 4), test::with_cache(cache));
    for (int64_t t = 4; t < 8; ++t) {
      ForwardOptions o;
      o.cache = &cache;
      o.slot = at::full({1}, t, at::kLong);
      o.positions = at::full({2, 1}, t, at::kLong);
      at::Tensor step = m->forward(ids.narrow(1, t, 1), o);
      cache.set_length(t + 1, false);
      INFO("sliding " << sliding << " position " << t);
      REQUIRE(test::max_rel_diff(step, full.narrow(1, t, 1)) < 1e-5);
    }
  }
}

TEST_CASE("A forward can stop after a layer, running that layer's hooks and no later ones") {
  Model m = tiny_model();
  std::vector<std::string> seen;
  auto h = m->add_hook("*hook_resid_post", [&](const at::Tensor&, const HookContext& ctx) {
    seen.push_back(ctx.name);
    return std::nullopt;
  });
  ForwardOptions o;
  o.stop_after_layer = 1;
  REQUIRE_FALSE(m->forward(at::randint(0, 50, {1, 5}, at::kLong), o).defined());
  REQUIRE(seen == std::vector<std::string>{"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"});
}
