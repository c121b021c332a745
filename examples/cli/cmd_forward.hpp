#pragma once
// mechlens forward: one forward pass, optionally under activation patches, with the logits and
// any hook's activations written to a safetensors file (float32) for a notebook.

#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <mechlens/experiments/intervention_spec.hpp>
#include <mechlens/interventions/patch.hpp>
#include <mechlens/io/safetensors.hpp>

#include "cli_support.hpp"

namespace mechlens::cli {

/// One entry of a --patch-file: an intervention spec (experiments/intervention_spec.hpp) and the
/// token ids of its source run (empty when it takes none).
struct PatchEntry {
  experiments::InterventionSpec spec;
  std::vector<int64_t> source_ids;
};

/// Reads a --patch-file: a JSON list whose entries are either intervention specs — objects with a
/// "kind": patch, swap, ablation, steering or scale, their source given as {"ids": [...]} or
/// {"prompt": "text"} — or the original patch entries {"hook", "source_ids" | "source_prompt",
/// "positions" (a list, "all" or "LO:HI"; default all), "head" (optional), "align" ("left" |
/// "right", optional)}, which are read as {"kind": "patch"} specs. Every problem names the file,
/// the entry and the field.
inline std::vector<PatchEntry> read_patch_file(const std::string& path, const ModelArgs& model, const ModelConfig& cfg) {
  const std::string arg = "--patch-file";
  nlohmann::json j = blame(arg, [&] { return io::read_json_file(path); });
  if (j.is_object()) j = nlohmann::json::array({j});
  if (!j.is_array() || j.empty())
    throw ArgError(arg, fmt::format("'{}' must hold a non-empty JSON list of patches such as {{\"hook\": "
                                    "\"blocks.3.attn.hook_v\", \"source_ids\": [5, 6, 7], \"positions\": [1, 2]}}",
                                    path));
  std::vector<PatchEntry> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    const std::string where = fmt::format("'{}' entry {}", path, i);
    auto bad = [&](const std::string& field, const std::string& what) -> ArgError {
      return ArgError(arg, fmt::format("{}: \"{}\" {}", where, field, what));
    };
    if (!e.is_object()) throw ArgError(arg, fmt::format("{}: expected an object, got {}", where, e.dump().substr(0, 200)));
    if (e.contains("kind")) {  // an intervention spec
      PatchEntry entry;
      entry.spec = blame(arg, [&] { return experiments::parse_intervention_spec(e, where); });
      const auto& s = entry.spec;
      if (s.kind == experiments::InterventionSpec::Kind::KvSplice)
        throw bad("kind", "kv_splice edits a KV cache, which forward has none of (mechlens generate --kv-source-* splices)");
      if (s.rows) throw bad("rows", "is for left-padded batches; forward runs one prompt");
      if (!s.source.role.empty())
        throw bad("source", "names a study pair's role; give the source as {\"ids\": [...]} or {\"prompt\": \"...\"}");
      if (!s.source.prompt.empty()) {
        Tokenizer tok = load_tokenizer_for(arg + " " + where + " \"source\"", model);
        entry.source_ids = blame(arg, [&] { return tok.encode(s.source.prompt, true); });
      } else {
        entry.source_ids = s.source.ids;
      }
      try {
        check_vocab("source ids", entry.source_ids, cfg.vocab_size);
      } catch (const ArgError& err) {
        throw ArgError(arg, where + ": " + err.what());
      }
      out.push_back(std::move(entry));
      continue;
    }
    for (auto it = e.begin(); it != e.end(); ++it)
      if (it.key() != "hook" && it.key() != "source_ids" && it.key() != "source_prompt" && it.key() != "positions" &&
          it.key() != "head" && it.key() != "align")
        throw bad(it.key(), "is not a patch field (expected hook, source_ids or source_prompt, positions, head, align)");
    struct {
      std::string hook;
      std::vector<int64_t> source_ids;
      Selection selection;
      Align align = Align::Exact;
    } p;
    if (!e.contains("hook") || !e.at("hook").is_string()) throw bad("hook", "is missing or not a string");
    p.hook = e.at("hook").get<std::string>();
    if (e.contains("source_ids") == e.contains("source_prompt"))
      throw bad("source_ids", "or \"source_prompt\" must be given (exactly one of them)");
    if (e.contains("source_ids")) {
      const auto& s = e.at("source_ids");
      if (!s.is_array() || s.empty()) throw bad("source_ids", "must be a non-empty list of token ids");
      for (const auto& v : s) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0) throw bad("source_ids", "holds " + v.dump() + ", not a token id");
        p.source_ids.push_back(v.get<int64_t>());
      }
    } else {
      if (!e.at("source_prompt").is_string()) throw bad("source_prompt", "must be a string");
      Tokenizer tok = load_tokenizer_for(arg + " " + where + " \"source_prompt\"", model);
      p.source_ids = blame(arg, [&] { return tok.encode(e.at("source_prompt").get<std::string>(), true); });
    }
    try {
      check_vocab("source_ids", p.source_ids, cfg.vocab_size);
    } catch (const ArgError& err) {
      throw ArgError(arg, where + ": " + err.what());
    }
    if (e.contains("positions")) {
      const auto& pos = e.at("positions");
      if (pos.is_string() && pos.get<std::string>() == "all") {
        p.selection.positions = Positions::all();
      } else if (pos.is_string()) {
        const std::string s = pos.get<std::string>();
        const auto colon = s.find(':');
        int64_t lo = -1, hi = -1;
        try {
          if (colon != std::string::npos) lo = std::stoll(s.substr(0, colon)), hi = std::stoll(s.substr(colon + 1));
        } catch (const std::logic_error&) {
        }
        if (lo < 0 || hi <= lo) throw bad("positions", "'" + s + "' is not \"all\", a list or a range \"LO:HI\"");
        p.selection.positions = Positions::range(lo, hi);
      } else if (pos.is_array() && !pos.empty()) {
        std::vector<int64_t> list;
        for (const auto& v : pos) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0) throw bad("positions", "holds " + v.dump() + ", not a position");
          list.push_back(v.get<int64_t>());
        }
        p.selection.positions = Positions::list(list);
      } else {
        throw bad("positions", "must be a non-empty list of positions, \"all\" or \"LO:HI\"");
      }
    }
    if (e.contains("head") && !e.at("head").is_null()) {
      if (!e.at("head").is_number_integer() || e.at("head").get<int64_t>() < 0)
        throw bad("head", "must be a head index (a non-negative integer)");
      p.selection.heads = IndexSet::only({e.at("head").get<int64_t>()});
    }
    if (e.contains("align")) {
      if (!e.at("align").is_string()) throw bad("align", "must be \"left\" or \"right\"");
      p.align = blame(arg, [&] { return parse_align(e.at("align").get<std::string>()); });
    }
    PatchEntry entry;  // the same patch, as a spec
    entry.spec.kind = experiments::InterventionSpec::Kind::Patch;
    entry.spec.hook = p.hook;
    entry.spec.positions = p.selection.positions;
    entry.spec.heads = p.selection.heads;
    entry.spec.align = p.align;
    entry.spec.source.ids = p.source_ids;
    entry.source_ids = std::move(p.source_ids);
    out.push_back(std::move(entry));
  }
  return out;
}

struct ForwardCommand {
  ModelArgs model;
  PromptArgs prompt;
  std::vector<std::string> save;
  std::string patch_file;
  std::string out;

  void add(CLI::App& app) {
    model.add(app);
    prompt.add(app, "the prompt", "(one of --ids, --prompt, --chat is required)");
    app.add_option("--save", save,
                   "hook name or glob whose activation to write (float32, under its hook name), e.g. "
                   "'blocks.*.attn.hook_v'; repeatable; '*' saves every hook (default: logits only)")
        ->allow_extra_args(false);
    app.add_option("--patch-file", patch_file,
                   "JSON list of patches applied together: {\"hook\", \"source_ids\" (or \"source_prompt\"), "
                   "\"positions\" (list, \"all\" or \"LO:HI\"; default all), \"head\" (optional), \"align\" (left or "
                   "right, for a source of another length)}; each source is run clean and its activation replaces "
                   "the target's. Entries may also be intervention specs with a \"kind\" (patch, swap, ablation, "
                   "steering, scale; docs/experiments.md) (default: no patches)")
        ->check(CLI::ExistingFile);
    app.add_option("--out", out, "safetensors file to write: \"logits\" [1, pos, vocab] and the saved hooks")
        ->required();
  }

  int run() {
    at::NoGradGuard no_grad;
    const ModelConfig cfg = model.config();
    const auto ids = prompt.resolve(model, cfg);
    {  // fail before the forward, not after it
      const auto parent = std::filesystem::absolute(out).parent_path();
      std::error_code ec;
      if (!std::filesystem::is_directory(parent, ec))
        throw ArgError("--out", fmt::format("the folder '{}' of '{}' does not exist", parent.string(), out));
    }
    std::vector<PatchEntry> patches;
    if (!patch_file.empty()) patches = read_patch_file(patch_file, model, cfg);

    Model m = model.load();
    for (const auto& glob : save) blame("--save", [&] { m->hooks().select(glob); });
    for (size_t i = 0; i < patches.size(); ++i)
      for (const auto& hook : blame(fmt::format("--patch-file entry {}", i), [&] { return experiments::spec_hooks(patches[i].spec); }))
        blame(fmt::format("--patch-file entry {} \"{}\"", i, patches[i].spec.kind == experiments::InterventionSpec::Kind::Swap ? "site" : "hook"),
              [&] { m->hooks().select(hook); });

    auto as_batch = [&](const std::vector<int64_t>& v) {
      return at::tensor(v, at::TensorOptions().dtype(at::kLong)).view({1, static_cast<int64_t>(v.size())});
    };
    // Each source is run clean (before any patch is attached); then all patches act together.
    Intervention all;
    for (size_t i = 0; i < patches.size(); ++i) {
      const auto& p = patches[i];
      const std::string arg = fmt::format("--patch-file entry {}", i);
      if (p.source_ids.empty()) {
        all |= blame(arg, [&] { return experiments::to_intervention(p.spec); });
        continue;
      }
      CacheOptions keep;
      keep.names = experiments::spec_hooks(p.spec);
      auto source = blame(arg, [&] { return m->run_with_cache(as_batch(p.source_ids), keep).second; });
      all |= blame(arg, [&] { return experiments::to_intervention(p.spec, &source); });
    }
    HookHandle scope = m->apply(all);

    at::Tensor logits;
    ActivationCache cache;
    const std::string run_arg = patches.empty() ? prompt.used : "--patch-file";
    if (save.empty()) {
      logits = blame(run_arg, [&] { return m->forward(as_batch(ids)); });
    } else {
      CacheOptions keep;
      keep.names = save;
      keep.dtype = at::kFloat;
      keep.device = at::Device(at::kCPU);
      std::tie(logits, cache) = blame(run_arg, [&] { return m->run_with_cache(as_batch(ids), keep); });
    }
    scope.reset();

    std::vector<std::pair<std::string, at::Tensor>> tensors{{"logits", logits.to(at::kCPU, at::kFloat)}};
    nlohmann::ordered_json saved = nlohmann::ordered_json::array();
    for (const auto& name : m->hook_names()) {  // in the order a forward meets them
      if (!cache.contains(name)) continue;
      tensors.emplace_back(name, cache.get(name));
      saved.push_back(name);
    }
    std::map<std::string, std::string> metadata{{"model", model.dir},
                                                {"dtype", model.dtype},
                                                {"input_ids", nlohmann::json(ids).dump()},
                                                {"written_by", "mechlens forward"}};
    if (!patch_file.empty()) metadata["patch_file"] = patch_file;
    blame("--out", [&] { io::save_safetensors(out, tensors, metadata); });
    print_json({{"out", out}, {"ids", ids}, {"logits_shape", logits.sizes().vec()}, {"saved", saved}});
    return 0;
  }
};

}  // namespace mechlens::cli
