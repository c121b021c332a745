#pragma once
/// \file
/// Intervention specs: an intervention written as data (JSON), as pyvene's configs describe
/// theirs, parsed into InterventionSpec and turned into what the library runs — an Intervention
/// (hooks/intervention.hpp) for patches, swaps, ablations, steering and scaling, or the options
/// of a KV-cache splice (interventions/kv_splice.hpp, kv_splice_rows.hpp). Every record of a
/// study carries the spec of its condition (records.hpp), and a resumed run compares it.
///
///   {"kind": "kv_splice", "layers": "16:32", "align": "right", "rerotate": false, "rows": true,
///    "source": {"role": "recursive", "pair": "same"}}
///   {"kind": "swap", "site": "v", "layers": "24:25", "positions": "all", "align": "right",
///    "rows": true, "source": {"role": "recursive", "pair": "same"}}
///   {"kind": "patch", "hook": "blocks.*.attn.hook_v", "layers": "2:4", "positions": [1, 2],
///    "heads": [0], "align": "exact", "source": {"ids": [5, 6, 7]}}
///   {"kind": "ablation", "mode": "zero", "hook": "blocks.3.hook_mlp_out", "positions": "LO:HI"}
///   {"kind": "steering", "hook": "blocks.12.hook_resid_post", "vector": [0.1, ...], "scale": 4}
///   {"kind": "scale", "hook": "blocks.*.attn.hook_z", "layers": "0:2", "factor": 0.5}
///
/// Fields (each kind takes only its own; anything else is refused, naming the key):
///   kind       kv_splice | patch | swap | ablation | steering | scale
///   hook       patch, ablation, steering, scale: a hook name or a glob "blocks.*.<site>"
///   site       swap: v | q | k | qkv | resid | z (hook_v, hook_q, hook_k, all three,
///              hook_resid_post, hook_z of each layer)
///   layers     "lo:hi" (half-open) or "l": a swap's layers (required), a splice's layers
///              (default all), the layers a "blocks.*." hook glob expands over
///   positions  "all" (default) | [p, ...] | "lo:hi" | {"last": n}
///   heads      [h, ...]: query or KV heads of the hook; kv_splice: the KV heads copied
///   align      exact (default) | left | right: how a source of another length lines up
///   rows       patch, swap, kv_splice: align row by row on each row's own tokens (left-padded
///              batches; patch_rows / splice_kv_rows) instead of the padded tensors as a whole
///   scope      patch, swap, ablation, steering, scale: which tokens of a generation it touches:
///              prompt (default: every prompt token, the pending last one included) |
///              generated | both (Intervention::scope); "during_decoding": true is read as both
///   steps      instead of scope: generation steps "a:b" or "a:" (step 0 the prompt, g the g-th
///              generated token; Intervention::at_steps)
///   kv_splice only: rerotate (bool), slot_map [[target, source], ...] and slots (positions)
///              for plain splices, from_end [k, ...] / from_start [k, ...] for row splices
///   ablation:  mode zero | mean | resample; seed (resample)
///   steering:  vector [x, ...] (the hook's trailing dims), scale (default 1)
///   scale:     factor
///   source     where source activations or caches come from: {"role": "recursive" |
///              "baseline", "pair": "same" | "other"} (a prompt of a study's pair; "other": the
///              condition maps each pair to another's, Condition::source_of), {"ids": [...]}
///              or {"prompt": "text"}. Patches and swaps need one, mean and resample ablations
///              take their reference inputs from it, the others take none.
///
/// to_json writes the canonical form (defaults that always apply are written, empty lists and
/// false flags are left out), so parse_intervention_spec(to_json(s)) == s and two specs are equal
/// exactly when their JSON is.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/core/selection.hpp"
#include "mechlens/experiments/prompt_pairs.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/intervention.hpp"
#include "mechlens/interventions/ablation.hpp"
#include "mechlens/interventions/kv_splice.hpp"
#include "mechlens/interventions/kv_splice_rows.hpp"
#include "mechlens/interventions/patch.hpp"
#include "mechlens/interventions/patch_rows.hpp"
#include "mechlens/interventions/steering.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/models/model_config.hpp"

namespace mechlens::experiments {

/// Where a spec's source activations (or cache) come from.
struct SpecSource {
  std::string role;              ///< a study pair's prompt: "recursive" or "baseline" ("" = not a pair's)
  bool other_pair = false;       ///< with role: another pair's prompt (Condition::source_of), not the same pair's
  std::vector<int64_t> ids;      ///< explicit token ids
  std::string prompt;            ///< explicit text, for a tokenizer to encode

  bool given() const { return !role.empty() || !ids.empty() || !prompt.empty(); }
  bool operator==(const SpecSource& o) const {
    return role == o.role && other_pair == o.other_pair && ids == o.ids && prompt == o.prompt;
  }
};

struct InterventionSpec {
  enum class Kind { KvSplice, Patch, Swap, Ablation, Steering, Scale };
  enum class Ablation { Zero, Mean, Resample };

  Kind kind = Kind::Patch;
  std::string hook;                     ///< patch, ablation, steering, scale
  std::string site;                     ///< swap: v, q, k, qkv, resid, z
  std::optional<LayerRange> layers;
  Positions positions = Positions::all();
  IndexSet heads;
  Align align = Align::Exact;
  bool rows = false;
  Steps steps = Steps::prompt();  ///< hook kinds: the generation steps it acts in
  // kv_splice
  bool rerotate = false;
  std::vector<std::pair<int64_t, int64_t>> slot_map;
  Positions slots = Positions::all();
  std::vector<int64_t> from_end, from_start;
  // ablation
  Ablation mode = Ablation::Zero;
  uint64_t seed = 0;
  // steering, scale
  std::vector<double> vector;
  double scale = 1.0;
  double factor = 1.0;

  SpecSource source;
};

inline const char* spec_kind_name(InterventionSpec::Kind k) {
  switch (k) {
    case InterventionSpec::Kind::KvSplice: return "kv_splice";
    case InterventionSpec::Kind::Patch: return "patch";
    case InterventionSpec::Kind::Swap: return "swap";
    case InterventionSpec::Kind::Ablation: return "ablation";
    case InterventionSpec::Kind::Steering: return "steering";
    case InterventionSpec::Kind::Scale: return "scale";
  }
  return "?";
}

inline const char* ablation_mode_name(InterventionSpec::Ablation m) {
  return m == InterventionSpec::Ablation::Zero ? "zero" : m == InterventionSpec::Ablation::Mean ? "mean" : "resample";
}

// ---- JSON of the parts ----------------------------------------------------------------------

inline nlohmann::json positions_to_json(const Positions& p) {
  switch (p.kind()) {
    case Positions::Kind::All: return "all";
    case Positions::Kind::Range: return std::to_string(p.range_begin()) + ":" + std::to_string(p.range_end());
    case Positions::Kind::Last: return {{"last", p.last_count()}};
    case Positions::Kind::List: return p.values();
  }
  return nullptr;
}

}  // namespace mechlens::experiments

namespace mechlens::detail {

inline std::vector<int64_t> spec_ints(const nlohmann::json& j, const std::string& key, const std::string& where,
                                      int64_t minimum) {
  const auto& v = j.at(key);
  MECHLENS_CHECK(v.is_array(), ConfigError, "{}: field '{}' must be a list of integers, got {}", where, key,
                 v.type_name());
  std::vector<int64_t> out;
  for (const auto& x : v) {
    const auto i = io::json_as<int64_t>(x, key, where);
    MECHLENS_CHECK(i >= minimum, ConfigError, "{}: field '{}' holds {}, expected integers >= {}", where, key, i,
                   minimum);
    out.push_back(i);
  }
  return out;
}

inline LayerRange spec_layers(const nlohmann::json& j, const std::string& where) {
  const auto& v = j.at("layers");
  if (v.is_number_integer()) {
    const auto l = io::json_as<int64_t>(v, "layers", where);
    MECHLENS_CHECK(l >= 0, ConfigError, "{}: field 'layers' is {}, expected a layer >= 0 or \"lo:hi\"", where, l);
    return LayerRange::single(l);
  }
  MECHLENS_CHECK(v.is_string(), ConfigError, "{}: field 'layers' must be \"lo:hi\" or a layer, got {}", where,
                 v.type_name());
  const std::string text = v.get<std::string>();
  try {
    LayerRange r = LayerRange::parse(text);
    MECHLENS_CHECK(r.begin >= 0 && r.begin < r.end, ConfigError,
                   "{}: field 'layers' is '{}', expected lo:hi with 0 <= lo < hi", where, text);
    return r;
  } catch (const ArgumentError& e) {
    ::mechlens::detail::raise<ConfigError>("{}: field 'layers': {} (expected \"lo:hi\", half-open, both ends given)",
                                           where, e.what());
  }
}

/// "a:b" or "a:" (no end): generation steps, step 0 the prompt.
inline Steps spec_steps(const nlohmann::json& v, const std::string& where) {
  MECHLENS_CHECK(v.is_string(), ConfigError, "{}: field 'steps' must be \"a:b\" or \"a:\" (generation steps), got {}",
                 where, v.dump().substr(0, 100));
  const std::string text = v.get<std::string>();
  const auto colon = text.find(':');
  auto to_int = [&](const std::string& t) -> int64_t {
    try {
      size_t used = 0;
      const int64_t x = std::stoll(t, &used);
      if (used == t.size()) return x;
    } catch (const std::logic_error&) {
    }
    raise<ConfigError>("{}: field 'steps' is '{}', expected \"a:b\" or \"a:\" with integers 0 <= a < b", where,
                       text.substr(0, 100));
  };
  MECHLENS_CHECK(colon != std::string::npos, ConfigError,
                 "{}: field 'steps' is '{}', expected \"a:b\" or \"a:\" (step 0 the prompt, g the g-th generated token)",
                 where, text.substr(0, 100));
  const int64_t a = to_int(text.substr(0, colon));
  const int64_t b = colon + 1 == text.size() ? Steps::kOpen : to_int(text.substr(colon + 1));
  MECHLENS_CHECK(a >= 0 && a < b, ConfigError, "{}: field 'steps' is '{}', expected 0 <= a < b", where, text.substr(0, 100));
  return Steps::range(a, b);
}

inline Positions spec_positions(const nlohmann::json& v, const std::string& key, const std::string& where) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "all") return Positions::all();
    const auto colon = s.find(':');
    int64_t lo = -1, hi = -1;
    try {
      size_t a = 0, b = 0;
      if (colon != std::string::npos && colon > 0 && colon + 1 < s.size()) {
        lo = std::stoll(s.substr(0, colon), &a);
        hi = std::stoll(s.substr(colon + 1), &b);
        if (a != colon || b != s.size() - colon - 1) lo = hi = -1;
      }
    } catch (const std::logic_error&) {
      lo = hi = -1;
    }
    MECHLENS_CHECK(lo >= 0 && hi > lo, ConfigError,
                   "{}: field '{}' is '{}', expected \"all\", \"lo:hi\" (0 <= lo < hi), a list or {{\"last\": n}}",
                   where, key, s.substr(0, 100));
    return Positions::range(lo, hi);
  }
  if (v.is_array()) {
    MECHLENS_CHECK(!v.empty(), ConfigError, "{}: field '{}' is an empty list (expected positions, or \"all\")", where,
                   key);
    nlohmann::json holder = {{key, v}};
    return Positions::list(spec_ints(holder, key, where, 0));
  }
  if (v.is_object() && v.size() == 1 && v.contains("last")) {
    const auto n = io::json_as<int64_t>(v.at("last"), key + ".last", where);
    MECHLENS_CHECK(n >= 1, ConfigError, "{}: field '{}.last' is {}, expected n >= 1", where, key, n);
    return Positions::last(n);
  }
  ::mechlens::detail::raise<ConfigError>(
      "{}: field '{}' must be \"all\", \"lo:hi\", a list of positions or {{\"last\": n}}, got {}", where, key,
      v.type_name());
}

inline experiments::SpecSource spec_source(const nlohmann::json& v, const std::string& where) {
  const std::string w = where + ", field 'source'";
  MECHLENS_CHECK(v.is_object(), ConfigError,
                 "{}: must be an object: {{\"role\": \"recursive\"|\"baseline\", \"pair\": \"same\"|\"other\"}}, "
                 "{{\"ids\": [...]}} or {{\"prompt\": \"...\"}}, got {}",
                 w, v.type_name());
  for (auto it = v.begin(); it != v.end(); ++it)
    MECHLENS_CHECK(it.key() == "role" || it.key() == "pair" || it.key() == "ids" || it.key() == "prompt", ConfigError,
                   "{}: '{}' is not a source field (expected role and pair, ids, or prompt)", w,
                   it.key().substr(0, 100));
  experiments::SpecSource s;
  const int given = int(v.contains("role")) + int(v.contains("ids")) + int(v.contains("prompt"));
  MECHLENS_CHECK(given == 1, ConfigError, "{}: give exactly one of 'role', 'ids' and 'prompt' (got {})", w, given);
  if (v.contains("role")) {
    s.role = io::json_as<std::string>(v.at("role"), "role", w);
    MECHLENS_CHECK(s.role == "recursive" || s.role == "baseline", ConfigError,
                   "{}: field 'role' is '{}', expected \"recursive\" or \"baseline\"", w, s.role.substr(0, 100));
    const auto pair = io::json_optional<std::string>(v, "pair", "same", w);
    MECHLENS_CHECK(pair == "same" || pair == "other", ConfigError,
                   "{}: field 'pair' is '{}', expected \"same\" or \"other\"", w, pair.substr(0, 100));
    s.other_pair = pair == "other";
  } else {
    MECHLENS_CHECK(!v.contains("pair"), ConfigError, "{}: 'pair' goes with 'role' only", w);
    if (v.contains("ids")) {
      s.ids = spec_ints(v, "ids", w, 0);
      MECHLENS_CHECK(!s.ids.empty(), ConfigError, "{}: field 'ids' is empty (expected token ids)", w);
    } else {
      s.prompt = io::json_as<std::string>(v.at("prompt"), "prompt", w);
      MECHLENS_CHECK(!s.prompt.empty(), ConfigError, "{}: field 'prompt' is empty", w);
    }
  }
  return s;
}

inline nlohmann::json source_to_json(const experiments::SpecSource& s) {
  if (!s.role.empty()) return {{"role", s.role}, {"pair", s.other_pair ? "other" : "same"}};
  if (!s.ids.empty()) return {{"ids", s.ids}};
  return {{"prompt", s.prompt}};
}

inline const std::vector<std::string>& spec_sites() {
  static const std::vector<std::string> sites = {"v", "q", "k", "qkv", "resid", "z"};
  return sites;
}

}  // namespace mechlens::detail

namespace mechlens::experiments {

/// Parses a spec; `where` names it in errors (a file and entry, a record). Every problem is a
/// ConfigError naming the field and what was expected.
inline InterventionSpec parse_intervention_spec(const nlohmann::json& j, const std::string& where) {
  using Kind = InterventionSpec::Kind;
  MECHLENS_CHECK(j.is_object(), ConfigError, "{}: an intervention spec must be a JSON object with a 'kind', got {}",
                 where, j.type_name());
  InterventionSpec s;
  const auto kind = io::json_required<std::string>(j, "kind", where);
  if (kind == "kv_splice") s.kind = Kind::KvSplice;
  else if (kind == "patch") s.kind = Kind::Patch;
  else if (kind == "swap") s.kind = Kind::Swap;
  else if (kind == "ablation") s.kind = Kind::Ablation;
  else if (kind == "steering") s.kind = Kind::Steering;
  else if (kind == "scale") s.kind = Kind::Scale;
  else
    ::mechlens::detail::raise<ConfigError>(
        "{}: field 'kind' is '{}', expected kv_splice, patch, swap, ablation, steering or scale", where,
        kind.substr(0, 100));

  std::vector<std::string> allowed = {"kind"};
  switch (s.kind) {
    case Kind::KvSplice:
      allowed.insert(allowed.end(), {"layers", "heads", "align", "rows", "rerotate", "slot_map", "slots", "from_end",
                                     "from_start", "source"});
      break;
    case Kind::Patch:
      allowed.insert(allowed.end(), {"hook", "layers", "positions", "heads", "align", "rows", "scope", "steps", "during_decoding", "source"});
      break;
    case Kind::Swap:
      allowed.insert(allowed.end(), {"site", "layers", "positions", "heads", "align", "rows", "scope", "steps", "during_decoding", "source"});
      break;
    case Kind::Ablation:
      allowed.insert(allowed.end(), {"mode", "hook", "layers", "positions", "heads", "seed", "scope", "steps", "during_decoding", "source"});
      break;
    case Kind::Steering:
      allowed.insert(allowed.end(), {"hook", "layers", "positions", "heads", "vector", "scale", "scope", "steps", "during_decoding"});
      break;
    case Kind::Scale:
      allowed.insert(allowed.end(), {"hook", "layers", "positions", "heads", "factor", "scope", "steps", "during_decoding"});
      break;
  }
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      std::string list;
      for (size_t i = 1; i < allowed.size(); ++i) list += (i > 1 ? ", " : "") + allowed[i];
      ::mechlens::detail::raise<ConfigError>("{}: '{}' is not a field of a '{}' spec (expected {})", where,
                                             it.key().substr(0, 100), kind, list);
    }
  auto has = [&](const char* key) { return j.contains(key) && !j.at(key).is_null(); };

  if (s.kind != Kind::KvSplice && s.kind != Kind::Swap) {
    s.hook = io::json_required<std::string>(j, "hook", where);
    MECHLENS_CHECK(!s.hook.empty(), ConfigError, "{}: field 'hook' is empty (expected a hook name or glob)", where);
  }
  if (s.kind == Kind::Swap) {
    s.site = io::json_required<std::string>(j, "site", where);
    const auto& sites = ::mechlens::detail::spec_sites();
    MECHLENS_CHECK(std::find(sites.begin(), sites.end(), s.site) != sites.end(), ConfigError,
                   "{}: field 'site' is '{}', expected v, q, k, qkv, resid or z", where, s.site.substr(0, 100));
    MECHLENS_CHECK(has("layers"), ConfigError, "{}: required field 'layers' is missing (the layers a swap acts at)",
                   where);
  }
  if (has("layers")) {
    s.layers = ::mechlens::detail::spec_layers(j, where);
    MECHLENS_CHECK(s.kind == Kind::KvSplice || s.kind == Kind::Swap || s.hook.rfind("blocks.*.", 0) == 0, ConfigError,
                   "{}: field 'layers' needs a hook glob that starts with 'blocks.*.' (hook is '{}')", where,
                   s.hook.substr(0, 100));
  }
  if (has("positions")) s.positions = ::mechlens::detail::spec_positions(j.at("positions"), "positions", where);
  if (has("heads")) s.heads = IndexSet::only(::mechlens::detail::spec_ints(j, "heads", where, 0));
  if (has("align")) {
    const auto a = io::json_as<std::string>(j.at("align"), "align", where);
    MECHLENS_CHECK(a == "exact" || a == "left" || a == "right", ConfigError,
                   "{}: field 'align' is '{}', expected exact, left or right", where, a.substr(0, 100));
    s.align = parse_align(a);
  }
  s.rows = io::json_optional<bool>(j, "rows", false, where);
  {
    const int given = static_cast<int>(has("scope")) + static_cast<int>(has("steps")) + static_cast<int>(has("during_decoding"));
    MECHLENS_CHECK(given <= 1, ConfigError, "{}: give one of 'scope', 'steps' and 'during_decoding'", where);
    if (has("scope")) {
      const auto sc = io::json_as<std::string>(j.at("scope"), "scope", where);
      if (sc == "prompt") s.steps = Steps::prompt();
      else if (sc == "generated") s.steps = Steps::generated();
      else if (sc == "both") s.steps = Steps::all();
      else
        ::mechlens::detail::raise<ConfigError>("{}: field 'scope' is '{}', expected prompt, generated or both", where,
                                               sc.substr(0, 100));
    }
    if (has("steps")) s.steps = ::mechlens::detail::spec_steps(j.at("steps"), where);
    if (io::json_optional<bool>(j, "during_decoding", false, where)) s.steps = Steps::all();
  }

  if (s.kind == Kind::KvSplice) {
    s.rerotate = io::json_optional<bool>(j, "rerotate", false, where);
    if (has("slot_map")) {
      const auto& m = j.at("slot_map");
      MECHLENS_CHECK(m.is_array(), ConfigError, "{}: field 'slot_map' must be a list of [target, source] slots", where);
      for (const auto& e : m) {
        MECHLENS_CHECK(e.is_array() && e.size() == 2, ConfigError,
                       "{}: field 'slot_map' holds {}, expected [target slot, source slot]", where,
                       e.dump().substr(0, 100));
        nlohmann::json holder = {{"slot_map", e}};
        const auto ts = ::mechlens::detail::spec_ints(holder, "slot_map", where, 0);
        s.slot_map.emplace_back(ts[0], ts[1]);
      }
    }
    if (has("slots")) s.slots = ::mechlens::detail::spec_positions(j.at("slots"), "slots", where);
    if (has("from_end")) s.from_end = ::mechlens::detail::spec_ints(j, "from_end", where, 1);
    if (has("from_start")) s.from_start = ::mechlens::detail::spec_ints(j, "from_start", where, 0);
    if (s.rows) {
      MECHLENS_CHECK(s.heads.is_all() && s.slot_map.empty() && s.slots.is_all(), ConfigError,
                     "{}: 'heads', 'slot_map' and 'slots' apply to plain splices; a row splice (rows: true) takes "
                     "from_end / from_start",
                     where);
    } else {
      MECHLENS_CHECK(s.from_end.empty() && s.from_start.empty(), ConfigError,
                     "{}: 'from_end' and 'from_start' apply to row splices (rows: true); a plain splice takes 'slots'",
                     where);
    }
  }
  if (s.kind == Kind::Ablation) {
    const auto mode = io::json_required<std::string>(j, "mode", where);
    if (mode == "zero") s.mode = InterventionSpec::Ablation::Zero;
    else if (mode == "mean") s.mode = InterventionSpec::Ablation::Mean;
    else if (mode == "resample") s.mode = InterventionSpec::Ablation::Resample;
    else
      ::mechlens::detail::raise<ConfigError>("{}: field 'mode' is '{}', expected zero, mean or resample", where,
                                             mode.substr(0, 100));
    MECHLENS_CHECK(!has("seed") || s.mode == InterventionSpec::Ablation::Resample, ConfigError,
                   "{}: 'seed' goes with mode resample only", where);
    s.seed = io::json_optional<uint64_t>(j, "seed", 0, where);
  }
  if (s.kind == Kind::Steering) {
    MECHLENS_CHECK(has("vector") && j.at("vector").is_array() && !j.at("vector").empty(), ConfigError,
                   "{}: field 'vector' must be a non-empty list of numbers", where);
    for (const auto& x : j.at("vector")) {
      MECHLENS_CHECK(x.is_number(), ConfigError, "{}: field 'vector' holds {}, expected numbers", where,
                     x.dump().substr(0, 100));
      s.vector.push_back(x.get<double>());
    }
    s.scale = io::json_optional<double>(j, "scale", 1.0, where);
  }
  if (s.kind == Kind::Scale) s.factor = io::json_required<double>(j, "factor", where);

  if (has("source")) s.source = ::mechlens::detail::spec_source(j.at("source"), where);
  const bool needs_source = s.kind == Kind::Patch || s.kind == Kind::Swap ||
                            (s.kind == Kind::Ablation && s.mode != InterventionSpec::Ablation::Zero);
  MECHLENS_CHECK(!needs_source || s.source.given(), ConfigError,
                 "{}: required field 'source' is missing (a {} takes its activations from a source run)", where, kind);
  MECHLENS_CHECK(needs_source || s.kind == Kind::KvSplice || !s.source.given(), ConfigError,
                 "{}: a {} takes no 'source'", where, s.kind == Kind::Ablation ? "zero ablation" : kind.c_str());
  return s;
}

/// The canonical JSON of a spec (see the file comment).
inline nlohmann::json to_json(const InterventionSpec& s) {
  using Kind = InterventionSpec::Kind;
  nlohmann::json j = {{"kind", spec_kind_name(s.kind)}};
  if (s.kind == Kind::Swap) j["site"] = s.site;
  if (s.kind != Kind::KvSplice && s.kind != Kind::Swap) j["hook"] = s.hook;
  if (s.kind == Kind::Ablation) j["mode"] = ablation_mode_name(s.mode);
  if (s.layers) j["layers"] = s.layers->str();
  if (s.kind != Kind::KvSplice) j["positions"] = positions_to_json(s.positions);
  if (!s.heads.is_all()) j["heads"] = s.heads.indices;
  if (s.kind == Kind::KvSplice || s.kind == Kind::Patch || s.kind == Kind::Swap) j["align"] = align_name(s.align);
  if (s.rows) j["rows"] = true;
  if (s.kind != Kind::KvSplice) {
    if (s.steps == Steps::prompt()) j["scope"] = "prompt";
    else if (s.steps == Steps::generated()) j["scope"] = "generated";
    else if (s.steps == Steps::all()) j["scope"] = "both";
    else j["steps"] = std::to_string(s.steps.begin) + ":" + (s.steps.end == Steps::kOpen ? std::string() : std::to_string(s.steps.end));
  }
  if (s.kind == Kind::KvSplice) {
    j["rerotate"] = s.rerotate;
    if (!s.slot_map.empty()) {
      nlohmann::json m = nlohmann::json::array();
      for (auto [t, src] : s.slot_map) m.push_back({t, src});
      j["slot_map"] = m;
    }
    if (!s.slots.is_all()) j["slots"] = positions_to_json(s.slots);
    if (!s.from_end.empty()) j["from_end"] = s.from_end;
    if (!s.from_start.empty()) j["from_start"] = s.from_start;
  }
  if (s.kind == Kind::Ablation && s.mode == InterventionSpec::Ablation::Resample) j["seed"] = s.seed;
  if (s.kind == Kind::Steering) {
    j["vector"] = s.vector;
    j["scale"] = s.scale;
  }
  if (s.kind == Kind::Scale) j["factor"] = s.factor;
  if (s.source.given()) j["source"] = ::mechlens::detail::source_to_json(s.source);
  return j;
}

inline bool operator==(const InterventionSpec& a, const InterventionSpec& b) { return to_json(a) == to_json(b); }
inline bool operator!=(const InterventionSpec& a, const InterventionSpec& b) { return !(a == b); }

// ---- What the library runs ------------------------------------------------------------------

/// The hook names a spec acts on: a swap's site hooks at each of its layers, or the hook glob
/// expanded over `layers` (a glob without layers stays a glob).
inline std::vector<std::string> spec_hooks(const InterventionSpec& s) {
  using Kind = InterventionSpec::Kind;
  MECHLENS_CHECK(s.kind != Kind::KvSplice, ArgumentError, "spec_hooks: a kv_splice spec acts on the KV cache, not on hooks");
  if (s.kind != Kind::Swap) return ::mechlens::detail::expand_layers(s.hook, s.layers);
  MECHLENS_CHECK(s.layers.has_value(), ArgumentError, "spec_hooks: a swap needs layers");
  std::vector<std::string> out;
  for (int64_t l = s.layers->begin; l < s.layers->end; ++l) {
    if (s.site == "v" || s.site == "q" || s.site == "k" || s.site == "z") out.push_back(hook_name(l, s.site));
    else if (s.site == "qkv")
      for (const char* h : {"q", "k", "v"}) out.push_back(hook_name(l, h));
    else if (s.site == "resid") out.push_back(hook_name(l, "resid_post"));
    else ::mechlens::detail::raise<ArgumentError>("spec_hooks: unknown swap site '{}'", s.site);
  }
  return out;
}

}  // namespace mechlens::experiments

namespace mechlens::detail {
inline Selection spec_selection(const experiments::InterventionSpec& s) {
  Selection sel;
  sel.positions = s.positions;
  sel.heads = s.heads;
  return sel;
}
}  // namespace mechlens::detail

namespace mechlens::experiments {

/// The Intervention of a hook spec (patch, swap, ablation, steering, scale). `source` holds the
/// source run's activations at spec_hooks(s) (patch, swap) or the reference inputs' (mean and
/// resample ablations); the other kinds take none. Row-wise patches (rows: true) need the rows'
/// lengths: use to_row_intervention.
inline Intervention to_intervention(const InterventionSpec& s, const ActivationCache* source = nullptr) {
  using Kind = InterventionSpec::Kind;
  MECHLENS_CHECK(s.kind != Kind::KvSplice, ArgumentError,
                 "to_intervention: a kv_splice spec edits the KV cache (to_splice_options / to_row_splice_options)");
  MECHLENS_CHECK(!s.rows, ArgumentError,
                 "to_intervention: a row-wise {} (rows: true) needs each row's lengths: use to_row_intervention",
                 spec_kind_name(s.kind));
  const bool needs_source = s.kind == Kind::Patch || s.kind == Kind::Swap ||
                            (s.kind == Kind::Ablation && s.mode != InterventionSpec::Ablation::Zero);
  MECHLENS_CHECK(!needs_source || source != nullptr, ArgumentError,
                 "to_intervention: a {} needs the source run's activation cache", spec_kind_name(s.kind));
  const Selection sel = ::mechlens::detail::spec_selection(s);
  Intervention out;
  for (const auto& name : spec_hooks(s)) {
    switch (s.kind) {
      case Kind::Patch:
      case Kind::Swap: out |= patch(name, *source, sel, s.align); break;
      case Kind::Ablation:
        if (s.mode == InterventionSpec::Ablation::Zero) out |= zero_ablate(name, sel);
        else if (s.mode == InterventionSpec::Ablation::Mean) out |= mean_ablate(name, *source, sel);
        else out |= resample_ablate(name, *source, s.seed, sel);
        break;
      case Kind::Steering:
        out |= steer(name, at::tensor(s.vector, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat), s.scale, sel);
        break;
      case Kind::Scale: out |= scale(name, s.factor, sel); break;
      case Kind::KvSplice: break;
    }
  }
  return out.at_steps(s.steps);
}

/// A row-wise patch or swap (rows: true) of a left-padded batch: patch_rows at spec_hooks(s),
/// with `n_source[r]` / `n_target[r]` real tokens in row r. Positions and heads must be all.
inline Intervention to_row_intervention(const InterventionSpec& s, const ActivationCache& source,
                                        std::vector<int64_t> n_source, std::vector<int64_t> n_target) {
  using Kind = InterventionSpec::Kind;
  MECHLENS_CHECK(s.rows && (s.kind == Kind::Patch || s.kind == Kind::Swap), ArgumentError,
                 "to_row_intervention: expected a patch or swap with rows: true, got a {}{}", spec_kind_name(s.kind),
                 s.rows ? "" : " without rows");
  MECHLENS_CHECK(s.positions.is_all() && s.heads.is_all(), ArgumentError,
                 "to_row_intervention: a row-wise patch covers every position and head (positions {}, heads given: {})",
                 s.positions.str(), !s.heads.is_all());
  return patch_rows(spec_hooks(s), source, std::move(n_source), std::move(n_target), s.align).at_steps(s.steps);
}

/// The options of a plain KV splice (splice_kv) from a kv_splice spec without rows.
inline SpliceOptions to_splice_options(const InterventionSpec& s, const ModelConfig& cfg) {
  MECHLENS_CHECK(s.kind == InterventionSpec::Kind::KvSplice && !s.rows, ArgumentError,
                 "to_splice_options: expected a kv_splice spec without rows, got a {}{}", spec_kind_name(s.kind),
                 s.rows ? " with rows" : "");
  SpliceOptions o;
  o.layers = s.layers;
  if (s.layers) s.layers->check(cfg.n_layers(), "kv_splice layers");
  o.kv_heads = s.heads;
  o.align = s.align;
  o.slot_map = s.slot_map;
  o.slots = s.slots;
  o.rerotate = s.rerotate;
  o.rope = cfg.rope;
  return o;
}

/// The options of a row-wise KV splice (splice_kv_rows) from a kv_splice spec with rows.
inline RowSpliceOptions to_row_splice_options(const InterventionSpec& s, const ModelConfig& cfg) {
  MECHLENS_CHECK(s.kind == InterventionSpec::Kind::KvSplice && s.rows, ArgumentError,
                 "to_row_splice_options: expected a kv_splice spec with rows: true, got a {}{}",
                 spec_kind_name(s.kind), s.rows ? "" : " without rows");
  RowSpliceOptions o;
  o.layers = s.layers;
  if (s.layers) s.layers->check(cfg.n_layers(), "kv_splice layers");
  o.align = s.align;
  o.from_end = s.from_end;
  o.from_start = s.from_start;
  o.rerotate = s.rerotate;
  o.rope = cfg.rope;
  return o;
}

}  // namespace mechlens::experiments
