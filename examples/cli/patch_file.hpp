#pragma once
// The --patch-file of `mechlens forward` and `mechlens generate`: a JSON list of interventions
// (intervention specs, or the original patch entries), read with every problem naming the file,
// the entry and the field, and turned into one Intervention whose sources are run clean first.

#include <optional>
#include <string>
#include <vector>

#include <mechlens/experiments/intervention_spec.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/interventions/patch.hpp>

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
/// {"prompt": "text"}, their scope as "scope" / "steps" — or the original patch entries {"hook",
/// "source_ids" | "source_prompt", "positions" (a list, "all" or "LO:HI"; default all), "head"
/// (optional), "align" ("left" | "right", optional), "scope" (optional)}, which are read as
/// {"kind": "patch"} specs. Every problem names the file, the entry and the field.
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
          it.key() != "head" && it.key() != "align" && it.key() != "scope")
        throw bad(it.key(), "is not a patch field (expected hook, source_ids or source_prompt, positions, head, align, scope)");
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
    Steps steps = Steps::prompt();
    if (e.contains("scope")) {
      const auto& sc = e.at("scope");
      const std::string v = sc.is_string() ? sc.get<std::string>() : "";
      if (v == "prompt") steps = Steps::prompt();
      else if (v == "generated") steps = Steps::generated();
      else if (v == "both") steps = Steps::all();
      else throw bad("scope", "must be \"prompt\", \"generated\" or \"both\", got " + sc.dump().substr(0, 100));
    }
    PatchEntry entry;  // the same patch, as a spec
    entry.spec.steps = steps;
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

/// Whether a spec's source must be recorded over its own generation: a patch or swap whose steps
/// reach generated tokens takes the source's generated tokens (docs/design.md, "Intervention scopes").
inline bool source_generates(const experiments::InterventionSpec& s) {
  using Kind = experiments::InterventionSpec::Kind;
  return (s.kind == Kind::Patch || s.kind == Kind::Swap) && s.steps.end > 1;
}

/// One Intervention of every entry, each source run clean before any is attached: one forward
/// over its prompt, or — for a patch scoped to generated tokens too — its own generation under
/// `source_generation` (the command's options), recorded by an accumulating activation cache.
/// Without `source_generation` (a forward) an entry scoped to generated tokens only is an error.
inline Intervention patch_file_interventions(ModelImpl& m, const std::vector<PatchEntry>& patches,
                                             const GenerationOptions* source_generation) {
  Intervention all;
  for (size_t i = 0; i < patches.size(); ++i) {
    const auto& p = patches[i];
    const std::string arg = fmt::format("--patch-file entry {}", i);
    if (!source_generation && !p.spec.steps.contains(0))
      throw ArgError(arg, fmt::format("is scoped to {}, which a forward has none of (mechlens generate runs it)",
                                      p.spec.steps.str() == "generated" ? "generated tokens" : p.spec.steps.str()));
    if (p.source_ids.empty()) {
      all |= blame(arg, [&] { return experiments::to_intervention(p.spec); });
      continue;
    }
    CacheOptions keep;
    keep.names = experiments::spec_hooks(p.spec);
    ActivationCache source;
    if (source_generates(p.spec) && source_generation) {
      keep.accumulate = true;
      source = ActivationCache::attach(m.hooks(), keep);
      blame(arg, [&] { return generate(m, {p.source_ids}, *source_generation); });
      source.detach();
    } else {
      source = blame(arg, [&] {
        return m.run_with_cache(at::tensor(p.source_ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}), keep).second;
      });
    }
    all |= blame(arg, [&] { return experiments::to_intervention(p.spec, &source); });
  }
  return all;
}

}  // namespace mechlens::cli
