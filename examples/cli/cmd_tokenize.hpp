#pragma once
// mechlens tokenize / decode: a tokenizer.json from the shell, as HF tokenizers gives it.

#include "cli_support.hpp"

namespace mechlens::cli {

inline TokenizerOptions tokenizer_mode(bool match_transformers_v5) {
  TokenizerOptions o;
  o.match_transformers_v5 = match_transformers_v5;
  return o;
}

struct TokenizeCommand {
  std::string tokenizer;
  std::vector<std::string> texts;
  std::string chat;
  std::string chat_template;
  bool no_special = false;
  bool match_transformers_v5 = false;
  CLI::Option *text_opt = nullptr, *chat_opt = nullptr;

  void add(CLI::App& app) {
    app.add_option("--tokenizer,--model", tokenizer, "tokenizer.json, or a checkpoint folder holding one")
        ->required()
        ->check(CLI::ExistingPath);
    ModelArgs::add_tokenizer_mode(app, match_transformers_v5);
    text_opt = app.add_option("--text", texts,
                              "text to encode; repeat for several texts, one output line each; write --text=-x for "
                              "text that starts with '-' (one of --text, --chat is required)")
                   ->allow_extra_args(false);
    chat_opt = app.add_option("--chat", chat,
                              "a JSON file holding a list of {\"role\", \"content\"}: rendered with the tokenizer's "
                              "chat template and a generation prompt, then encoded without added special tokens (one of "
                              "--text, --chat is required)")
                   ->check(CLI::ExistingFile);
    text_opt->excludes(chat_opt);
    app.add_option("--chat-template", chat_template,
                   "with --chat: use this known template (e.g. llama3-instruct, llama2-chat, mistral-v0.2) instead "
                   "of the tokenizer files' (default: the files' template)")
        ->needs(chat_opt);
    app.add_flag("--no-special", no_special,
                 "with --text: do not add the special tokens of the tokenizer's post-processor, such as Llama's BOS "
                 "(default: add them, as HF's encode does)")
        ->excludes(chat_opt);
  }

  int run() {
    if (text_opt->count() == 0 && chat_opt->count() == 0)
      throw ArgError("--text or --chat", "nothing to tokenize (give --text TEXT, repeatable, or --chat FILE.json)");
    Tokenizer tok = blame("--tokenizer", [&] { return Tokenizer::from_file(tokenizer, tokenizer_mode(match_transformers_v5)); });
    if (chat_opt->count() > 0) {
      if (!chat_template.empty()) blame("--chat-template", [&] { tok.use_chat_template(chat_template); });
      auto messages = read_chat_file("--chat", chat);
      std::string text;
      try {
        text = tok.apply_chat_template(messages, /*add_generation_prompt=*/true);
      } catch (const ConfigError& e) {  // no chat template, or one mechlens does not know
        throw ArgError("--chat", std::string(e.what()) + " (from the command line: --chat-template NAME)");
      } catch (const Error& e) {
        throw ArgError("--chat", e.what());
      }
      const auto ids = blame("--chat", [&] { return tok.encode(text, /*add_special_tokens=*/false); });
      print_json({{"text", text}, {"ids", ids}, {"tokens", tok.tokens(ids)}});
      return 0;
    }
    for (const auto& text : texts) {
      const auto ids = blame("--text", [&] { return tok.encode(text, !no_special); });
      print_json({{"text", text}, {"ids", ids}, {"tokens", tok.tokens(ids)}});
    }
    return 0;
  }
};

struct DecodeCommand {
  std::string tokenizer;
  std::vector<std::string> ids;
  bool skip_special = false;

  void add(CLI::App& app) {
    app.add_option("--tokenizer,--model", tokenizer, "tokenizer.json, or a checkpoint folder holding one")
        ->required()
        ->check(CLI::ExistingPath);
    app.add_option("--ids", ids, "token ids to decode: 1,2,3; repeat for several lists, one output line each")
        ->required()
        ->allow_extra_args(false);
    app.add_flag("--skip-special", skip_special,
                 "leave out special tokens such as <s> or <|eot_id|> (default: keep them, as HF's decode does)");
  }

  int run() {
    std::vector<std::vector<int64_t>> lists;
    for (const auto& text : ids) lists.push_back(parse_ids("--ids", text));
    Tokenizer tok = blame("--tokenizer", [&] { return Tokenizer::from_file(tokenizer); });
    for (const auto& list : lists) {
      const std::string text = blame("--ids", [&] { return tok.decode(list, skip_special); });
      print_json({{"text", text}, {"tokens", tok.tokens(list)}});
    }
    return 0;
  }
};

}  // namespace mechlens::cli
