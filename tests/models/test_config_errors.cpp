// Bad configs and checkpoints give errors naming the file and the problem.
#include <mechlens/core/filesystem.hpp>
#include <cmath>
#include <cstdio>
#include <limits>
#include <filesystem>
#include <fstream>

#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/init.hpp>
#include <mechlens/models/load.hpp>

using namespace mechlens;
namespace fs = std::filesystem;

namespace {
nlohmann::json base_config() {
  return {{"model_type", "llama"},       {"vocab_size", 10},        {"hidden_size", 8},
          {"intermediate_size", 12},     {"num_hidden_layers", 1},  {"num_attention_heads", 2},
          {"num_key_value_heads", 1},    {"rms_norm_eps", 1e-5}};
}
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("mechlens_test_" + name + "_" + std::to_string(::getpid()));
  mechlens::detail::remove_tree(d.string());
  fs::create_directories(d);
  return d;
}
void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
}  // namespace

TEST_CASE("A config with a missing required field names the file and the field") {
  auto j = base_config();
  j.erase("hidden_size");
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j, "x/config.json"),
                      Catch::Contains("x/config.json") && Catch::Contains("hidden_size"));
}

TEST_CASE("Integer fields take only integers: 64.9 is not truncated, a string is not read as a number") {
  auto j = base_config();
  j["hidden_size"] = 64.9;
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j, "x/config.json"),
                      Catch::Contains("x/config.json") && Catch::Contains("'hidden_size' must be an integer") &&
                          Catch::Contains("64.9"));
  j = base_config();
  j["vocab_size"] = "256";
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("'vocab_size' must be an integer, got string"));
}

TEST_CASE("An unknown model_type or rope type is an error, never a silent default") {
  auto j = base_config();
  j["model_type"] = "gpt2";
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("gpt2"));
  j = base_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("yarn"));
  j = base_config();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("low_freq_factor"));
}

TEST_CASE("head_dim is derived when absent and GQA head counts must divide") {
  auto j = base_config();
  REQUIRE(ModelConfig::from_json(j).d_head() == 4);
  j["num_key_value_heads"] = 3;
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("num_key_value_heads"));
}

TEST_CASE("Loading refuses a checkpoint with a missing tensor or a wrong shape, naming the key") {
  auto dir = temp_dir("load");
  write(dir / "config.json", base_config().dump());
  Model model(ModelConfig::from_json(base_config()), at::TensorOptions().dtype(at::kFloat));
  init_weights(*model, 1);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& p : model->named_parameters())
    if (p.key() != "model.norm.weight") tensors.emplace_back(p.key(), p.value().detach());
  io::save_safetensors((dir / "model.safetensors").string(), tensors);
  REQUIRE_THROWS_WITH(load_model(dir.string()), Catch::Contains("model.norm.weight"));

  tensors.emplace_back("model.norm.weight", at::ones({9}));
  io::save_safetensors((dir / "model.safetensors").string(), tensors);
  REQUIRE_THROWS_WITH(load_model(dir.string()), Catch::Contains("model.norm.weight") && Catch::Contains("[9]"));

  tensors.back().second = at::ones({8});
  io::save_safetensors((dir / "model.safetensors").string(), tensors);
  Model loaded = load_model(dir.string());
  REQUIRE(loaded->config().d_model() == 8);
  mechlens::detail::remove_tree(dir.string());
}

TEST_CASE("A config.json nested a million levels deep, or with a number beyond double range, names the file") {
  fs::path dir = temp_dir("deep_config");
  write(dir / "config.json", R"({"model_type": "llama", "rope_parameters": {"rope_theta": )" + std::string(1000000, '[') +
                                 std::string(1000000, ']') + "}}");
  CHECK_THROWS_WITH(ModelConfig::from_file(dir.string()),
                    Catch::Contains("config.json") && Catch::Contains("nested deeper than 256"));
  write(dir / "config.json", R"({"model_type": "llama", "rope_theta": 1e400})");
  CHECK_THROWS_WITH(ModelConfig::from_file(dir.string()),
                    Catch::Contains("config.json") && Catch::Contains("not valid JSON"));
}

TEST_CASE("Config values out of range are refused with the field and the value") {
  auto refused = [](nlohmann::json j, const std::string& what) {
    CAPTURE(j.dump(), what);
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, "x/config.json"),
                        Catch::Contains("x/config.json") && Catch::Contains(what));
  };
  auto with = [](const char* key, nlohmann::json v) {
    auto j = base_config();
    j[key] = std::move(v);
    return j;
  };
  // Greedy decoding over NaN logits would "work" with these.
  refused(with("rope_theta", 0), "'rope_theta' must be a positive finite number");
  refused(with("rope_theta", -10000.0), "'rope_theta' must be a positive finite number");
  refused(with("rope_parameters", {{"rope_type", "default"}, {"rope_theta", -1.0}}), "'rope_theta'");
  refused(with("rms_norm_eps", -1), "'rms_norm_eps' must be a positive finite number");
  refused(with("max_position_embeddings", -1), "'max_position_embeddings' must be positive");
  auto mistral = with("sliding_window", -8);
  mistral["model_type"] = "mistral";
  refused(mistral, "'sliding_window' must be a positive window");
  // Token ids: integers inside the vocabulary (10 here), never a string or a fraction.
  refused(with("eos_token_id", 2.7), "'eos_token_id' must be an integer");
  refused(with("eos_token_id", -5), "token id -5, outside the vocabulary [0, 10)");
  refused(with("eos_token_id", 10), "token id 10, outside the vocabulary [0, 10)");
  refused(with("eos_token_id", "2"), "'eos_token_id' must be an integer, got string");
  refused(with("eos_token_id", {2, 99}), "'eos_token_id[1]' is token id 99");
  refused(with("bos_token_id", 12), "'bos_token_id' is token id 12");
  // Rotary settings that are not objects were ignored before.
  refused(with("rope_scaling", "llama3"), "'rope_scaling' must be an object, got string");
  refused(with("rope_parameters", 5), "'rope_parameters' must be an object, got number");
  refused(with("rope_scaling", {{"rope_type", "linear"}, {"factor", 0.0}}), "'factor' must be a positive");
  refused(with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 2.0},
                                {"high_freq_factor", 2.0}, {"original_max_position_embeddings", 8192}}),
          "high_freq_factor > low_freq_factor");
  // The accepted forms still load.
  auto ok = with("eos_token_id", {2, 9});
  ok["rope_scaling"] = nullptr;
  CHECK(ModelConfig::from_json(ok).eos_token_ids == std::vector<int64_t>{2, 9});
  auto null_window = with("sliding_window", nullptr);
  null_window["model_type"] = "mistral";
  CHECK_FALSE(ModelConfig::from_json(null_window).sliding_window.has_value());
}

TEST_CASE("Sizes beyond any real model are refused before anything is allocated") {
  auto j = base_config();
  j["num_hidden_layers"] = 1000000;  // `mechlens info` ran 57 s, then died of std::bad_alloc
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j, "x/config.json"),
                      Catch::Contains("'num_hidden_layers' is 1000000, above the 4096"));
  j = base_config();
  j["vocab_size"] = int64_t{1} << 30;
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("'vocab_size'"));
  // Each size within its bound, the whole too big: 4096 layers of width 2^20.
  j = base_config();
  j["num_hidden_layers"] = 4096;
  j["hidden_size"] = 1 << 20;
  j["intermediate_size"] = 1 << 20;
  j["num_attention_heads"] = 1 << 10;
  j["num_key_value_heads"] = 1 << 10;
  REQUIRE_THROWS_WITH(ModelConfig::from_json(j), Catch::Contains("parameters, above the 1e+13"));
}

TEST_CASE("generation_config.json must be an object with token ids inside the vocabulary") {
  auto dir = temp_dir("genconfig");
  write(dir / "config.json", base_config().dump());
  write(dir / "generation_config.json", "[1, 2]");
  ModelConfig cfg = ModelConfig::from_file((dir / "config.json").string());
  REQUIRE_THROWS_WITH(mechlens::detail::read_generation_config(dir.string(), cfg),
                      Catch::Contains("generation_config.json") && Catch::Contains("expected a JSON object"));
  write(dir / "generation_config.json", R"({"eos_token_id": [2, 128009]})");
  REQUIRE_THROWS_WITH(mechlens::detail::read_generation_config(dir.string(), cfg),
                      Catch::Contains("generation_config.json") && Catch::Contains("token id 128009"));
  mechlens::detail::remove_tree(dir.string());
}

TEST_CASE("NaN or Inf in a checkpoint's weights loads (as transformers does) with a warning naming the tensor") {
  auto dir = temp_dir("nan_weights");
  write(dir / "config.json", base_config().dump());
  Model model(ModelConfig::from_json(base_config()), at::TensorOptions().dtype(at::kFloat));
  init_weights(*model, 1);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& p : model->named_parameters()) {
    at::Tensor t = p.value().detach().clone();
    if (p.key() == "model.norm.weight") t[3] = std::numeric_limits<float>::quiet_NaN();
    if (p.key() == "model.layers.0.mlp.up_proj.weight") t[0][1] = std::numeric_limits<float>::infinity();
    tensors.emplace_back(p.key(), t);
  }
  io::save_safetensors((dir / "model.safetensors").string(), tensors);
  std::vector<std::string> warnings;
  auto previous = set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  Model loaded = load_model(dir.string());
  set_warning_handler(previous);
  REQUIRE(warnings.size() == 2);
  CHECK_THAT(warnings[0] + warnings[1], Catch::Contains("'model.norm.weight' holds NaN or Inf") &&
                                            Catch::Contains("'model.layers.0.mlp.up_proj.weight' holds NaN or Inf") &&
                                            Catch::Contains(dir.string()));
  CHECK(std::isnan(loaded->named_parameters()["model.norm.weight"][3].item<float>()));
  mechlens::detail::remove_tree(dir.string());
}

TEST_CASE("Weights stored as integers or booleans are refused, not converted to float and used") {
  auto dir = temp_dir("int_weights");
  write(dir / "config.json", base_config().dump());
  Model model(ModelConfig::from_json(base_config()), at::TensorOptions().dtype(at::kFloat));
  init_weights(*model, 1);
  for (auto bad : {at::kInt, at::kBool}) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (auto& p : model->named_parameters()) {
      at::Tensor t = p.value().detach();
      tensors.emplace_back(p.key(), p.key() == "model.norm.weight" ? t.to(bad) : t);
    }
    io::save_safetensors((dir / "model.safetensors").string(), tensors);
    REQUIRE_THROWS_WITH(load_model(dir.string()), Catch::Contains("'model.norm.weight' is stored as") &&
                                                      Catch::Contains(bad == at::kInt ? "I32" : "BOOL") &&
                                                      Catch::Contains("floating-point"));
  }
  mechlens::detail::remove_tree(dir.string());
}

TEST_CASE("A model too large for this machine is refused with the parameters and bytes it needs") {
  auto dir = temp_dir("huge_model");
  auto j = base_config();
  j["vocab_size"] = 1 << 24;
  j["hidden_size"] = 1 << 16;  // 2^41 parameters in the embeddings alone: 8 TiB in float32
  j["num_attention_heads"] = 1 << 8;
  j["num_key_value_heads"] = 1 << 8;
  write(dir / "config.json", j.dump());
  io::save_safetensors((dir / "model.safetensors").string(), {});
  REQUIRE_THROWS_WITH(load_model(dir.string()), Catch::Contains("parameters in Float need") &&
                                                    Catch::Contains("GiB on cpu, which cannot be allocated") &&
                                                    Catch::Contains(dir.string()));
  mechlens::detail::remove_tree(dir.string());
}
