#pragma once
/// \file
/// Conditions of the study: what is done to a batch of pairs before decoding. A Condition names
/// the prompt that is decoded (its *target*: the treatment — in DEC7, recursive — or the baseline
/// prompt of each pair)
/// and prepares the batch's prompt state — plainly prefilled (natural), prefilled and then given
/// another prompt's KV cache on some layers (KV transfer), or prefilled under a single-pass
/// activation patch (V, Q, K, Q+K+V, residual stream). Study (study.hpp) decodes, scores and
/// records what a condition prepares.
///
/// Prompt state (docs/design.md): prefill runs every prompt token but the last; the last is pending
/// and is fed first when decoding starts. A KV transfer copies the source prompt's prefilled
/// slots (never its last token) into the target's, row by row on each row's own tokens
/// (interventions/kv_splice_rows.hpp), so the first generated token already sees the transplanted cache.

#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/core/selection.hpp"
#include "mechlens/experiments/intervention_spec.hpp"
#include "mechlens/experiments/prompt_encoding.hpp"
#include "mechlens/experiments/prompt_pairs.hpp"
#include "mechlens/generation/generate.hpp"
#include "mechlens/generation/left_pad.hpp"
#include "mechlens/generation/prompt_state.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/interventions/kv_splice_rows.hpp"
#include "mechlens/interventions/patch_rows.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens::experiments {

/// One batch of pairs as a condition sees it.
struct BatchContext {
  ModelImpl* model = nullptr;
  const std::vector<PromptPair>* pairs = nullptr;
  const std::vector<EncodedPair>* encoded = nullptr;
  std::vector<size_t> rows;  ///< indices of this batch's pairs
  int64_t batch_index = 0;
  int64_t max_new_tokens = 50;
  /// Called by the standard conditions right before the target prompt's prefill (after any work
  /// on source prompts): where a probe attaches to record the decoded run only.
  std::function<void()> before_target_prefill;

  /// Called by the standard conditions right after the target prompt's prefill, before any edit
  /// of its cache (a splice) and before anything more runs: where a probe reads the prefilled
  /// state (experiments/generation_rv.hpp reads R_V's prompt rows there).
  std::function<void(const PromptState&)> after_target_prefill;

  void target_prefill_starts() const {
    if (before_target_prefill) before_target_prefill();
  }
  void target_prefilled(const PromptState& state) const {
    if (after_target_prefill) after_target_prefill(state);
  }

  /// The `role` prompt of each row's pair, or of pair source_of[row] when given.
  std::vector<std::vector<int64_t>> prompts(Role role, const std::vector<size_t>* source_of = nullptr) const {
    std::vector<std::vector<int64_t>> out;
    for (size_t r : rows) out.push_back((*encoded)[source_of ? (*source_of)[r] : r].ids(role));
    return out;
  }
};

/// What a condition hands to the decoder.
struct PreparedBatch {
  PromptState state;
  std::vector<nlohmann::json> sources;  ///< per row: where a patch came from (null when natural)
  std::vector<nlohmann::json> notes;    ///< per row: anything else to record (null for nothing)
  /// Hooks that stay attached while decoding (an active hook makes decoding leave the CUDA graph
  /// and run its block's readable path: a probe that can read the cache afterwards should).
  HookHandle decoding_scope;
  /// Called after decoding with the result and the state decode() advanced (its cache holds every
  /// slot the run wrote); may add per-row values to `extra` (size = rows).
  std::function<void(const GenerationResult&, const PromptState& decoded, std::vector<nlohmann::json>& extra)> finish;
};

struct Condition {
  std::string name;                  ///< unique in a run, e.g. "baseline+recursive_kv@16:32"
  Role target = Role::Baseline;      ///< the prompt that is decoded
  std::string intervention;          ///< in words, recorded ("" when natural)
  std::string layers;                ///< "lo:hi" of the patch ("" when none)
  /// What is done, as data: the intervention spec's JSON (to_json(InterventionSpec),
  /// intervention_spec.hpp); null when natural. Recorded, and compared when a run resumes.
  nlohmann::json spec;
  /// What a probe reads besides the generation (e.g. {"rv": options}); null when none. Recorded
  /// and compared like `spec`.
  nlohmann::json probe;
  /// The source pair of each pair (indices into the pair list); empty: each pair is its own.
  std::vector<size_t> source_of;
  std::function<PreparedBatch(const BatchContext&)> prepare;
};

namespace detail {

inline nlohmann::json source_json(const BatchContext& ctx, size_t row, Role role, const std::vector<size_t>* source_of) {
  const size_t s = source_of ? (*source_of)[row] : row;
  return {{"pair_id", (*ctx.pairs)[s].id}, {"role", role_name(role)}, {"prompt_ids", (*ctx.encoded)[s].ids(role)}};
}

}  // namespace detail

/// The target prompt, plainly prefilled.
inline Condition natural(Role target, std::string name = "") {
  Condition c;
  c.name = name.empty() ? std::string(role_name(target)) : std::move(name);
  c.target = target;
  c.prepare = [target](const BatchContext& ctx) {
    PreparedBatch p;
    ctx.target_prefill_starts();
    p.state = prefill(*ctx.model, ctx.prompts(target), ctx.max_new_tokens);
    ctx.target_prefilled(p.state);
    p.sources.assign(ctx.rows.size(), nullptr);
    p.notes.assign(ctx.rows.size(), nullptr);
    return p;
  };
  return c;
}

/// A derangement of 0..n-1 (no i maps to itself), seeded: the source of the shuffled controls.
inline std::vector<size_t> shuffled_sources(size_t n, uint64_t seed) {
  MECHLENS_CHECK(n >= 2, ArgumentError, "a shuffled-source control needs at least 2 pairs (got {})", n);
  std::mt19937_64 rng(seed ^ 0x5eed5eed5eedULL);
  std::vector<size_t> p(n);
  // Sattolo's algorithm: a uniformly random cyclic permutation, so no pair is its own source.
  std::iota(p.begin(), p.end(), size_t{0});
  for (size_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng() % i]);
  return p;
}

struct KvTransferOptions {
  Role source = Role::Treatment;      ///< which prompt of the source pair gives its cache
  std::optional<LayerRange> layers;   ///< default: all layers
  Align align = Align::Exact;         ///< interventions/align.hpp; the DEC7 programs pass Right
  bool rerotate = false;
  std::vector<int64_t> from_end;      ///< copy only these slots (distance from the end, 1 = last)
  std::vector<int64_t> from_start;    ///< ... and these (index from the start, 0 = first)
  std::vector<size_t> source_of;      ///< source pair of each pair; empty = the same pair
  std::string source_label;           ///< in words for records ("same pair", "shuffled pair")
};

/// The target prompt with (some layers and slots of) a source prompt's KV cache.
inline Condition kv_transfer(std::string name, Role target, KvTransferOptions opt, const ModelConfig& cfg) {
  Condition c;
  c.name = std::move(name);
  c.target = target;
  const LayerRange layers = opt.layers.value_or(LayerRange{0, cfg.n_layers()});
  layers.check(cfg.n_layers(), "KV transfer layers");
  c.layers = layers.str();
  std::string slots;
  auto list = [](const std::vector<int64_t>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
  };
  if (!opt.from_end.empty()) slots += ", slots at distance [" + list(opt.from_end) + "] from the end";
  if (!opt.from_start.empty()) slots += ", slots [" + list(opt.from_start) + "] from the start";
  c.intervention = fmt::format("KV cache of the {} prompt ({}) at layers {}, {}-aligned{}{}", role_name(opt.source),
                               opt.source_label.empty() ? (opt.source_of.empty() ? "same pair" : "other pair")
                                                        : opt.source_label,
                               layers.str(), align_name(opt.align), opt.rerotate ? ", keys re-rotated" : "", slots);
  // The spec is what runs: the splice's options are made from it.
  InterventionSpec spec;
  spec.kind = InterventionSpec::Kind::KvSplice;
  spec.layers = layers;
  spec.align = opt.align;
  spec.rows = true;
  spec.rerotate = opt.rerotate;
  spec.from_end = opt.from_end;
  spec.from_start = opt.from_start;
  spec.source.role = role_name(opt.source);
  spec.source.other_pair = !opt.source_of.empty();
  c.spec = to_json(spec);
  c.source_of = opt.source_of;
  const RowSpliceOptions so = to_row_splice_options(spec, cfg);
  c.prepare = [target, opt, so](const BatchContext& ctx) {
    const std::vector<size_t>* src_of = opt.source_of.empty() ? nullptr : &opt.source_of;
    PreparedBatch p;
    PromptState source = prefill(*ctx.model, ctx.prompts(opt.source, src_of), 0);
    ctx.target_prefill_starts();
    p.state = prefill(*ctx.model, ctx.prompts(target), ctx.max_new_tokens);
    ctx.target_prefilled(p.state);
    auto copied = splice_kv_rows(p.state.cache, source.cache, so);
    for (size_t i = 0; i < ctx.rows.size(); ++i) {
      p.sources.push_back(detail::source_json(ctx, ctx.rows[i], opt.source, src_of));
      p.notes.push_back({{"slots_copied", copied[i]}});
    }
    return p;
  };
  return c;
}

/// Where a single-pass patch acts.
enum class PatchSite { V, Q, K, QKV, Resid };

inline const char* patch_site_name(PatchSite s) {
  switch (s) {
    case PatchSite::V: return "v";
    case PatchSite::Q: return "q";
    case PatchSite::K: return "k";
    case PatchSite::QKV: return "qkv";
    case PatchSite::Resid: return "resid";
  }
  return "?";
}

/// Hook names a patch of `site` at `layers` replaces.
inline std::vector<std::string> patch_hooks(PatchSite site, LayerRange layers) {
  std::vector<std::string> out;
  for (int64_t l = layers.begin; l < layers.end; ++l) {
    switch (site) {
      case PatchSite::V: out.push_back(hook_name(l, "attn.hook_v")); break;
      case PatchSite::Q: out.push_back(hook_name(l, "attn.hook_q")); break;
      case PatchSite::K: out.push_back(hook_name(l, "attn.hook_k")); break;
      case PatchSite::QKV:
        for (const char* s : {"attn.hook_q", "attn.hook_k", "attn.hook_v"}) out.push_back(hook_name(l, s));
        break;
      case PatchSite::Resid: out.push_back(hook_name(l, "hook_resid_post")); break;
    }
  }
  return out;
}

/// The target prompt prefilled while the activations at `site` and `layers` of its prefilled
/// tokens are replaced by the source prompt's (same pair), row-aligned. The patch acts in the
/// prefill forward only; decoding runs unpatched on the cache that pass wrote.
inline Condition single_pass_patch(std::string name, Role target, Role source, PatchSite site, LayerRange layers,
                                   const ModelConfig& cfg, Align align = Align::Exact) {
  layers.check(cfg.n_layers(), "patch layers");
  Condition c;
  c.name = std::move(name);
  c.target = target;
  c.layers = layers.str();
  c.intervention = fmt::format(
      "single-pass patch of {} at layers {} from the {} prompt (scope: the whole prompt, its last token included; "
      "generated tokens unpatched), {}-aligned",
      patch_site_name(site), layers.str(), role_name(source), align_name(align));
  InterventionSpec spec;
  spec.kind = InterventionSpec::Kind::Swap;
  spec.site = patch_site_name(site);
  spec.layers = layers;
  spec.align = align;
  spec.rows = true;
  spec.source.role = role_name(source);
  c.spec = to_json(spec);
  const auto hooks = spec_hooks(spec);
  c.prepare = [target, source, hooks, spec](const BatchContext& ctx) {
    at::NoGradGuard no_grad;
    PreparedBatch p;
    std::vector<int64_t> nt;
    // The source over its whole prompts (the last token included): the pending target token,
    // which the first decoding step feeds, takes the source's last token.
    const LeftPadded src = left_pad(ctx.prompts(source));
    for (const auto& t : ctx.prompts(target)) nt.push_back(static_cast<int64_t>(t.size()));
    CacheOptions co;
    co.names = hooks;
    ForwardOptions fo;
    fo.last_position_only = true;
    if (src.padded()) fo.attention_mask = src.live;
    auto cached = ctx.model->run_with_cache(src.ids, co, fo).second;
    const std::vector<int64_t>& ns = src.lengths;
    // Attached until decoding ends (the study runner resets it): the prefill and the first
    // decoding step run it; later steps run as if it were not there.
    p.decoding_scope = ctx.model->apply(to_row_intervention(spec, cached, ns, nt));
    ctx.target_prefill_starts();
    p.state = prefill(*ctx.model, ctx.prompts(target), ctx.max_new_tokens);
    ctx.target_prefilled(p.state);
    for (size_t i = 0; i < ctx.rows.size(); ++i) {
      p.sources.push_back(detail::source_json(ctx, ctx.rows[i], source, nullptr));
      p.notes.push_back(nullptr);
    }
    return p;
  };
  return c;
}

}  // namespace mechlens::experiments
