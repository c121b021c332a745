#pragma once
// mechlens generate: decoding from the prompt state (docs/design.md), optionally after a KV splice
// from a source prompt (some layers, KV heads or slots) or on top of a source prompt's cache as
// prefix memory, and under the interventions of a --patch-file, each in its scope.

#include <ATen/ATen.h>

#include <mechlens/generation/generate.hpp>
#include <mechlens/generation/prompt_state.hpp>
#include <mechlens/interventions/kv_splice.hpp>

#include "cli_support.hpp"
#include "patch_file.hpp"

namespace mechlens::cli {

struct GenerateCommand {
  ModelArgs model;
  PromptArgs prompt;
  PromptArgs kv_source{"kv-source"};
  PromptArgs kv_prefix{"kv-prefix"};
  int64_t max_new_tokens = 0;
  SamplingOptions sampling;  ///< --temperature, --top-k, --top-p, --seed
  std::string kv_layers, kv_align, kv_heads, kv_slots;
  std::string patch_file;
  std::string stop_ids;
  bool ignore_eos = false;
  bool allow_long_context = false;
  CLI::Option *layers_opt = nullptr, *align_opt = nullptr, *heads_opt = nullptr, *slots_opt = nullptr;

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
    heads_opt = app.add_option("--kv-heads", kv_heads,
                               "with --kv-source-*: the KV heads copied, e.g. 0,3 (default: all)");
    slots_opt = app.add_option("--kv-slots", kv_slots,
                               "with --kv-source-*: of the aligned target slots (the prompt's tokens but the last), "
                               "copy only these: LO:HI or a list 0,4,5 (default: all)");
    app.add_option("--patch-file", patch_file,
                   "JSON list of interventions active while generating, as for `mechlens forward` (patches, swaps, "
                   "ablations, steering, scaling; docs/cli.md), each in its \"scope\": prompt (default: every "
                   "prompt token, the last included), generated, both, or \"steps\": \"a:b\"; a patch scoped to "
                   "generated tokens takes its source's own generation, run with the same options (default: none)")
        ->check(CLI::ExistingFile);
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
    if (!splice && heads_opt->count() > 0) throw ArgError("--kv-heads", "needs --kv-source-ids or --kv-source-prompt");
    if (!splice && slots_opt->count() > 0) throw ArgError("--kv-slots", "needs --kv-source-ids or --kv-source-prompt");
    std::vector<int64_t> source, memory;
    SpliceOptions splice_opt;
    if (splice) {
      source = kv_source.resolve(model, cfg);
      if (layers_opt->count() > 0) splice_opt.layers = blame("--kv-layers", [&] { return LayerRange::parse(kv_layers, cfg.n_layers()); });
      if (align_opt->count() > 0) splice_opt.align = parse_align(kv_align);
      if (heads_opt->count() > 0) {
        const auto heads = parse_ids("--kv-heads", kv_heads);
        for (int64_t h : heads)
          if (h >= cfg.n_kv_heads())
            throw ArgError("--kv-heads", fmt::format("head {} does not exist: the model has {} KV heads (0..{})", h,
                                                     cfg.n_kv_heads(), cfg.n_kv_heads() - 1));
        splice_opt.kv_heads = IndexSet::only(heads);
      }
      if (slots_opt->count() > 0) {
        const auto colon = kv_slots.find(':');
        if (colon == std::string::npos) {
          splice_opt.slots = Positions::list(parse_ids("--kv-slots", kv_slots));
        } else {
          const auto lo = parse_ids("--kv-slots", kv_slots.substr(0, colon)), hi = parse_ids("--kv-slots", kv_slots.substr(colon + 1));
          if (lo.size() != 1 || hi.size() != 1 || lo[0] >= hi[0])
            throw ArgError("--kv-slots", fmt::format("'{}' is not a range LO:HI with LO < HI, nor a list", kv_slots));
          splice_opt.slots = Positions::range(lo[0], hi[0]);
        }
      }
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

    std::vector<PatchEntry> patches;
    if (!patch_file.empty()) patches = read_patch_file(patch_file, model, cfg);

    Model m = model.load();
    // The tokenizer is read before the model runs, so a broken one fails fast.
    std::optional<Tokenizer> tok;
    if (auto path = model.tokenizer_path())
      tok = blame("--tokenizer", [&] { return Tokenizer::from_file(*path, model.tokenizer_options()); });
    for (size_t i = 0; i < patches.size(); ++i)
      for (const auto& hook : blame(fmt::format("--patch-file entry {}", i), [&] { return experiments::spec_hooks(patches[i].spec); }))
        blame(fmt::format("--patch-file entry {} \"{}\"", i, patches[i].spec.kind == experiments::InterventionSpec::Kind::Swap ? "site" : "hook"),
              [&] { m->hooks().select(hook); });

    // Every source runs clean, before any intervention is attached: the splice source's prefill,
    // then each patch's source (its generation, for a patch of generated tokens).
    std::optional<PromptState> src;
    if (splice) src = blame(kv_source.used, [&] { return prefill(*m, source, 0, nullptr, allow_long_context); });
    const Intervention all = patch_file_interventions(*m, patches, &gen);
    HookHandle scope = m->apply(all);

    PromptState state;
    if (prefix) {
      KVCache cache = blame(kv_prefix.used, [&] { return encode_prompt(*m, memory, 0, allow_long_context); });
      state = blame(prompt.used, [&] { return prefill(*m, target, max_new_tokens, &cache, allow_long_context); });
    } else {
      state = blame(prompt.used, [&] { return prefill(*m, target, max_new_tokens, nullptr, allow_long_context); });
    }
    if (splice) {
      const std::string arg = heads_opt->count() > 0 ? "--kv-heads" : slots_opt->count() > 0 ? "--kv-slots" : kv_source.used;
      blame(arg, [&] { splice_kv(state.cache, src->cache, splice_opt); });
    }
    GenerationResult result =
        blame(patches.empty() ? "--max-new-tokens" : "--patch-file", [&] { return decode(*m, state, gen); });
    scope.reset();

    nlohmann::ordered_json out;
    out["new_ids"] = result.tokens[0];
    if (tok) out["text"] = blame("--tokenizer", [&] { return tok->decode(result.tokens[0], /*skip_special_tokens=*/true); });
    out["stopped"] = static_cast<bool>(result.stopped[0]);
    out["prompt_ids"] = target;
    if (!patches.empty()) {
      nlohmann::ordered_json applied = nlohmann::ordered_json::array();
      for (const auto& part : all.parts()) applied.push_back(part.label + " [" + part.steps.str() + "]");
      out["interventions"] = applied;
    }
    print_json(out);
    return 0;
  }
};

}  // namespace mechlens::cli
