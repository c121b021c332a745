// Bad configs and checkpoints give errors naming the file and the problem.
#include <mechlens/core/filesystem.hpp>
#include <cstdio>
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
