#pragma once
// What every subcommand of the mechlens tool shares: errors that name the argument at fault, the
// --model / --dtype / --device options, prompts given as ids, text or a chat file, and JSON output.

#include <cmath>
#include <cstdint>
#include <limits>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "../cli_checks.hpp"
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <mechlens/core/dtype.hpp>
#include <mechlens/core/error.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/models/load.hpp>
#include <mechlens/tokenizer/tokenizer.hpp>

namespace mechlens::cli {

/// A bad argument: printed as "mechlens <command>: <argument>: <message>" and exit status 2.
class ArgError : public std::runtime_error {
 public:
  ArgError(const std::string& argument, const std::string& message) : std::runtime_error(argument + ": " + message) {}
};

/// Runs f(); a mechlens::Error it throws becomes an ArgError blaming `argument`.
template <class F>
auto blame(const std::string& argument, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ArgError&) {
    throw;
  } catch (const Error& e) {
    throw ArgError(argument, e.what());
  }
}

/// The message on one line: the tool's errors are one line each (library messages may hold several).
inline std::string one_line(std::string text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

/// One JSON object on one line of stdout. Invalid UTF-8 (never expected) is replaced, not fatal.
inline void print_json(const nlohmann::ordered_json& j) {
  std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

/// "1,2,3" (spaces and surrounding brackets allowed: "[1, 2, 3]") -> ids. An empty list or an
/// item that is not a non-negative integer is an ArgError naming `argument` and the item.
inline std::vector<int64_t> parse_ids(const std::string& argument, const std::string& text) {
  std::string body = text;
  auto trim = [](std::string s) {
    const auto b = s.find_first_not_of(" \t\n");
    if (b == std::string::npos) return std::string();
    return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
  };
  body = trim(body);
  if (body.size() >= 2 && body.front() == '[' && body.back() == ']') body = trim(body.substr(1, body.size() - 2));
  if (body.empty()) throw ArgError(argument, "no token ids given (expected a comma-separated list such as 1,2,3)");
  std::vector<int64_t> ids;
  size_t start = 0, item = 0;
  while (start <= body.size()) {
    const size_t comma = body.find(',', start);
    const std::string piece = trim(body.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    ++item;
    size_t used = 0;
    int64_t value = -1;
    try {
      if (!piece.empty() && piece[0] != '-' && piece[0] != '+') value = std::stoll(piece, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    if (piece.empty() || used != piece.size() || value < 0)
      throw ArgError(argument, fmt::format("'{}' is not a comma-separated list of token ids: item {} is '{}' (expected "
                                           "a non-negative integer)",
                                           text, item, piece));
    ids.push_back(value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return ids;
}

/// Every id must lie in the model's vocabulary [0, vocab).
inline void check_vocab(const std::string& argument, const std::vector<int64_t>& ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= vocab)
      throw ArgError(argument, fmt::format("token id {} (item {}) is outside the model's vocabulary [0, {})", ids[i],
                                           i + 1, vocab));
}

/// A conversation file: a JSON list of {"role", "content"} objects.
inline std::vector<ChatMessage> read_chat_file(const std::string& argument, const std::string& path) {
  nlohmann::json j = blame(argument, [&] { return io::read_json_file(path); });
  if (!j.is_array() || j.empty())
    throw ArgError(argument, fmt::format("'{}' must hold a non-empty JSON list of {{\"role\", \"content\"}} objects, "
                                         "not {}",
                                         path, j.is_array() ? "an empty list" : j.type_name()));
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m.at("role").is_string() ||
        !m.at("content").is_string())
      throw ArgError(argument, fmt::format("'{}': message {} must be an object with string fields \"role\" and "
                                           "\"content\", got {}",
                                           path, i, m.dump()));
    messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  }
  return messages;
}

inline bool has_tokenizer_json(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json", ec);
}

/// --model DIR, --dtype, --device, --tokenizer: what a subcommand that runs the model needs.
struct ModelArgs {
  std::string dir;
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string device_map;  ///< empty: the whole model on --device
  std::string tokenizer;  ///< empty: the model directory's tokenizer.json, if any
  bool match_transformers_v5 = false;  ///< TokenizerOptions::match_transformers_v5

  void add(CLI::App& app, bool with_runtime = true) {
    app.add_option("--model", dir, "Hugging Face checkpoint directory (config.json + *.safetensors)")
        ->required()
        ->check(CLI::ExistingDirectory);
    if (!with_runtime) return;
    app.add_option("--dtype", dtype,
                   "dtype the model runs in: float32, bfloat16 or float16 (default: float32, whatever the checkpoint "
                   "stores)");
    app.add_option("--device", device, "device the model runs on: cpu, cuda or cuda:N (default: cpu)");
    app.add_option("--device-map", device_map,
                   "the model's layers over devices instead: begin:end=device ranges (0:16=cuda:0,16:32=cpu) or auto "
                   "(by free memory); the embedding and head go with layer 0 (default: none, all on --device)");
    app.add_option("--tokenizer", tokenizer,
                   "tokenizer.json, or a folder holding one, for text prompts and decoded output (default: the "
                   "--model directory's tokenizer.json)")
        ->check(CLI::ExistingPath);
    add_tokenizer_mode(app, match_transformers_v5);
  }

  /// --match-transformers-v5, for every command that reads a tokenizer.
  static void add_tokenizer_mode(CLI::App& app, bool& flag) {
    app.add_flag("--match-transformers-v5", flag,
                 "tokenize as transformers 5 does (it rebuilds Llama-2 / Mistral tokenizers: other ids for text after "
                 "a space or an added token; docs/tokenizer.md); default: as the tokenizer.json file says, like HF "
                 "tokenizers");
  }

  TokenizerOptions tokenizer_options() const {
    TokenizerOptions o;
    o.match_transformers_v5 = match_transformers_v5;
    return o;
  }

  ModelConfig config() const {
    const std::string file = (std::filesystem::path(dir) / "config.json").string();
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) throw ArgError("--model", fmt::format("'{}' has no config.json", dir));
    return blame("--model", [&] {
      ModelConfig cfg = ModelConfig::from_file(dir);
      detail::read_generation_config(dir, cfg);
      return cfg;
    });
  }

  Model load() const {
    config();  // a missing or malformed config.json is reported before the weights are read
    const at::ScalarType type = blame("--dtype", [&] { return parse_dtype(dtype); });
    if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf)
      throw ArgError("--dtype", fmt::format("'{}' is not a dtype models run in (expected float32, bfloat16 or float16)",
                                            dtype));
    const at::Device dev = blame("--device", [&] { return parse_device(device); });
    LoadOptions options{type, dev};
    options.device_map = blame("--device-map", [&] { return DeviceMap::parse(device_map); });
    try {
      return load_model(dir, options);
    } catch (const ArgumentError& e) {  // the map's placement, or float16 on a CPU without it
      const std::string what = e.what();
      const bool map = what.find("device map") != std::string::npos || what.find("device_map") != std::string::npos;
      throw ArgError(map ? "--device-map" : "--dtype", what);
    } catch (const Error& e) {
      throw ArgError("--model", e.what());
    }
  }

  /// --tokenizer, else the model directory's tokenizer.json; nullopt when neither exists.
  std::optional<std::string> tokenizer_path() const {
    if (!tokenizer.empty()) return tokenizer;
    if (has_tokenizer_json(dir)) return dir;
    return std::nullopt;
  }
};

/// Loads the tokenizer a text prompt (`argument`) needs, or explains where to get one.
inline Tokenizer load_tokenizer_for(const std::string& argument, const ModelArgs& model) {
  auto path = model.tokenizer_path();
  if (!path)
    throw ArgError(argument, fmt::format("the checkpoint '{}' has no tokenizer.json; pass --tokenizer PATH, or give "
                                         "token ids instead",
                                         model.dir));
  return blame("--tokenizer", [&] { return Tokenizer::from_file(*path, model.tokenizer_options()); });
}

/// A prompt given one of three ways: --<name>-ids, --<name>-prompt (text through the tokenizer
/// with its special-token rules, e.g. Llama's BOS) or --<name>-chat (a conversation rendered with
/// the tokenizer's chat template and a generation prompt). `prefix` is "" for the main prompt.
struct PromptArgs {
  explicit PromptArgs(std::string flag_prefix = {}) : prefix(std::move(flag_prefix)) {}

  std::string prefix;
  std::string ids, prompt, chat;
  mutable std::string used;  ///< the flag the prompt came from (after resolve), for later errors
  CLI::Option *ids_opt = nullptr, *prompt_opt = nullptr, *chat_opt = nullptr;

  std::string flag(const char* kind) const { return "--" + (prefix.empty() ? std::string() : prefix + "-") + kind; }

  /// `what` names the prompt in the help; `rule` ends each of its flags' help, e.g. "(one of
  /// --ids, --prompt, --chat is required)" or "(default: no splice)".
  void add(CLI::App& app, const std::string& what, const std::string& rule, bool with_chat = true) {
    ids_opt = app.add_option(flag("ids"), ids,
                             what + " as token ids, used exactly as given (no BOS added): 1,2,3 " + rule);
    prompt_opt = app.add_option(flag("prompt"), prompt,
                                what + " as text, encoded by the tokenizer with its special-token rules (e.g. "
                                       "Llama's BOS) " + rule);
    ids_opt->excludes(prompt_opt);
    if (with_chat) {
      chat_opt = app.add_option(flag("chat"), chat,
                                what + " as a conversation: a JSON file holding a list of {\"role\", \"content\"}, "
                                       "rendered with the tokenizer's chat template and a generation prompt " + rule)
                     ->check(CLI::ExistingFile);
      chat_opt->excludes(ids_opt)->excludes(prompt_opt);
    }
  }

  bool given() const {
    return ids_opt->count() > 0 || prompt_opt->count() > 0 || (chat_opt != nullptr && chat_opt->count() > 0);
  }
  std::string choices() const {
    return chat_opt ? flag("ids") + ", " + flag("prompt") + " or " + flag("chat") : flag("ids") + " or " + flag("prompt");
  }

  /// The prompt's token ids, checked against the model's vocabulary.
  std::vector<int64_t> resolve(const ModelArgs& model, const ModelConfig& cfg) const {
    if (!given()) throw ArgError(choices(), "no prompt given (use one of them)");
    std::vector<int64_t> out;
    std::string argument;
    if (ids_opt->count() > 0) {
      argument = flag("ids");
      out = parse_ids(argument, ids);
    } else if (prompt_opt->count() > 0) {
      argument = flag("prompt");
      Tokenizer tok = load_tokenizer_for(argument, model);
      out = blame(argument, [&] { return tok.encode(prompt, /*add_special_tokens=*/true); });
    } else {
      argument = flag("chat");
      Tokenizer tok = load_tokenizer_for(argument, model);
      auto messages = read_chat_file(argument, chat);
      try {
        out = tok.encode_chat(messages, /*add_generation_prompt=*/true);
      } catch (const ConfigError& e) {  // no chat template, or one mechlens does not know
        throw ArgError(argument, std::string(e.what()) + " (the tokenizer's chat template is needed for a conversation)");
      } catch (const Error& e) {
        throw ArgError(argument, e.what());
      }
    }
    if (out.empty()) throw ArgError(argument, "the prompt has no tokens");
    used = argument;
    check_vocab(argument, out, cfg.vocab_size);
    return out;
  }
};

}  // namespace mechlens::cli
