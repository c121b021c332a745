// Generation invariants that need no reference file: padded batches equal rows run alone,
// seeded sampling repeats, stop tokens end a row, and re-rotated splices equal recomputed keys.
#include <limits>

#include <mechlens/generation/generate.hpp>
#include <mechlens/interventions/kv_splice.hpp>
#include <mechlens/models/init.hpp>
#include <mechlens/models/kv_cache_io.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
Model tiny(bool sliding = false) {
  ModelConfig c;
  c.model_type = sliding ? "mistral" : "llama";
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = 1000.0;
  if (sliding) c.sliding_window = 3;
  Model m(c, at::TensorOptions().dtype(at::kFloat));
  init_weights(*m, 11, 0.3);
  return m;
}
}  // namespace

TEST_CASE("A left-padded batch generates each row's own greedy tokens") {
  for (bool sliding : {false, true}) {
    Model m = tiny(sliding);
    std::vector<std::vector<int64_t>> prompts{{3, 4, 5}, {7, 8, 9, 10, 11, 12}, {13}, {14, 15, 16, 17}};
    GenerationOptions g;
    g.max_new_tokens = 6;
    g.use_model_eos = false;
    g.record_margins = true;
    auto batched = generate(*m, prompts, g);
    for (size_t r = 0; r < prompts.size(); ++r) {
      auto alone = generate(*m, {prompts[r]}, g);
      INFO("row " << r << " sliding " << sliding);
      REQUIRE(batched.tokens[r] == alone.tokens[0]);
      for (size_t t = 0; t < alone.margins[0].size(); ++t)
        REQUIRE(std::abs(batched.margins[r][t] - alone.margins[0][t]) < 1e-4);
    }
  }
}

TEST_CASE("Seeded sampling repeats exactly and different seeds differ") {
  Model m = tiny();
  GenerationOptions g;
  g.max_new_tokens = 12;
  g.use_model_eos = false;
  g.sampling.temperature = 1.5;
  g.sampling.seed = 42;
  auto a = generate(*m, {{1, 2, 3}}, g);
  auto b = generate(*m, {{1, 2, 3}}, g);
  REQUIRE(a.tokens == b.tokens);
  g.sampling.seed = 43;
  auto c = generate(*m, {{1, 2, 3}}, g);
  REQUIRE(a.tokens != c.tokens);
  g.sampling.top_k = 1;  // top-1 sampling is greedy
  auto k1 = generate(*m, {{1, 2, 3}}, g);
  GenerationOptions greedy = g;
  greedy.sampling = SamplingOptions{};
  REQUIRE(k1.tokens == generate(*m, {{1, 2, 3}}, greedy).tokens);
}

TEST_CASE("A stop token ends its row and is kept as the last token") {
  Model m = tiny();
  GenerationOptions g;
  g.max_new_tokens = 8;
  g.use_model_eos = false;
  auto free_run = generate(*m, {{1, 2, 3}}, g);
  g.stop_tokens = {free_run.tokens[0][2]};
  auto stopped = generate(*m, {{1, 2, 3}}, g);
  auto first = std::find(free_run.tokens[0].begin(), free_run.tokens[0].end(), g.stop_tokens[0]);
  size_t expect = static_cast<size_t>(first - free_run.tokens[0].begin()) + 1;
  REQUIRE(stopped.tokens[0].size() == expect);
  REQUIRE(stopped.stopped[0]);
}

TEST_CASE("Re-rotated keys spliced from other positions equal the keys computed at the new positions") {
  // Layer 0's keys depend only on the token and its position, so moving the keys of tokens X
  // (computed at positions 0..3) to positions 5..8 with re-rotation must give the keys of X
  // computed after a 5-token prefix.
  Model m = tiny();
  std::vector<int64_t> x{21, 22, 23, 24}, prefix{1, 2, 3, 4, 5};
  std::vector<int64_t> full = prefix;
  full.insert(full.end(), x.begin(), x.end());
  KVCache alone = encode_prompt(*m, x);
  KVCache target = encode_prompt(*m, full);
  KVCache spliced = target.clone();
  spliced.key_storage().zero_();
  SpliceOptions opt;
  opt.align = Align::Right;
  opt.layers = LayerRange{0, 1};
  opt.rerotate = true;
  opt.rope = m->config().rope;
  splice_kv(spliced, alone, opt);
  at::Tensor got = spliced.keys(0).narrow(2, 5, 4), want = target.keys(0).narrow(2, 5, 4);
  REQUIRE(test::max_rel_diff(got, want) < 1e-5);
  // Without re-rotation the keys keep the source's rotation and differ.
  opt.rerotate = false;
  splice_kv(spliced, alone, opt);
  REQUIRE(test::max_rel_diff(spliced.keys(0).narrow(2, 5, 4), want) > 1e-2);
}

TEST_CASE("A KV cache saved to safetensors loads back slot for slot and decodes the same") {
  Model m = tiny();
  PromptState state = prefill(*m, std::vector<std::vector<int64_t>>{{3, 4, 5, 6}, {7, 8}}, 6);
  const std::string path = "/tmp/mechlens_kv_cache_test_" + std::to_string(::getpid()) + ".safetensors";
  save_kv_cache(path, state.cache);
  KVCache loaded = load_kv_cache(path, m->options(), 6);
  REQUIRE(loaded.length() == state.cache.length());
  REQUIRE(loaded.has_padding());
  REQUIRE(loaded.keys(1).equal(state.cache.keys(1)));
  REQUIRE(loaded.values(0).equal(state.cache.values(0)));
  REQUIRE(loaded.positions().equal(state.cache.positions()));
  REQUIRE(loaded.valid().equal(state.cache.valid()));
  GenerationOptions g;
  g.max_new_tokens = 5;
  g.use_model_eos = false;
  PromptState copy = state.clone();
  copy.cache = std::move(loaded);
  REQUIRE(decode(*m, copy, g).tokens == decode(*m, state, g).tokens);
  std::remove(path.c_str());
  REQUIRE_THROWS_WITH(load_kv_cache(MECHLENS_TEST_DATA "/models/llama_tied/model.safetensors", m->options()),
                      Catch::Contains("not a mechlens KV cache"));
}

TEST_CASE("A splice of padded batches whose rows differ in length is refused instead of copying padding") {
  Model m = tiny();
  PromptState target = prefill(*m, std::vector<std::vector<int64_t>>{{3, 4, 5, 6, 7}, {8, 9, 10, 11, 12}}, 4);
  PromptState ragged = prefill(*m, std::vector<std::vector<int64_t>>{{3, 4, 5, 6, 7}, {8, 9}}, 4);
  PromptState even = prefill(*m, std::vector<std::vector<int64_t>>{{13, 14, 15, 16, 17}, {18, 19, 20, 21, 22}}, 4);
  SpliceOptions right;
  right.align = Align::Right;
  REQUIRE_THROWS_WITH(splice_kv(target.cache, ragged.cache, right), Catch::Contains("row by row"));
  REQUIRE_NOTHROW(splice_kv(target.cache, even.cache, right));
  REQUIRE(target.cache.keys(0).equal(even.cache.keys(0)));
}

TEST_CASE("Running past the model's context is refused with the numbers, unless allowed") {
  ModelConfig c = tiny()->config();
  c.max_position_embeddings = 8;
  Model m(c, at::TensorOptions().dtype(at::kFloat));
  init_weights(*m, 11, 0.3);
  const std::vector<int64_t> prompt{3, 4, 5, 6, 7};

  // A forward of 9 tokens on a context of 8.
  at::Tensor nine = at::arange(1, 10, at::TensorOptions().dtype(at::kLong)).view({1, 9});
  REQUIRE_THROWS_WITH(m->forward(nine), Catch::Contains("9 tokens (0 in the KV cache + 9 new) exceed the model's "
                                                         "context of 8") &&
                                            Catch::Contains("allow_long_context"));
  ForwardOptions fo;
  fo.allow_long_context = true;
  CHECK(m->forward(nine, fo).size(1) == 9);

  // Generation feeds the prompt and every new token but the last: prompt 5 + 5 new tokens feeds
  // 9 positions > 8, refused before prefill allocates anything; 5 + 4 feeds positions 0..7.
  GenerationOptions g;
  g.max_new_tokens = 5;
  g.use_model_eos = false;
  REQUIRE_THROWS_WITH(generate(*m, {prompt}, g), Catch::Contains("generate: a prompt of 5 tokens + max_new_tokens 5 "
                                                                  "exceeds the model's context of 8"));
  g.max_new_tokens = 4;
  CHECK(generate(*m, {prompt}, g).tokens[0].size() == 4);
  // max_new_tokens near 2^63 neither overflows nor reaches the allocator.
  g.max_new_tokens = std::numeric_limits<int64_t>::max();
  REQUIRE_THROWS_WITH(generate(*m, {prompt}, g), Catch::Contains("max_new_tokens 9223372036854775807 exceeds"));
  // decode on a prefilled state checks the same.
  PromptState state = prefill(*m, prompt, 0);
  g.max_new_tokens = 5;
  REQUIRE_THROWS_WITH(decode(*m, state, g), Catch::Contains("decode: a prompt of 5 tokens + max_new_tokens 5"));
  g.allow_long_context = true;
  CHECK(generate(*m, {prompt}, g).tokens[0].size() == 5);
  // A prompt longer than the context is refused by the prefill forward itself.
  REQUIRE_THROWS_WITH(prefill(*m, std::vector<int64_t>(10, 3), 0), Catch::Contains("exceed the model's context of 8"));
}

TEST_CASE("Token ids outside the vocabulary and caches too large to allocate get messages, not LibTorch errors") {
  Model m = tiny();
  at::Tensor bad = at::tensor(std::vector<int64_t>{3, -1, 5}).view({1, 3});
  REQUIRE_THROWS_WITH(m->forward(bad), Catch::Contains("token id -1 is outside the vocabulary [0, 40)"));
  bad = at::tensor(std::vector<int64_t>{3, 40}).view({1, 2});
  REQUIRE_THROWS_WITH(m->forward(bad), Catch::Contains("token id 40 is outside the vocabulary [0, 40)"));
  REQUIRE_THROWS_WITH(KVCache(2, 1, 2, 8, int64_t{1} << 60, at::TensorOptions().dtype(at::kFloat)),
                      Catch::Contains("needs") && Catch::Contains("GiB") && Catch::Contains("cannot be allocated"));
  // Within int64 but beyond any memory (128 TiB): the allocator's refusal comes with the sizes.
  REQUIRE_THROWS_WITH(KVCache(2, 1, 2, 8, int64_t{1} << 40, at::TensorOptions().dtype(at::kFloat)),
                      Catch::Contains("2 layers x batch 1 x 2 KV heads x 1099511627776 slots") &&
                          Catch::Contains("cannot be allocated"));
  REQUIRE_THROWS_WITH(prefill(*m, std::vector<int64_t>{3, 4}, -1), Catch::Contains("extra_capacity -1"));
}

TEST_CASE("An accumulating cache over a generation holds what one forward over the whole sequence gives, "
          "attention patterns included") {
  for (bool sliding : {false, true}) {
    INFO("sliding " << sliding);
    Model m = tiny(sliding);
    const std::vector<int64_t> prompt = {1, 2, 3, 4};
    CacheOptions keep;
    keep.names = {"blocks.*.attn.hook_pattern", "blocks.0.attn.hook_attn_scores", "blocks.1.hook_resid_post",
                  "blocks.1.mlp.hook_post"};
    keep.accumulate = true;
    GenerationOptions g;
    g.max_new_tokens = 5;
    g.use_model_eos = false;
    ActivationCache acc = ActivationCache::attach(m->hooks(), keep);
    const auto out = generate(*m, {prompt}, g);
    acc.detach();
    // The tokens the run processed: the prompt and every generated token but the last.
    std::vector<int64_t> seen = prompt;
    seen.insert(seen.end(), out.tokens[0].begin(), out.tokens[0].end() - 1);
    const auto t = static_cast<int64_t>(seen.size());
    CacheOptions once = keep;
    once.accumulate = false;
    auto [logits, whole] = m->run_with_cache(at::tensor(seen).view({1, t}), once);
    for (const std::string name : {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post",
                                   "blocks.1.mlp.hook_post", "blocks.0.attn.hook_attn_scores"}) {
      INFO(name);
      at::Tensor a = acc.get(name), w = whole.get(name);
      REQUIRE(a.sizes() == w.sizes());
      // Scores are -inf where a query may not attend (the keys after it, and outside a window).
      REQUIRE(at::equal(a.isinf(), w.isinf()));
      CHECK(test::max_rel_diff(a.masked_fill(a.isinf(), 0.0), w.masked_fill(w.isinf(), 0.0)) < 1e-5);
    }
    CHECK(acc.get("blocks.0.attn.hook_pattern").size(2) == t);
  }
}

TEST_CASE("Accumulating forwards whose activations differ beyond positions is an error naming the hook") {
  Model m = tiny();
  CacheOptions keep;
  keep.names = {"blocks.0.attn.hook_pattern"};
  keep.accumulate = true;
  ActivationCache acc = ActivationCache::attach(m->hooks(), keep);
  m->forward(at::tensor(std::vector<int64_t>{1, 2, 3}).view({1, 3}));
  CHECK_THROWS_AS(m->forward(at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 6}).view({2, 3})), ArgumentError);
  CHECK_THROWS_WITH(m->forward(at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 6}).view({2, 3})),
                    Catch::Contains("blocks.0.attn.hook_pattern") && Catch::Contains("[2, 4, 3, 3]") &&
                        Catch::Contains("only positions and key positions may change"));
}
