#pragma once
// mechlens generate: decoding from the prompt state (docs/design.md), optionally after a KV splice
// from a source prompt or on top of a source prompt's cache as prefix memory.

#include <ATen/ATen.h>

#include <mechlens/generation/generate.hpp>
#include <mechlens/generation/prompt_state.hpp>
#include <mechlens/interventions/kv_splice.hpp>

#include "cli_support.hpp"

namespace mechlens::cli {

struct GenerateCommand {
  ModelArgs model;
  PromptArgs prompt;
  PromptArgs kv_source{"kv-source"};
  PromptArgs kv_prefix{"kv-prefix"};
  int64_t max_new_tokens = 0;
  SamplingOptions sampling;  ///< --temperature, --top-k, --top-p, --seed
  std::string kv_layers, kv_align;
  std::string stop_ids;
  bool ignore_eos = false;
  bool allow_long_context = false;
  CLI::Option *layers_opt = nullptr, *align_opt = nullptr;

  void add(CLI::App& app) {
    model.add(app);
    prompt.add(app, "the prompt (the target of a KV splice)", "(one of --ids, --prompt, --chat is required)");
    app.add_option("--max-new-tokens", max_new_tokens, "how many tokens to generate at most")
        ->required()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--temperature", sampling.temperature,
                   "sampling temperature; 0 is greedy, taking the most likely token (default: 0)")
        ->check(finite_number(0.0, /*low_open=*/false, std::numeric_limits<double>::infinity()));
    app.add_option("--top-k", sampling.top_k, "with --temperature: sample among the k most likely tokens (default: 0, all)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--top-p", sampling.top_p,
                   "with --temperature: sample from the smallest set of tokens whose probability reaches p "
                   "(default: 1, all)")
        ->check(finite_number(0.0, /*low_open=*/true, 1.0));
    app.add_option("--seed", sampling.seed, "sampling seed: row r samples from its own stream, seeded from (seed, r); the same seed gives the same text (default: 0)")
        ->check(CLI::NonNegativeNumber);  // "-1" would wrap to 2^64 - 1
    app.add_option("--stop-ids", stop_ids, "more token ids that end generation: 1,2 (default: none)");
    app.add_flag("--ignore-eos", ignore_eos,
                 "do not stop at the model's eos tokens (config.json and generation_config.json), generate exactly "
                 "--max-new-tokens (default: stop at eos)");
    app.add_flag("--allow-long-context", allow_long_context,
                 "run past the model's context (max_position_embeddings in config.json), where positions were "
                 "never trained (default: refused)");
    kv_source.add(app, "the KV splice source (prefilled like the prompt; its cache entries replace the prompt's)",
                  "(default: no splice)", /*with_chat=*/false);
    layers_opt = app.add_option("--kv-layers", kv_layers,
                                "with --kv-source-*: the layers LO:HI (half-open, 0-based) whose cache entries are "
                                "copied from the source (default: all layers)");
    align_opt = app.add_option("--kv-align", kv_align,
                               "with --kv-source-*: which slots overlap when the prompts' lengths differ: left (the "
                               "first m) or right (the last m); required then (default: none, lengths must match)")
                    ->check(CLI::IsMember({"left", "right"}));
    kv_prefix.add(app, "the KV prefix memory (run whole; the prompt continues after its cache, positions too)",
                  "(default: no prefix)", /*with_chat=*/false);
    for (auto* s : {kv_source.ids_opt, kv_source.prompt_opt})
      for (auto* p : {kv_prefix.ids_opt, kv_prefix.prompt_opt}) s->excludes(p);
  }

  int run() {
    const ModelConfig cfg = model.config();
    const auto target = prompt.resolve(model, cfg);
    const bool splice = kv_source.given(), prefix = kv_prefix.given();
    if (!splice && layers_opt->count() > 0) throw ArgError("--kv-layers", "needs --kv-source-ids or --kv-source-prompt");
    if (!splice && align_opt->count() > 0) throw ArgError("--kv-align", "needs --kv-source-ids or --kv-source-prompt");
    std::vector<int64_t> source, memory;
    SpliceOptions splice_opt;
    if (splice) {
      source = kv_source.resolve(model, cfg);
      if (layers_opt->count() > 0) splice_opt.layers = blame("--kv-layers", [&] { return LayerRange::parse(kv_layers, cfg.n_layers()); });
      if (align_opt->count() > 0) splice_opt.align = parse_align(kv_align);
      if (source.size() != target.size() && splice_opt.align == Align::Exact)
        throw ArgError("--kv-align", fmt::format("is required: the prompt has {} tokens and the KV source {} (their "
                                                 "caches hold {} and {} slots); choose left or right",
                                                 target.size(), source.size(), target.size() - 1, source.size() - 1));
    }
    if (prefix) memory = kv_prefix.resolve(model, cfg);
    // Checked against config.json before the model is loaded or any cache allocated.
    if (!allow_long_context) {
      const int64_t context = cfg.max_position_embeddings;
      const auto held = static_cast<int64_t>(memory.size() + target.size());
      if (held > context)
        throw ArgError(prompt.used, fmt::format("holds {} tokens{}, more than the model's context of {} "
                                                "(max_position_embeddings; --allow-long-context runs anyway)",
                                                held, prefix ? " with the KV prefix" : "", context));
      if (max_new_tokens > context - held + 1)
        throw ArgError("--max-new-tokens", fmt::format("{} after a prompt of {} tokens exceeds the model's context of "
                                                       "{} (max_position_embeddings; at most {} fit, or pass "
                                                       "--allow-long-context)",
                                                       max_new_tokens, held, context, context - held + 1));
      if (splice && static_cast<int64_t>(source.size()) > context)
        throw ArgError(kv_source.used, fmt::format("holds {} tokens, more than the model's context of {}",
                                                   source.size(), context));
    }

    GenerationOptions gen;
    gen.max_new_tokens = max_new_tokens;
    gen.sampling = sampling;
    gen.use_model_eos = !ignore_eos;
    gen.allow_long_context = allow_long_context;
    if (!stop_ids.empty()) gen.stop_tokens = parse_ids("--stop-ids", stop_ids);

    Model m = model.load();
    // The tokenizer is read before the model runs, so a broken one fails fast.
    std::optional<Tokenizer> tok;
    if (auto path = model.tokenizer_path())
      tok = blame("--tokenizer", [&] { return Tokenizer::from_file(*path, model.tokenizer_options()); });

    PromptState state;
    if (prefix) {
      KVCache cache = blame(kv_prefix.used, [&] { return encode_prompt(*m, memory, 0, allow_long_context); });
      state = blame(prompt.used, [&] { return prefill(*m, target, max_new_tokens, &cache, allow_long_context); });
    } else {
      state = blame(prompt.used, [&] { return prefill(*m, target, max_new_tokens, nullptr, allow_long_context); });
    }
    if (splice) {
      PromptState src = blame(kv_source.used, [&] { return prefill(*m, source, 0, nullptr, allow_long_context); });
      blame(kv_source.used, [&] { splice_kv(state.cache, src.cache, splice_opt); });
    }
    GenerationResult result = blame("--max-new-tokens", [&] { return decode(*m, state, gen); });

    nlohmann::ordered_json out;
    out["new_ids"] = result.tokens[0];
    if (tok) out["text"] = blame("--tokenizer", [&] { return tok->decode(result.tokens[0], /*skip_special_tokens=*/true); });
    out["stopped"] = static_cast<bool>(result.stopped[0]);
    out["prompt_ids"] = target;
    print_json(out);
    return 0;
  }
};

}  // namespace mechlens::cli
