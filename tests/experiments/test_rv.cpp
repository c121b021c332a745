// R_V measured inside the forward pass against numpy's SVD of transformers' hook_v
// (tests/data/models/*/rv.json, made by tests/reference/make_model_reference.py).
#include <mechlens/experiments/rv.hpp>
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
