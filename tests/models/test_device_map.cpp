// A model split over devices (LoadOptions::device_map) against transformers: logits and every
// hook point (reference.safetensors, 1e-4 of the reference's scale as test_hf_parity states),
// greedy tokens, KV splices across the device boundary and KV prefix memory (generation.json,
// compared while the reference margins stay above 1e-3), R_V (rv.json, 1e-5 relative).
//
// The two devices: with MECHLENS_TEST_DEVICE=cuda, cuda:0 and the CPU (offload, what one GPU
// allows). On the CPU, "cpu" and "cpu:0": the same memory under two device names, so the model
// takes every step a split takes (hidden state, angles and mask moved at each boundary, the KV
// cache in one block per run of layers) while the numbers come from one kind of device.
#include <mechlens/experiments/rv.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/interventions/kv_splice.hpp>
#include <mechlens/interventions/steering.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/kv_cache_io.hpp>
#include <mechlens/models/load.hpp>

#include <filesystem>

#include "test_util.hpp"

using namespace mechlens;

namespace {
using test::require_same_prefix;
constexpr double kTol = 1e-4;
std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

/// The first (home) and second device of the split.
std::pair<at::Device, at::Device> split_devices() {
  const at::Device d = test::device();
  if (d.is_cuda()) return {at::Device(at::kCUDA, 0), at::Device(at::kCPU)};
  return {at::Device(at::kCPU), at::Device(at::kCPU, 0)};
}

/// Layer 0 and the last layer on the first device, the ones between on the second: two
/// boundaries, and the hidden state comes back before the head.
Model load_split(const std::string& name) {
  const auto [a, b] = split_devices();
  const int64_t n = ModelConfig::from_file(model_dir(name)).n_layers();
  LoadOptions o;
  o.dtype = at::kFloat;
  o.device_map.ranges = {{0, 1, a}, {1, n - 1, b}, {n - 1, n, a}};
  return load_model(model_dir(name), o);
}

GenerationOptions greedy(int64_t n) {
  GenerationOptions g;
  g.max_new_tokens = n;
  g.use_model_eos = false;
  return g;
}
}  // namespace

TEST_CASE("A device map reads begin:end=device ranges, checks they cover every layer once, and plans by memory") {
  DeviceMap m = DeviceMap::parse("0:2=cpu,2:4=cpu:0");
  REQUIRE(m.ranges.size() == 2);
  REQUIRE(m.ranges[1].begin == 2);
  REQUIRE(m.ranges[1].end == 4);
  REQUIRE(m.ranges[1].device == at::Device(at::kCPU, 0));
  REQUIRE(DeviceMap::parse("auto").automatic);
  REQUIRE(DeviceMap::parse("").empty());
  REQUIRE_THROWS_WITH(DeviceMap::parse("0-2=cpu"), Catch::Contains("'0-2=cpu' is not begin:end=device"));
  REQUIRE_THROWS_WITH(DeviceMap::parse("a:2=cpu"), Catch::Contains("whole layer numbers"));
  REQUIRE_THROWS_WITH(DeviceMap::parse("0:2x=cpu"), Catch::Contains("whole layer numbers"));
  REQUIRE_THROWS_WITH(DeviceMap::parse("0:2=tpu"), Catch::Contains("unknown device 'tpu'"));

  const at::Device cpu(at::kCPU);
  REQUIRE_THROWS_WITH((DeviceMap{{{0, 2, cpu}}}.layer_devices(4)), Catch::Contains("layer 2 of 4 is on no device"));
  REQUIRE_THROWS_WITH((DeviceMap{{{0, 3, cpu}, {2, 4, cpu}}}.layer_devices(4)),
                      Catch::Contains("layer 2 is placed twice (0:3 and 2:4)"));
  REQUIRE_THROWS_WITH((DeviceMap{{{0, 5, cpu}}}.layer_devices(4)), Catch::Contains("layers 0:5"));
  REQUIRE_THROWS_WITH((DeviceMap{{{2, 2, cpu}}}.layer_devices(4)), Catch::Contains("layers 2:2"));
  const auto devs = DeviceMap{{{2, 4, at::Device("cuda:1")}, {0, 2, cpu}}}.layer_devices(4);
  REQUIRE(devs == std::vector<at::Device>{cpu, cpu, at::Device("cuda:1"), at::Device("cuda:1")});

  // "auto": the first layer carries the embedding and head; each device fills in order.
  const at::Device g0("cuda:0"), g1("cuda:1");
  REQUIRE(DeviceMap::plan(4, 10, 5, {{g0, 25}, {g1, 100}, {cpu, 1e9}}) == std::vector<at::Device>{g0, g0, g1, g1});
  REQUIRE(DeviceMap::plan(4, 10, 5, {{g0, 14}, {cpu, 1e9}}) == std::vector<at::Device>{cpu, cpu, cpu, cpu});
  REQUIRE(DeviceMap::plan(3, 10, 5, {{g0, 1000}}) == std::vector<at::Device>{g0, g0, g0});
  REQUIRE_THROWS_WITH(DeviceMap::plan(4, 10, 5, {{g0, 25}, {cpu, 12}}),
                      Catch::Contains("layer 3 has no room") && Catch::Contains("cuda:0 "));
}

TEST_CASE("A model split over devices gives transformers' logits and every hook point") {
  const auto [a, b] = split_devices();
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"}) {
    Model model = load_split(name);
    const int64_t n = model->config().n_layers();
    INFO(name);
    REQUIRE_FALSE(model->on_one_device());
    REQUIRE(model->device() == a);
    REQUIRE(model->layer_device(0) == a);
    REQUIRE(model->layer_device(1) == b);
    REQUIRE(model->layer_device(n - 1) == a);
    // The weights are where the map says.
    for (const auto& p : model->named_parameters()) {
      const std::string& key = p.key();
      at::Device want = a;
      for (int64_t l = 1; l < n - 1; ++l)
        if (key.rfind("model.layers." + std::to_string(l) + ".", 0) == 0) want = b;
      INFO(key);
      REQUIRE(p.value().device().type() == want.type());
    }
    auto ref = io::load_safetensors(model_dir(name) + "/reference.safetensors");
    for (int i = 0; i < 3; ++i) {
      const std::string p = "p" + std::to_string(i) + ".";
      const at::Tensor ids = ref.at(p + "input_ids");
      INFO("prompt " << i);
      REQUIRE(test::max_rel_diff(model->forward(ids), ref.at(p + "logits")) <= kTol);
      CacheOptions all;
      all.names = model->hook_names();
      auto [logits, cache] = model->run_with_cache(ids, all);
      REQUIRE(test::max_rel_diff(logits, ref.at(p + "logits")) <= kTol);
      for (const auto& hook : model->hook_names()) {
        if (hook.find("hook_attn_scores") != std::string::npos) continue;  // -inf entries: test_hf_parity
        INFO(hook);
        REQUIRE(test::max_rel_diff(cache.get(hook), ref.at(p + hook)) <= kTol);
      }
    }
  }
}

TEST_CASE("A model split over devices decodes transformers' greedy tokens, splices across the boundary, and continues a prefix") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"}) {
    Model model = load_split(name);
    auto ref = io::read_json_file(model_dir(name) + "/generation.json");
    INFO(name);
    for (const auto& rec : ref.at("greedy")) {
      auto out = generate(*model, {rec.at("prompt_ids").get<std::vector<int64_t>>()},
                          greedy(static_cast<int64_t>(rec.at("new_ids").size())));
      REQUIRE_FALSE(out.used_cuda_graph);  // a graph needs one device: eager steps
      require_same_prefix(out.tokens[0], rec);
    }
    if (std::string(name) == "mistral_swa") continue;  // no splice references (as test_generation_hf)
    for (const auto& rec : ref.at("splice")) {
      const auto layers = rec.at("layers").get<std::vector<int64_t>>();
      const int64_t n_new = static_cast<int64_t>(rec.at("new_ids").size());
      PromptState tgt = prefill(*model, rec.at("target_ids").get<std::vector<int64_t>>(), n_new);
      PromptState src = prefill(*model, rec.at("source_ids").get<std::vector<int64_t>>(), 0);
      REQUIRE_FALSE(tgt.cache.on_one_device());
      SpliceOptions splice;
      splice.layers = LayerRange{layers[0], layers[1]};
      splice.align = parse_align(rec.at("align").get<std::string>());
      splice_kv(tgt.cache, src.cache, splice);
      INFO("layers " << layers[0] << ":" << layers[1] << " align " << rec.at("align"));
      require_same_prefix(decode(*model, tgt, greedy(n_new)).tokens[0], rec);
    }
    const auto& rec = ref.at("prefix").at(0);
    KVCache memory = encode_prompt(*model, rec.at("source_ids").get<std::vector<int64_t>>());
    const int64_t n_new = static_cast<int64_t>(rec.at("new_ids").size());
    PromptState state = prefill(*model, rec.at("target_ids").get<std::vector<int64_t>>(), n_new, &memory);
    require_same_prefix(decode(*model, state, greedy(n_new)).tokens[0], rec);
  }
}

TEST_CASE("A split model's KV cache keeps each layer on its device, saves whole, and is refused where it does not fit") {
  const auto [a, b] = split_devices();
  Model split = load_split("llama_gqa_llama3");
  Model whole = load_model(model_dir("llama_gqa_llama3"), {at::kFloat, a});
  const int64_t n = split->config().n_layers();
  const std::vector<int64_t> prompt{3, 14, 15, 92, 65, 35, 89, 79};
  PromptState s = prefill(*split, prompt, 6);
  PromptState w = prefill(*whole, prompt, 6);
  KVCache& c = s.cache;
  REQUIRE(c.layer_devices() == split->layer_devices());
  REQUIRE(c.spans(0, n) == std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, n - 2}, {n - 1, 1}});
  REQUIRE(c.spans(1, 2) == std::vector<std::pair<int64_t, int64_t>>{{1, 2}});
  REQUIRE_THROWS_WITH(c.key_storage(), Catch::Contains("layers 0:" + std::to_string(n) + " are on more than one device") &&
                                           Catch::Contains("layers 1:" + std::to_string(n - 1) + " on " + b.str()));
  REQUIRE_THROWS_WITH(c.track_gradients(), Catch::Contains("spans 3 devices"));
  // The same keys and values as the model on one device (which test_generation_hf checks).
  for (int64_t l = 0; l < n; ++l) {
    INFO("layer " << l);
    REQUIRE(test::max_rel_diff(c.keys(l), w.cache.keys(l)) <= 1e-6);
    REQUIRE(test::max_rel_diff(c.values(l), w.cache.values(l)) <= 1e-6);
  }
  // select_rows and clone keep the layout; a saved split cache loads on one device and is placed back.
  REQUIRE(c.select_rows(at::tensor({0, 0})).layer_devices() == c.layer_devices());
  KVCache copy = c.clone();
  REQUIRE(copy.layer_devices() == c.layer_devices());
  const std::string path = (std::filesystem::temp_directory_path() / "mechlens_split_cache.safetensors").string();
  save_kv_cache(path, c);
  KVCache loaded = load_kv_cache(path, split->options(), 6);
  std::filesystem::remove(path);
  REQUIRE(loaded.on_one_device());
  for (int64_t l = 0; l < n; ++l) REQUIRE(at::equal(loaded.keys(l).cpu(), c.keys(l).cpu()));
  KVCache placed = loaded.placed(split->layer_devices());
  REQUIRE(placed.layer_devices() == split->layer_devices());
  for (int64_t l = 0; l < n; ++l) REQUIRE(at::equal(placed.values(l).cpu(), c.values(l).cpu()));
  // Decoding from the copy, the placed cache and the original gives the same tokens.
  PromptState t = s.clone();
  auto g1 = decode(*split, s, greedy(6)), g2 = decode(*split, t, greedy(6));
  REQUIRE(g1.tokens == g2.tokens);
  REQUIRE(g1.tokens == decode(*whole, w, greedy(6)).tokens);
  if (a.type() != b.type()) {
    // A cache made on one device for the split model: refused, naming the first layer that differs.
    KVCache one = whole->make_cache(1, 16);
    REQUIRE_THROWS_WITH(split->forward(std::vector<int64_t>{1, 2}, test::with_cache(one)),
                        Catch::Contains("keeps layer 1 on " + a.str()) && Catch::Contains("KVCache::placed"));
  }
}

TEST_CASE("Hooks and steering act on a split model as on one device, and its R_V matches numpy") {
  const auto [a, b] = split_devices();
  Model split = load_split("llama_gqa_llama3");
  // R_V against numpy's SVD of transformers' hook_v (rv.json), as test_rv states it.
  const std::string dir = model_dir("llama_gqa_llama3");
  auto rv = io::read_json_file(dir + "/rv.json");
  auto ref = io::load_safetensors(dir + "/reference.safetensors");
  at::Tensor ids = ref.at(rv.at("prompt").get<std::string>() + ".input_ids").view({-1});
  std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  RvOptions o;
  o.early = rv.at("rv").at("early");
  o.late = rv.at("rv").at("late");
  o.window = rv.at("window");
  RvResult r = measure_rv(*split, {prompt}, o);
  REQUIRE(r.pr_early.item<double>() == Approx(rv.at("pr").at(std::to_string(o.early)).get<double>()).epsilon(1e-5));
  REQUIRE(r.pr_late.item<double>() == Approx(rv.at("pr").at(std::to_string(o.late)).get<double>()).epsilon(1e-5));

  // Steering a layer on the second device during generation: the same tokens as on one device
  // (where test_scopes_hf compares steering with transformers' hooks).
  Model whole = load_model(dir, {at::kFloat, a});
  const int64_t d = split->config().d_model();
  at::Tensor vec = at::linspace(-2.0, 2.0, d);
  GenerationOptions g = greedy(8);
  std::vector<std::vector<int64_t>> out;
  for (Model* m : {&split, &whole}) {
    auto scope = (*m)->apply(steer("blocks.1.hook_resid_post", vec));
    out.push_back(generate(**m, {prompt}, g).tokens[0]);
  }
  REQUIRE(out[0] == out[1]);
  // A hook sees the activation on its layer's device.
  at::Device seen = at::kCPU;
  {
    auto h = split->add_hook("blocks.1.hook_resid_post", [&](const at::Tensor& x, const HookContext&) {
      seen = x.device();
      return std::optional<at::Tensor>();
    });
    split->forward(prompt);
  }
  REQUIRE(seen.type() == b.type());
}
