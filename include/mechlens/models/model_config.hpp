#pragma once
/// \file
/// ModelConfig: the architecture of a Llama-family checkpoint, read from Hugging Face
/// `config.json`. Supported `model_type`s: llama, mistral, qwen2 (attention bias). Rotary
/// settings are read in both forms transformers has used: the classic top-level `rope_theta`
/// + `rope_scaling` (as Meta-Llama-3.1 ships) and the newer `rope_parameters`.

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"

namespace mechlens {

/// Rotary position embedding settings (HF `rope_type`s default, linear, llama3).
struct RopeConfig {
  std::string type = "default";  ///< "default", "linear" or "llama3"
  double theta = 10000.0;        ///< base of the inverse frequencies
  double factor = 1.0;           ///< linear and llama3 scaling factor
  double low_freq_factor = 1.0;  ///< llama3 only
  double high_freq_factor = 4.0; ///< llama3 only
  int64_t original_max_position_embeddings = 8192;  ///< llama3 only
};

struct ModelConfig {
  std::string model_type;  ///< "llama", "mistral" or "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        ///< d_model
  int64_t intermediate_size = 0;  ///< d_mlp
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  ///< GQA: equals num_attention_heads when absent
  int64_t head_dim = 0;             ///< explicit, or hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;       ///< q/k/v projections carry a bias (qwen2)
  std::optional<int64_t> sliding_window;  ///< keys older than this many positions are masked
  int64_t max_position_embeddings = 4096;
  RopeConfig rope;
  std::vector<int64_t> eos_token_ids;  ///< from config.json (generation_config.json may add more)
  std::optional<int64_t> bos_token_id;
  std::string torch_dtype = "float32";  ///< the dtype the checkpoint was saved in

  int64_t d_model() const { return hidden_size; }
  int64_t n_layers() const { return num_hidden_layers; }
  int64_t n_heads() const { return num_attention_heads; }
  int64_t n_kv_heads() const { return num_key_value_heads; }
  int64_t d_head() const { return head_dim; }

  /// Parses a config.json object; `where` names its file in error messages.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where = "config.json");
  /// Reads `<dir>/config.json` (or the file itself when `path` is a file).
  static ModelConfig from_file(const std::string& path);
  /// The inverse of from_json, in the classic form (rope_theta + rope_scaling).
  nlohmann::json to_json() const;
  /// Parameters of the model these sizes describe (embedding, unembedding unless tied, attention
  /// with its biases, MLP, norms), as a double: it is computed before anything is allocated.
  double parameter_count() const {
    const double d = static_cast<double>(hidden_size), q = static_cast<double>(num_attention_heads * head_dim),
                 kv = static_cast<double>(num_key_value_heads * head_dim);
    const double per_layer = d * (q + 2 * kv) + q * d + 3 * d * static_cast<double>(intermediate_size) + 2 * d +
                             (attention_bias ? q + 2 * kv : 0.0);
    return (tie_word_embeddings ? 1 : 2) * static_cast<double>(vocab_size) * d +
           static_cast<double>(num_hidden_layers) * per_layer + d;
  }
};

namespace detail {
/// `key` of `j`: one token id or a list of them (absent or null: none). Each must be a JSON
/// integer in [0, vocab_size); `where` names the file.
inline std::vector<int64_t> read_token_ids(const nlohmann::json& j, const std::string& key, int64_t vocab_size,
                                           const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  std::vector<int64_t> ids;
  auto one = [&](const nlohmann::json& v, const std::string& name) {
    const auto id = io::json_as<int64_t>(v, name, where);
    MECHLENS_CHECK(id >= 0 && id < vocab_size, ConfigError,
                   "{}: field '{}' is token id {}, outside the vocabulary [0, {})", where, name, id, vocab_size);
    ids.push_back(id);
  };
  if (it->is_array()) {
    for (size_t i = 0; i < it->size(); ++i) one((*it)[i], key + "[" + std::to_string(i) + "]");
  } else {
    one(*it, key);
  }
  return ids;
}

/// A finite double field that must be positive (rope_theta, rms_norm_eps, rope factors).
inline double positive_field(double v, const std::string& key, const std::string& where) {
  MECHLENS_CHECK(std::isfinite(v) && v > 0, ConfigError, "{}: field '{}' must be a positive finite number, got {}",
                 where, key, v);
  return v;
}

/// A rotary settings field that must be an object when present (a string would be ignored).
inline bool object_field(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  MECHLENS_CHECK(it->is_object(), ConfigError, "{}: field '{}' must be an object, got {}", where, key,
                 it->type_name());
  return true;
}

// Bounds on config sizes, checked before anything is allocated. Far above every released
// Llama-family model (Llama-3.1-405B: 126 layers, d_model 16384, d_mlp 53248, vocab 128256).
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxWidth = int64_t{1} << 20;          // hidden, intermediate, head_dim
inline constexpr int64_t kMaxHeads = int64_t{1} << 16;
inline constexpr int64_t kMaxVocab = int64_t{1} << 24;
inline constexpr double kMaxParameters = 1e13;                   // 10 T
}  // namespace detail

inline ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& where) {
  MECHLENS_CHECK(j.is_object(), ConfigError, "{}: expected a JSON object", where);
  ModelConfig c;
  c.model_type = io::json_required<std::string>(j, "model_type", where);
  MECHLENS_CHECK(c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2",
                 ConfigError,
                 "{}: model_type '{}' is not supported (mechlens knows llama, mistral and qwen2)",
                 where, c.model_type);
  c.vocab_size = io::json_required<int64_t>(j, "vocab_size", where);
  c.hidden_size = io::json_required<int64_t>(j, "hidden_size", where);
  c.intermediate_size = io::json_required<int64_t>(j, "intermediate_size", where);
  c.num_hidden_layers = io::json_required<int64_t>(j, "num_hidden_layers", where);
  c.num_attention_heads = io::json_required<int64_t>(j, "num_attention_heads", where);
  c.num_key_value_heads = io::json_optional<int64_t>(j, "num_key_value_heads", c.num_attention_heads, where);
  MECHLENS_CHECK(c.hidden_size > 0 && c.num_attention_heads > 0 && c.num_hidden_layers > 0 &&
                     c.vocab_size > 0 && c.intermediate_size > 0,
                 ConfigError, "{}: sizes must be positive (hidden_size {}, num_attention_heads {}, "
                 "num_hidden_layers {}, vocab_size {}, intermediate_size {})", where, c.hidden_size,
                 c.num_attention_heads, c.num_hidden_layers, c.vocab_size, c.intermediate_size);
  {
    auto bound = [&](const char* key, int64_t v, int64_t max) {
      MECHLENS_CHECK(v <= max, ConfigError, "{}: field '{}' is {}, above the {} mechlens accepts (a corrupt config?)",
                     where, key, v, max);
    };
    bound("num_hidden_layers", c.num_hidden_layers, detail::kMaxLayers);
    bound("hidden_size", c.hidden_size, detail::kMaxWidth);
    bound("intermediate_size", c.intermediate_size, detail::kMaxWidth);
    bound("num_attention_heads", c.num_attention_heads, detail::kMaxHeads);
    bound("num_key_value_heads", c.num_key_value_heads, detail::kMaxHeads);
    bound("vocab_size", c.vocab_size, detail::kMaxVocab);
  }
  MECHLENS_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
                 ConfigError, "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                 where, c.num_attention_heads, c.num_key_value_heads);
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = io::json_required<int64_t>(j, "head_dim", where);
    MECHLENS_CHECK(c.head_dim > 0 && c.head_dim <= detail::kMaxWidth, ConfigError,
                   "{}: field 'head_dim' is {}, expected a positive size up to {}", where, c.head_dim,
                   detail::kMaxWidth);
  } else {
    MECHLENS_CHECK(c.hidden_size % c.num_attention_heads == 0, ConfigError,
                   "{}: no head_dim and hidden_size ({}) is not a multiple of num_attention_heads ({})",
                   where, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  MECHLENS_CHECK(c.head_dim % 2 == 0, ConfigError, "{}: head_dim ({}) must be even for rotary embeddings",
                 where, c.head_dim);
  {
    // Before any allocation (tie_word_embeddings and the biases are read below: this counts the
    // untied, biased upper bound).
    const double total = c.parameter_count();
    MECHLENS_CHECK(total <= detail::kMaxParameters, ConfigError,
                   "{}: these sizes describe a model of {:.3g} parameters, above the {:.0e} mechlens accepts (a corrupt "
                   "config?)", where, total, detail::kMaxParameters);
  }
  c.rms_norm_eps = detail::positive_field(io::json_optional<double>(j, "rms_norm_eps", 1e-6, where), "rms_norm_eps", where);
  c.tie_word_embeddings = io::json_optional<bool>(j, "tie_word_embeddings", false, where);
  c.attention_bias = io::json_optional<bool>(j, "attention_bias", c.model_type == "qwen2", where);
  c.max_position_embeddings = io::json_optional<int64_t>(j, "max_position_embeddings", 4096, where);
  MECHLENS_CHECK(c.max_position_embeddings > 0, ConfigError,
                 "{}: field 'max_position_embeddings' must be positive, got {}", where, c.max_position_embeddings);
  if (c.model_type == "mistral") {
    // null (Mistral v0.2 on) or absent: full attention. 0 is read the same way.
    auto w = io::json_optional<int64_t>(j, "sliding_window", 0, where);
    MECHLENS_CHECK(w >= 0, ConfigError, "{}: field 'sliding_window' must be a positive window (or null), got {}",
                   where, w);
    if (w > 0) c.sliding_window = w;
  }
  if (c.model_type == "qwen2") {
    // qwen2 windows only the layers from max_window_layers on, and only with use_sliding_window
    // (transformers' layer_types); mechlens has one window for every layer, so it refuses that
    // case rather than window the wrong layers. Qwen2 / Qwen2.5 ship with it off.
    const bool use = io::json_optional<bool>(j, "use_sliding_window", false, where);
    MECHLENS_CHECK(!use, ConfigError,
                   "{}: qwen2 with use_sliding_window true (sliding_window {}, max_window_layers {}) windows only "
                   "some layers, which mechlens does not support; set use_sliding_window to false to run it with "
                   "full attention in every layer, as transformers does then",
                   where, io::json_optional<int64_t>(j, "sliding_window", 0, where),
                   io::json_optional<int64_t>(j, "max_window_layers", 0, where));
  }
  // transformers 5 writes layer_types ("full_attention" / "sliding_attention" per layer): mechlens
  // runs every layer alike, so the list must agree with the one window it knows.
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    const auto& types = j["layer_types"];
    for (size_t i = 0; i < types.size(); ++i) {
      MECHLENS_CHECK(types[i].is_string(), ConfigError, "{}: layer_types[{}] is not a string", where, i);
      const std::string t = types[i].get<std::string>();
      const std::string want = c.sliding_window ? "sliding_attention" : "full_attention";
      MECHLENS_CHECK(t == want, ConfigError,
                     "{}: layer_types[{}] is '{}' but mechlens runs every layer as '{}' (sliding_window {}); models "
                     "that mix full and sliding attention layers are not supported",
                     where, i, t.substr(0, 40), want, c.sliding_window ? std::to_string(*c.sliding_window) : "none");
    }
  }
  c.eos_token_ids = detail::read_token_ids(j, "eos_token_id", c.vocab_size, where);
  auto bos = detail::read_token_ids(j, "bos_token_id", c.vocab_size, where);
  if (!bos.empty()) c.bos_token_id = bos.front();
  c.torch_dtype = io::json_optional<std::string>(j, "torch_dtype",
                                                 io::json_optional<std::string>(j, "dtype", "float32", where), where);

  // Rotary: `rope_parameters` (new form) wins; else `rope_theta` + `rope_scaling` (classic form).
  nlohmann::json rope = nlohmann::json::object();
  std::string rope_where = where;
  if (detail::object_field(j, "rope_parameters", where)) {
    rope = j["rope_parameters"];
    rope_where = where + " rope_parameters";
    c.rope.theta = detail::positive_field(
        io::json_optional<double>(rope, "rope_theta", io::json_optional<double>(j, "rope_theta", 10000.0, where),
                                  rope_where),
        "rope_theta", rope_where);
  } else {
    c.rope.theta = detail::positive_field(io::json_optional<double>(j, "rope_theta", 10000.0, where), "rope_theta", where);
    if (detail::object_field(j, "rope_scaling", where)) {
      rope = j["rope_scaling"];
      rope_where = where + " rope_scaling";
    }
  }
  std::string type = io::json_optional<std::string>(rope, "rope_type",
                                                     io::json_optional<std::string>(rope, "type", "default", rope_where),
                                                     rope_where);
  MECHLENS_CHECK(type == "default" || type == "linear" || type == "llama3", ConfigError,
                 "{}: rope type '{}' is not supported (mechlens knows default, linear and llama3)",
                 rope_where, type);
  c.rope.type = type;
  if (type == "linear" || type == "llama3")
    c.rope.factor = detail::positive_field(io::json_required<double>(rope, "factor", rope_where), "factor", rope_where);
  if (type == "llama3") {
    c.rope.low_freq_factor = detail::positive_field(io::json_required<double>(rope, "low_freq_factor", rope_where),
                                                    "low_freq_factor", rope_where);
    c.rope.high_freq_factor = detail::positive_field(io::json_required<double>(rope, "high_freq_factor", rope_where),
                                                     "high_freq_factor", rope_where);
    // transformers' llama3 formula divides by (high_freq_factor - low_freq_factor).
    MECHLENS_CHECK(c.rope.high_freq_factor > c.rope.low_freq_factor, ConfigError,
                   "{}: llama3 rope needs high_freq_factor > low_freq_factor (got {} and {}); the smoothing between "
                   "them divides by their difference",
                   rope_where, c.rope.high_freq_factor, c.rope.low_freq_factor);
    c.rope.original_max_position_embeddings =
        io::json_required<int64_t>(rope, "original_max_position_embeddings", rope_where);
    MECHLENS_CHECK(c.rope.original_max_position_embeddings > 0, ConfigError,
                   "{}: field 'original_max_position_embeddings' must be positive, got {}", rope_where,
                   c.rope.original_max_position_embeddings);
  }
  return c;
}

inline ModelConfig ModelConfig::from_file(const std::string& path) {
  std::string file = path;
  if (file.size() < 5 || file.substr(file.size() - 5) != ".json") file = path + "/config.json";
  return from_json(io::read_json_file(file), file);
}

inline nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j = {{"model_type", model_type},
                      {"vocab_size", vocab_size},
                      {"hidden_size", hidden_size},
                      {"intermediate_size", intermediate_size},
                      {"num_hidden_layers", num_hidden_layers},
                      {"num_attention_heads", num_attention_heads},
                      {"num_key_value_heads", num_key_value_heads},
                      {"head_dim", head_dim},
                      {"rms_norm_eps", rms_norm_eps},
                      {"tie_word_embeddings", tie_word_embeddings},
                      {"attention_bias", attention_bias},
                      {"max_position_embeddings", max_position_embeddings},
                      {"rope_theta", rope.theta},
                      {"torch_dtype", torch_dtype}};
  j["architectures"] = {model_type == "mistral" ? "MistralForCausalLM"
                        : model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  if (rope.type == "linear") j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope.factor}};
  if (rope.type == "llama3")
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", rope.factor},
                         {"low_freq_factor", rope.low_freq_factor}, {"high_freq_factor", rope.high_freq_factor},
                         {"original_max_position_embeddings", rope.original_max_position_embeddings}};
  if (sliding_window) j["sliding_window"] = *sliding_window;
  if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids.size() == 1 ? nlohmann::json(eos_token_ids[0]) : nlohmann::json(eos_token_ids);
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  return j;
}

}  // namespace mechlens
