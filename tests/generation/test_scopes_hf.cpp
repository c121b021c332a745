// Interventions in each generation scope (hooks/intervention.hpp: prompt — the default, the
// pending token included —, generated, both, at_steps) against transformers' generate() with
// PyTorch hooks doing the same (tests/reference/make_scope_references.py, scopes.json per test
// checkpoint): residual patches (exact, right-aligned from longer and shorter sources), a V patch
// of the prompt's last two tokens, a patch of prompt and generated tokens from the source's own
// generation (an accumulating activation cache), steering in four scopes and a head ablation on
// generated tokens; on CUDA the same with the steps captured as a CUDA graph, token for token
// against eager steps. An activation cache with a reserve (which records inside the graph) holds
// layer L's output at the generated tokens as transformers' hooks saw it. Tokens are compared
// while every reference margin up to them is above 1e-3.
#include <mechlens/generation/generate.hpp>
#include <mechlens/hooks/activation_cache.hpp>
#include <mechlens/hooks/hook_name.hpp>
#include <mechlens/interventions/ablation.hpp>
#include <mechlens/interventions/patch.hpp>
#include <mechlens/interventions/steering.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

GenerationOptions greedy(int64_t n) {
  GenerationOptions g;
  g.max_new_tokens = n;
  g.use_model_eos = false;
  return g;
}

Steps steps_named(const std::string& scope) {
  if (scope == "prompt") return Steps::prompt();
  if (scope == "generated") return Steps::generated();
  if (scope == "both") return Steps::all();
  if (scope == "steps 2:4") return Steps::range(2, 4);
  FAIL("unknown scope " << scope);
  return {};
}

// The source's activations at `hook`: one forward over its prompt, or (with `generate_n`) an
// activation cache accumulated over its own greedy generation.
ActivationCache source_cache(Model& model, const std::string& hook, const std::vector<int64_t>& ids,
                             int64_t generate_n = 0, std::vector<int64_t>* generated = nullptr) {
  CacheOptions co;
  co.names = {hook};
  if (generate_n == 0) return model->run_with_cache(ids, co).second;
  co.accumulate = true;
  ActivationCache cache = ActivationCache::attach(model->hooks(), co);
  auto out = generate(*model, {ids}, greedy(generate_n));
  cache.detach();
  if (generated) *generated = out.tokens[0];
  return cache;
}
}  // namespace

TEST_CASE("Interventions in each scope reproduce transformers' generate() with the same hooks") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"}) {
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    const auto ref = io::read_json_file(model_dir(name) + "/scopes.json");
    REQUIRE(ref.at("cases").size() == 10);
    for (const auto& rec : ref.at("cases")) {
      const std::string c = rec.at("case").get<std::string>();
      const std::string hook = rec.at("hook").get<std::string>();
      const Steps steps = steps_named(rec.at("scope").get<std::string>());
      const auto target = rec.at("target_ids").get<std::vector<int64_t>>();
      const auto expected = rec.at("new_ids").get<std::vector<int64_t>>();
      INFO(name << " " << c);
      Intervention iv;
      if (c.rfind("resid_patch", 0) == 0 || c == "v_patch_last2") {
        const auto source = rec.at("source_ids").get<std::vector<int64_t>>();
        Selection sel;
        if (rec.contains("positions_last")) sel.at_positions(Positions::last(rec.at("positions_last").get<int64_t>()));
        std::vector<int64_t> source_new;
        const bool both = c == "resid_patch_both";
        ActivationCache src = source_cache(model, hook, source, both ? static_cast<int64_t>(expected.size()) : 0, &source_new);
        if (both) {
          // The source's generation is transformers' (the patch then reads the same sequence).
          const auto ref_new = rec.at("source_new_ids").get<std::vector<int64_t>>();
          REQUIRE(source_new == ref_new);
          REQUIRE(src.get(hook).size(1) == static_cast<int64_t>(source.size() + ref_new.size()) - 1);
          REQUIRE(src.prompt_columns(hook) == static_cast<int64_t>(source.size()));
        }
        iv = patch(hook, src, sel, parse_align(rec.at("align").get<std::string>()));
      } else if (c.rfind("steer", 0) == 0) {
        const auto v = rec.at("vector").get<std::vector<double>>();
        iv = steer(hook, at::tensor(v, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat), rec.at("scale").get<double>());
      } else if (c == "zero_head_generated") {
        iv = zero_ablate(hook, Selection().at_heads({rec.at("head").get<int64_t>()}));
      } else {
        FAIL("unknown case " << c);
      }
      // The prompt scope is the default: set only the others.
      if (steps != Steps::prompt()) iv = iv.at_steps(steps);
      REQUIRE(iv.scope_str() == rec.at("scope").get<std::string>());
      auto scope = model->apply(iv);
      const auto out = generate(*model, {target}, greedy(static_cast<int64_t>(expected.size())));
      const size_t n = test::comparable(rec.at("margins"));
      REQUIRE(n >= 4);
      for (size_t k = 0; k < n; ++k) {
        INFO("token " << k);
        REQUIRE(out.tokens[0][k] == expected[k]);
      }
      // On CUDA (fused model) the steps from the first one after which the acting hooks stay the
      // same and are all capturable replay a CUDA graph: every case but the patch of generated
      // tokens (a patch reads its source at each step's column). The graph's tokens are the eager
      // steps', every one of them.
      if (test::device().is_cuda() && model->fused()) {
        CHECK(out.used_cuda_graph == (iv.is_capturable() || steps.end <= 4));
        GenerationOptions eager = greedy(static_cast<int64_t>(expected.size()));
        eager.use_cuda_graph = false;
        const auto eager_out = generate(*model, {target}, eager);
        REQUIRE_FALSE(eager_out.used_cuda_graph);
        REQUIRE(out.tokens == eager_out.tokens);
      }
    }
  }
}

TEST_CASE("An activation cache with a reserve records what transformers' generate() feeds, graph or not") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"}) {
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    const auto plain = io::read_json_file(model_dir(name) + "/scopes.json").at("plain");
    const auto target = plain.at("target_ids").get<std::vector<int64_t>>();
    const auto expected = plain.at("new_ids").get<std::vector<int64_t>>();
    const auto rows = plain.at("hidden_generated").get<std::vector<std::vector<double>>>();
    const int64_t layer = plain.at("layer").get<int64_t>(), n_new = static_cast<int64_t>(expected.size());
    const int64_t prompt = static_cast<int64_t>(target.size());
    REQUIRE(static_cast<int64_t>(rows.size()) == n_new - 1);
    std::vector<double> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    const at::Tensor reference = at::tensor(flat, at::TensorOptions().dtype(at::kDouble)).view({n_new - 1, -1});
    for (bool graph : {true, false}) {
      INFO(name << (graph ? " graph" : " eager"));
      CacheOptions co;
      co.names = {hook_name(layer, "hook_resid_post")};
      co.accumulate = true;
      co.reserve = prompt + n_new;
      ActivationCache cache = ActivationCache::attach(model->hooks(), co);
      GenerationOptions g = greedy(n_new);
      g.use_cuda_graph = graph;
      const auto out = generate(*model, {target}, g);
      cache.detach();
      if (test::device().is_cuda() && model->fused()) CHECK(out.used_cuda_graph == graph);
      const size_t n = test::comparable(plain.at("margins"));
      REQUIRE(n >= 4);
      for (size_t k = 0; k < n; ++k) REQUIRE(out.tokens[0][k] == expected[k]);
      // prefill (prompt - 1) + the pending token + the generated tokens fed (n_new - 1).
      const at::Tensor& held = cache.get(co.names[0]);
      REQUIRE(held.size(1) == prompt + n_new - 1);
      REQUIRE(cache.prompt_columns(co.names[0]) == prompt);
      // Compared up to the last generated token fed whose reference margins are all above the rule.
      const int64_t fed = std::min<int64_t>(static_cast<int64_t>(n), n_new - 1);
      REQUIRE(test::max_rel_diff(held[0].narrow(0, prompt, fed), reference.narrow(0, 0, fed)) <= 1e-4);
    }
  }
}

TEST_CASE("A patch of generated tokens from a source that holds only its prompt names what is missing") {
  Model model = load_model(model_dir("llama_tied"), {at::kFloat, test::device()});
  const std::vector<int64_t> target = {5, 6, 7, 8, 9}, source = {15, 16, 17, 18, 19};
  CacheOptions co;
  co.names = {"blocks.1.hook_resid_post"};
  auto src = model->run_with_cache(source, co).second;
  auto scope = model->apply(patch("blocks.1.hook_resid_post", src).scope(Scope::Both));
  CHECK_THROWS_WITH(generate(*model, {target}, greedy(3)),
                    Catch::Contains("generated token 1") && Catch::Contains("CacheOptions::accumulate"));
  // A source recorded by a prefill lacks its pending token, which the prompt scope patches.
  scope.reset();
  CacheOptions pre;
  pre.names = {"blocks.1.hook_resid_post"};
  ActivationCache prefilled = ActivationCache::attach(model->hooks(), pre);
  prefill(*model, source, 0);
  prefilled.detach();
  auto scope2 = model->apply(patch("blocks.1.hook_resid_post", prefilled));
  CHECK_THROWS_WITH(generate(*model, {target}, greedy(3)),
                    Catch::Contains("target prompt position 4") && Catch::Contains("record the source over its whole prompt"));
}
