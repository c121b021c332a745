// Invariants of the model that need no reference file: hook names and order, caching, padding,
// the cache after a failed forward, patches from a cache that is still recording.
#include <algorithm>

#include <mechlens/hooks/hook_name.hpp>
#include <mechlens/interventions/patch.hpp>
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

TEST_CASE("The model lists every docs/design.md hook point, per layer, in forward order") {
  Model m = tiny_model();
  auto names = m->hook_names();
  REQUIRE(names.front() == "hook_embed");
  REQUIRE(names.back() == "ln_final.hook_normalized");
  for (const char* site : {"hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                           "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores", "attn.hook_pattern",
                           "attn.hook_z", "attn.hook_result", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized",
                           "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"}) {
    for (int l = 0; l < 3; ++l) {
      std::string name = "blocks." + std::to_string(l) + "." + site;
      INFO(name);
      REQUIRE(std::find(names.begin(), names.end(), name) != names.end());
    }
  }
  REQUIRE(names.size() == 2 + 3 * 19);
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
    m->fuse_projections();  // the static step is the fast engine's
    at::Tensor ids = at::randint(0, 50, {2, 8}, at::kLong);
    at::Tensor full = m->forward(ids);
    KVCache cache = KVCache::for_model(m->config(), 2, 12, m->options());
    m->forward(ids.narrow(1, 0, 4), test::with_cache(cache));
    for (int64_t t = 4; t < 8; ++t) {
      ForwardOptions o;
      o.cache = &cache;
      o.positions = at::full({2, 1}, t, at::kLong);
      at::Tensor step = mechlens::detail::StaticStep::run(*m, ids.narrow(1, t, 1), o, at::full({1}, t, at::kLong));
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

TEST_CASE("stop_after_layer with a KV cache is refused before the cache changes") {
  Model m = tiny_model();
  KVCache cache = KVCache::for_model(m->config(), 1, 8, m->options());
  ForwardOptions o;
  o.cache = &cache;
  o.stop_after_layer = 1;
  REQUIRE_THROWS_WITH(m->forward(at::randint(0, 50, {1, 5}, at::kLong), o),
                      Catch::Contains("stop_after_layer 1") && Catch::Contains("layers 2:3"));
  REQUIRE(cache.length() == 0);
  REQUIRE_FALSE(cache.valid_storage().any().item<bool>());
  o.stop_after_layer = 2;  // the last layer: every layer is written, so it is allowed
  REQUIRE_FALSE(m->forward(at::randint(0, 50, {1, 5}, at::kLong), o).defined());
  REQUIRE(cache.length() == 5);
}

TEST_CASE("A forward that fails in a hook leaves the cache as it was, validity flags included") {
  for (bool static_after : {false, true}) {
    Model m = tiny_model();
    m->fuse_projections();
    at::Tensor ids = at::randint(0, 50, {1, 8}, at::kLong);
    at::Tensor full = m->forward(ids);
    KVCache cache = KVCache::for_model(m->config(), 1, 12, m->options());
    m->forward(ids.narrow(1, 0, 4), test::with_cache(cache));
    {
      auto boom = m->add_hook("blocks.1.hook_resid_post", [](const at::Tensor&, const HookContext&) -> std::optional<at::Tensor> {
        throw std::runtime_error("hook failed");
      });
      REQUIRE_THROWS_WITH(m->forward(at::randint(0, 50, {1, 3}, at::kLong), test::with_cache(cache)),
                          Catch::Contains("hook failed"));
    }
    REQUIRE(cache.length() == 4);
    // Slots 4..6 were announced, then abandoned: no longer valid (a static step reads validity
    // over the whole capacity).
    REQUIRE(cache.valid_storage().narrow(1, 4, 8).any().item<bool>() == false);
    at::Tensor step;
    if (static_after) {
      ForwardOptions o;
      o.cache = &cache;
      o.positions = at::full({1, 1}, 4, at::kLong);
      step = mechlens::detail::StaticStep::run(*m, ids.narrow(1, 4, 1), o, at::full({1}, 4, at::kLong));
    } else {
      step = m->forward(ids.narrow(1, 4, 1), test::with_cache(cache));
    }
    INFO("static step after the failure: " << static_after);
    REQUIRE(test::max_rel_diff(step, full.narrow(1, 4, 1)) < 1e-5);
  }
}

TEST_CASE("Attention and MLP hooks fire in TransformerLens' order, fused projections or not") {
  for (bool fused : {false, true}) {
    Model m = tiny_model();
    if (fused) m->fuse_projections();
    std::vector<std::string> seen;
    auto h = m->add_hook("blocks.1.*", [&](const at::Tensor&, const HookContext& ctx) {
      seen.push_back(ctx.name.substr(std::string("blocks.1.").size()));
      return std::nullopt;
    });
    m->forward(at::randint(0, 50, {1, 5}, at::kLong));
    INFO("fused " << fused);
    REQUIRE(seen == std::vector<std::string>{"hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k",
                                             "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k",
                                             "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
                                             "attn.hook_result", "hook_attn_out", "hook_resid_mid",
                                             "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear",
                                             "mlp.hook_post", "hook_mlp_out", "hook_resid_post"});
    // The order hook_names() lists them in is the order they fire.
    std::vector<std::string> listed;
    for (const auto& n : m->hook_names())
      if (n.rfind("blocks.1.", 0) == 0) listed.push_back(n.substr(std::string("blocks.1.").size()));
    REQUIRE(listed == seen);
  }
}

TEST_CASE("Cached activations are compact copies: a view of a larger buffer does not pin it") {
  Model m = tiny_model();
  m->fuse_projections();
  // An earlier hook hands on views of buffers twice their size (as a user's slicing hook would).
  auto widen = m->add_hook("blocks.*.attn.hook_?", [](const at::Tensor& x, const HookContext&) {
    return std::optional<at::Tensor>(at::cat({x, x}, -1).narrow(-1, 0, x.size(-1)));
  });
  CacheOptions keep;
  keep.names = {"blocks.*.attn.hook_v", "blocks.*.attn.hook_q", "blocks.*.attn.hook_rot_k"};
  at::Tensor ids = at::randint(0, 50, {2, 6}, at::kLong);
  auto [logits, cache] = m->run_with_cache(ids, keep);
  // What the cache keeps alive is the storages it holds; each must be exactly its tensor.
  int64_t alive = 0;
  for (const auto& [name, t] : cache.tensors()) {
    INFO(name);
    REQUIRE(static_cast<int64_t>(t.storage().nbytes()) == t.numel() * static_cast<int64_t>(t.element_size()));
    alive += static_cast<int64_t>(t.storage().nbytes());
  }
  REQUIRE(alive == cache.bytes());
  REQUIRE(cache.bytes() == ActivationCache::estimate_bytes(m->hooks(), keep, 2, 6, 6, at::kFloat));
}

TEST_CASE("A patch from a cache that is still recording reads the source run, not the target's own activation") {
  Model model = tiny_model();
  at::Tensor source_ids = at::randint(0, 50, {1, 6}, at::kLong), target_ids = at::randint(0, 50, {1, 6}, at::kLong);
  CacheOptions keep;
  keep.names = {"blocks.1.hook_resid_post"};
  // Reference: a detached cache of the source run.
  auto [src_logits, detached] = model->run_with_cache(source_ids, keep);
  at::Tensor expected;
  {
    auto scope = model->apply(patch("blocks.1.hook_resid_post", detached));
    expected = model->forward(target_ids);
  }
  // The same patch from a cache still attached (it records the target run too).
  ActivationCache recording = ActivationCache::attach(model->hooks(), keep);
  model->forward(source_ids);
  REQUIRE(recording.attached());
  at::Tensor patched;
  {
    auto scope = model->apply(patch("blocks.1.hook_resid_post", recording));
    patched = model->forward(target_ids);
  }
  REQUIRE(test::max_rel_diff(patched, expected) < 1e-6);
  REQUIRE(test::max_rel_diff(patched, src_logits) < 1e-6);  // everything after layer 1 is the source's
  recording.detach();
}

TEST_CASE("Offloading a CUDA activation cache to the CPU is complete when the host reads it", "[cuda]") {
  if (!test::device().is_cuda())
    FAIL("a [cuda] test: run it with MECHLENS_TEST_DEVICE=cuda (ctest -R models_cuda in a CUDA build)");
  // Large activations (256 MiB per hook), new prompts each trial (a reused pinned buffer still
  // holds the previous trial's values), the GPU kept busy before the forward so its copies are
  // still queued when run_with_cache returns, and the host reading the last batch row (written
  // last) before anything else touches the device (a blocking copy would wait for the stream and
  // hide a missing wait). Without the cache's wait the host reads a stale or half-written buffer.
  ModelConfig c = tiny_config();
  c.hidden_size = 1024;
  c.head_dim = 256;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  const auto on_device = at::TensorOptions().dtype(at::kFloat).device(test::device());
  Model m(c, on_device);
  init_weights(*m, 7, 0.2);
  const int64_t batch = 64;
  CacheOptions on_gpu, offload;
  on_gpu.names = offload.names = {"blocks.*.hook_resid_post"};
  offload.device = at::Device(at::kCPU);
  const std::vector<std::string> names{"blocks.1.hook_resid_post", "blocks.0.hook_resid_post"};
  at::Tensor busy = at::randn({8192, 8192}, on_device), sink = at::empty({8192, 8192}, on_device);
  for (int trial = 0; trial < 3; ++trial) {
    at::Tensor ids = at::randint(0, 50, {batch, 1024}, at::kLong);
    auto [l1, reference] = m->run_with_cache(ids, on_gpu);
    for (int k = 0; k < 40; ++k) at::mm_out(sink, busy, busy);  // tens of milliseconds of queued work
    auto [l2, host] = m->run_with_cache(ids, offload);
    std::vector<at::Tensor> read;
    for (const auto& name : names) read.push_back(host.get(name).select(0, batch - 1).clone());
    for (size_t k = 0; k < names.size(); ++k) {
      INFO(names[k] << " trial " << trial);
      REQUIRE(host.get(names[k]).device().is_cpu());
      REQUIRE(read[k].equal(reference.get(names[k]).select(0, batch - 1).cpu()));
    }
  }
}

TEST_CASE("hook_name builds every block hook point's name, from its site or TransformerLens' short name") {
  Model m = tiny_model();
  const auto names = m->hook_names();
  auto known = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(hook_name(2, "attn.hook_v") == "blocks.2.attn.hook_v");
  CHECK(hook_name(2, "v") == "blocks.2.attn.hook_v");
  CHECK(hook_name(0, "resid_post") == "blocks.0.hook_resid_post");
  CHECK(hook_name(1, "ln1") == "blocks.1.ln1.hook_normalized");
  for (const auto& [short_name, site] : mechlens::detail::hook_short_names()) {
    INFO(short_name);
    CHECK(known(hook_name(1, short_name)));
    CHECK(hook_name(1, short_name) == hook_name(1, site));
  }
  // Every block hook point of the model is hook_name(layer, its site).
  for (const auto& info : m->hook_info()) {
    if (info.layer < 0) continue;
    const std::string prefix = "blocks." + std::to_string(info.layer) + ".";
    REQUIRE(info.name.rfind(prefix, 0) == 0);
    CHECK(hook_name(info.layer, info.name.substr(prefix.size())) == info.name);
  }
  CHECK_THROWS_AS(hook_name(-1, "v"), ArgumentError);
  CHECK_THROWS_AS(hook_name(0, ""), ArgumentError);
}

TEST_CASE("An activation cache is read by site and layer, as TransformerLens' cache[\"v\", 24]") {
  Model m = tiny_model();
  CacheOptions keep;
  keep.names = {"blocks.*.attn.hook_v", "blocks.*.hook_resid_post"};
  auto [logits, cache] = m->run_with_cache(at::arange(1, 5, at::kLong).view({1, 4}), keep);
  CHECK(at::equal(cache("v", 1), cache["blocks.1.attn.hook_v"]));
  CHECK(at::equal(cache.get("hook_resid_post", 2), cache["blocks.2.hook_resid_post"]));
  CHECK_THROWS_AS(cache("z", 0), NotFoundError);
}

TEST_CASE("attn.hook_result is each head's share of the attention output: editing a head there is editing its hook_z") {
  Model m = tiny_model();
  const at::Tensor ids = at::randint(0, 50, {2, 6}, at::kLong);
  const at::Tensor plain = m->forward(ids);
  // Hooked but unchanged, the results summed over heads give the same output.
  {
    auto h = m->add_hook("blocks.*.attn.hook_result", [](const at::Tensor&, const HookContext&) { return std::nullopt; });
    REQUIRE(test::max_rel_diff(m->forward(ids), plain) < 1e-5);
  }
  auto zero_head = [](int64_t dim) {
    return [dim](const at::Tensor& x, const HookContext&) -> std::optional<at::Tensor> {
      at::Tensor y = x.clone();
      y.select(dim, 1).zero_();
      return y;
    };
  };
  at::Tensor via_z, via_result;
  {
    auto h = m->add_hook("blocks.0.attn.hook_z", zero_head(2));
    via_z = m->forward(ids);
  }
  {
    auto h = m->add_hook("blocks.0.attn.hook_result", zero_head(2));
    via_result = m->forward(ids);
  }
  REQUIRE(test::max_rel_diff(via_result, via_z) < 1e-5);
  REQUIRE(test::max_rel_diff(via_result, plain) > 1e-3);  // the edit did something
  // A cache with no names leaves the per-head results out; named, they are kept.
  auto [logits, all] = m->run_with_cache(ids, CacheOptions{});
  CHECK_FALSE(all.contains("blocks.0.attn.hook_result"));
  CacheOptions named;
  named.names = {"blocks.0.attn.hook_result", "blocks.0.hook_attn_out"};
  auto [logits2, kept] = m->run_with_cache(ids, named);
  REQUIRE(kept.get("blocks.0.attn.hook_result").sizes() == std::vector<int64_t>{2, 6, 4, 32});
  REQUIRE(test::max_rel_diff(kept.get("blocks.0.attn.hook_result").sum(2), kept.get("blocks.0.hook_attn_out")) < 1e-5);
}
