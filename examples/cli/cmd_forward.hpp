#pragma once
// mechlens forward: one forward pass, optionally under activation patches, with the logits and
// any hook's activations written to a safetensors file (float32) for a notebook.

#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <mechlens/io/safetensors.hpp>

#include "cli_support.hpp"
#include "patch_file.hpp"

namespace mechlens::cli {

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
    const Intervention all = patch_file_interventions(*m, patches, nullptr);
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
