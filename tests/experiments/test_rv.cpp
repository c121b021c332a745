// R_V measured inside the forward pass against numpy's SVD of transformers' hook_v
// (tests/data/models/*/rv.json, made by tests/reference/make_model_reference.py); R_V of a
// generation read from its cache against hook_v read through the run.
#include <cmath>
#include <optional>

#include <mechlens/experiments/generation_rv.hpp>
#include <mechlens/experiments/rv.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

TEST_CASE("R_V from the forward pass matches numpy's SVD of transformers' hook_v") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa"}) {
    const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/" + name;
    Model model = load_model(dir, {at::kFloat, test::device()});
    auto rv = io::read_json_file(dir + "/rv.json");
    auto ref = io::load_safetensors(dir + "/reference.safetensors");
    at::Tensor ids = ref.at(rv.at("prompt").get<std::string>() + ".input_ids").view({-1});
    std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    for (bool centered : {false, true}) {
      RvOptions o;
      o.early = rv.at("rv").at("early");
      o.late = rv.at("rv").at("late");
      o.window = rv.at("window");
      o.centered = centered;
      RvResult r = measure_rv(*model, {prompt}, o);
      const auto& pr = rv.at(centered ? "pr_centered" : "pr");
      double want_early = pr.at(std::to_string(o.early)), want_late = pr.at(std::to_string(o.late));
      INFO(name << (centered ? " centred" : " uncentred"));
      // float32 activations, float64 SVD on both sides: agreement to 1e-5 relative.
      REQUIRE(r.pr_early.item<double>() == Approx(want_early).epsilon(1e-5));
      REQUIRE(r.pr_late.item<double>() == Approx(want_late).epsilon(1e-5));
      REQUIRE(r.rv.item<double>() == Approx(want_late / want_early).epsilon(1e-5));
    }
  }
}

TEST_CASE("R_V of a padded batch equals each prompt's own, and short prompts are refused") {
  Model model = load_model(std::string(MECHLENS_TEST_DATA) + "/models/llama_tied", {at::kFloat, test::device()});
  std::vector<int64_t> a, b;
  for (int i = 0; i < 20; ++i) a.push_back(3 + (i * 7) % 200);
  for (int i = 0; i < 17; ++i) b.push_back(5 + (i * 11) % 200);
  RvOptions o;
  o.early = 0;
  o.late = 2;
  RvResult both = measure_rv(*model, {a, b}, o);
  REQUIRE(both.rv[0].item<double>() == Approx(measure_rv(*model, {a}, o).rv.item<double>()).epsilon(1e-6));
  REQUIRE(both.rv[1].item<double>() == Approx(measure_rv(*model, {b}, o).rv.item<double>()).epsilon(1e-6));
  REQUIRE_THROWS_WITH(measure_rv(*model, {std::vector<int64_t>(10, 4)}, o),
                      Catch::Contains("10 tokens") && Catch::Contains("W = 16"));
  o.late = 7;
  REQUIRE_THROWS_WITH(measure_rv(*model, {a}, o), Catch::Contains("late 7"));
}

TEST_CASE("R_V of a generation read from its KV cache equals hook_v read through its run, and the clean pass") {
  // The reference reading is hook_v's, recorded by hooks on every forward of the same greedy run
  // (prefill and each decoding step): the readable path, checked against transformers by the
  // model tests. The probe reads the values the run cached instead, so the run needs no hook.
  Model model = load_model(std::string(MECHLENS_TEST_DATA) + "/models/llama_gqa_llama3", {at::kFloat, test::device()});
  std::vector<std::vector<int64_t>> prompts(2);
  for (int i = 0; i < 20; ++i) prompts[0].push_back(3 + (i * 7) % 200);
  for (int i = 0; i < 5; ++i) prompts[1].push_back(5 + (i * 11) % 200);  // 4 prefilled + 10 decoded: short of W
  RvOptions o = default_rv_options(model->config());
  o.window = 16;
  GenerationOptions g;
  g.max_new_tokens = 10;
  g.use_model_eos = false;

  experiments::GenerationRvProbe probe(*model, o);
  PromptState run = prefill(*model, prompts, g.max_new_tokens);
  probe.read_prefill(run);
  REQUIRE_FALSE(model->hooks().any_attached());
  const GenerationResult out = decode(*model, run, g);
  std::vector<int64_t> short_rows;
  const RvResult got = probe.result({19, 4}, out.tokens, run, &short_rows);
  CHECK(short_rows == std::vector<int64_t>{1});
  CHECK(std::isnan(got.rv[1].item<double>()));

  std::vector<at::Tensor> seen[2];
  auto keep = [&](int which) {
    return [&, which](const at::Tensor& v, const HookContext&) -> std::optional<at::Tensor> {
      seen[which].push_back(v.detach().flatten(2).clone());
      return std::nullopt;
    };
  };
  GenerationResult hooked;
  {
    auto a = model->add_hook("blocks." + std::to_string(o.early) + ".attn.hook_v", keep(0));
    auto b = model->add_hook("blocks." + std::to_string(o.late) + ".attn.hook_v", keep(1));
    PromptState again = prefill(*model, prompts, g.max_new_tokens);
    hooked = decode(*model, again, g);
  }
  CHECK(generate(*model, prompts, g).tokens == out.tokens);  // the probe's run decodes as a plain one
  REQUIRE(hooked.tokens == out.tokens);                      // (so the windows cover the same tokens)
  // Row 0: its 19 prefilled tokens end the prefill's columns, then one column per step.
  const int64_t n = 19 + static_cast<int64_t>(out.tokens[0].size());
  auto window = [&](int which) { return at::cat(seen[which], 1).select(0, 0).narrow(0, n - o.window, o.window).unsqueeze(0); };
  const double want = metrics::rv_from_values(window(0), window(1)).item<double>();
  CHECK(got.rv[0].item<double>() == Approx(want).epsilon(1e-5));
  const double clean = measure_rv(*model, {experiments::processed_tokens(prompts[0], out.tokens[0])}, o).rv.item<double>();
  CHECK(got.rv[0].item<double>() == Approx(clean).epsilon(1e-5));
}
