#pragma once
/// \file
/// The resume check: every record a resumed run keeps must have been made the way the current
/// run would make it, or the run's summaries would mix (and misreport) two runs. Each record
/// carries what made it (records.hpp): the seed, the sampling and its own stream's seed, its
/// prompt's token ids, its source prompt's ids, and its condition's intervention spec and probe.
///
///   check_kept_records(log, settings, pairs, encoded)   // every record: settings and prompts
///   check_kept_records(log, condition, pairs)           // the records of one condition: its spec
///   check_kept_made_with(log, now)                      // device and dtype; versions warn
///
/// The first record that differs is an ArgumentError naming the log, the record id, the field,
/// and the recorded and current values. A record made by another mechlens or LibTorch version is
/// kept: check_kept_made_with returns a warning for it (the record says which version made it).
/// Study (study.hpp) runs all three; a RunFolder (run_folder.hpp) can run the first and the last
/// before it rewrites run.json.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/conditions.hpp"
#include "mechlens/experiments/prompt_encoding.hpp"
#include "mechlens/experiments/prompt_pairs.hpp"
#include "mechlens/experiments/records.hpp"
#include "mechlens/experiments/study_settings.hpp"
#include "mechlens/io/json.hpp"

namespace mechlens::detail {

/// A JSON value for a message, cut to `limit` characters.
inline std::string record_value_excerpt(const nlohmann::json& v, size_t limit = 160) {
  if (v.is_null()) return "(absent)";
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > limit) s = s.substr(0, limit) + fmt::format("... ({} characters)", s.size());
  return s;
}

[[noreturn]] inline void kept_record_differs(const experiments::RecordLog& log, const experiments::GenerationRecord& r,
                                             const std::string& field, const nlohmann::json& recorded,
                                             const nlohmann::json& now, const std::string& why) {
  ::mechlens::detail::raise<ArgumentError>(
      "resuming '{}': record '{}' was made otherwise than this run would make it: {}: recorded {}, now {}{}\nresume "
      "with the settings and pairs it was made with, or use another output folder",
      log.path(), r.id(), field, record_value_excerpt(recorded), record_value_excerpt(now), why.empty() ? "" : " (" + why + ")");
}

inline std::map<std::string, size_t> kept_pair_index(const std::vector<experiments::PromptPair>& pairs) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < pairs.size(); ++i) index[pairs[i].id] = i;
  return index;
}

}  // namespace mechlens::detail

namespace mechlens::experiments {

/// Checks every record of `log` against the run's settings and pairs (see the file comment).
inline void check_kept_records(const RecordLog& log, const StudySettings& settings, const std::vector<PromptPair>& pairs,
                               const std::vector<EncodedPair>& encoded) {
  MECHLENS_CHECK(pairs.size() == encoded.size(), ArgumentError, "check_kept_records: {} pairs but {} encoded pairs",
                 pairs.size(), encoded.size());
  const auto index = ::mechlens::detail::kept_pair_index(pairs);
  const nlohmann::json sampling = settings.sampling_json();
  for (const auto& r : log.records()) {
    auto it = index.find(r.pair_id);
    if (it == index.end())
      ::mechlens::detail::kept_record_differs(log, r, "pair_id", r.pair_id, nullptr,
                                  fmt::format("no pair of this run has that id; the run has {} pairs (the pairs file "
                                              "or --n changed?)",
                                              pairs.size()));
    const size_t i = it->second;
    if (r.seed != settings.sampling.seed)
      ::mechlens::detail::kept_record_differs(log, r, "seed", r.seed, settings.sampling.seed, "");
    for (auto s = sampling.begin(); s != sampling.end(); ++s) {
      const nlohmann::json recorded = r.sampling.is_object() && r.sampling.contains(s.key()) ? r.sampling[s.key()]
                                                                                           : nlohmann::json();
      if (recorded != s.value())
        ::mechlens::detail::kept_record_differs(log, r, "sampling." + s.key(), recorded, s.value(), "");
    }
    const uint64_t stream = pair_seed(settings.sampling.seed, static_cast<int64_t>(i));
    if (r.sampler_seed != stream)
      ::mechlens::detail::kept_record_differs(log, r, "sampler_seed", r.sampler_seed, stream,
                                              fmt::format("pair '{}' moved in the pair list, or the record was sampled "
                                                          "per batch (mechlens before 0.2)",
                                                          r.pair_id));
    const Role role = parse_role(r.prompt_role);
    if (r.prompt_ids != encoded[i].ids(role))
      ::mechlens::detail::kept_record_differs(log, r, "prompt_ids", r.prompt_ids, encoded[i].ids(role),
                                  fmt::format("the {} prompt of pair '{}' changed", r.prompt_role, r.pair_id));
    if (r.source.is_null()) continue;
    if (!r.source.is_object())
      ::mechlens::detail::kept_record_differs(log, r, "source", r.source, nullptr,
                                              "expected {\"pair_id\", \"role\", \"prompt_ids\"}");
    const std::string where = log.path() + ", record '" + r.id() + "', source";
    const auto source_pair = io::json_optional<std::string>(r.source, "pair_id", "", where);
    auto s = index.find(source_pair);
    if (s == index.end())
      ::mechlens::detail::kept_record_differs(log, r, "source.pair_id", source_pair, nullptr, "no pair of this run has that id");
    const auto source_role = io::json_optional<std::string>(r.source, "role", "", where);
    const nlohmann::json recorded_ids = r.source.value("prompt_ids", nlohmann::json());
    const nlohmann::json now_ids = encoded[s->second].ids(parse_role(source_role));
    if (recorded_ids != now_ids)
      ::mechlens::detail::kept_record_differs(log, r, "source.prompt_ids", recorded_ids, now_ids,
                                  fmt::format("the {} prompt of the source pair '{}' changed", source_role, source_pair));
  }
}

/// Checks what computed every record of `log` against `now` (study.hpp's made_with for the
/// current model): another device or dtype is an ArgumentError naming the record; other mechlens
/// or LibTorch versions give one warning each (returned, for the caller to show).
inline std::vector<std::string> check_kept_made_with(const RecordLog& log, const nlohmann::json& now) {
  std::map<std::string, size_t> versions;
  for (const auto& r : log.records()) {
    for (const char* key : {"device", "dtype"}) {
      nlohmann::json recorded = r.made_with.is_object() && r.made_with.contains(key) ? r.made_with[key]
                                                                                     : nlohmann::json();
      // Records before device kinds named the device with its index ("cuda:0"): the same kind.
      if (std::string(key) == "device" && recorded.is_string()) {
        std::string text = recorded.get<std::string>();
        const auto colon = text.find(':');
        if (colon != std::string::npos && text.find('+') == std::string::npos) recorded = text.substr(0, colon);
      }
      if (recorded != now.at(key))
        ::mechlens::detail::kept_record_differs(log, r, std::string("made_with.") + key, recorded, now.at(key), "");
    }
    for (const char* key : {"mechlens", "libtorch"})
      if (r.made_with.value(key, nlohmann::json()) != now.at(key))
        ++versions[std::string(key) + " " + ::mechlens::detail::record_value_excerpt(r.made_with.value(key, nlohmann::json()), 40)];
  }
  std::vector<std::string> warnings;
  for (const auto& [what, n] : versions)
    warnings.push_back(fmt::format("'{}': {} of the {} kept records were made with {} (this is mechlens {}, LibTorch "
                                   "{}); they are kept, and each record says what made it",
                                   log.path(), n, log.records().size(), what, now.at("mechlens").get<std::string>(),
                                   now.at("libtorch").get<std::string>()));
  return warnings;
}

/// Checks the records of condition `c` in `log`: the decoded prompt, the intervention spec, the
/// probe and the source pair each row takes (Condition::source_of).
inline void check_kept_records(const RecordLog& log, const Condition& c, const std::vector<PromptPair>& pairs) {
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto r = log.find(GenerationRecord::record_id(c.name, pairs[i].id));
    if (!r) continue;
    if (r->prompt_role != role_name(c.target))
      ::mechlens::detail::kept_record_differs(log, *r, "prompt_role", r->prompt_role, role_name(c.target), "");
    if (r->spec != c.spec)
      ::mechlens::detail::kept_record_differs(log, *r, "spec", r->spec, c.spec,
                                  fmt::format("condition '{}' is defined otherwise now", c.name));
    if (r->probe != c.probe)
      ::mechlens::detail::kept_record_differs(log, *r, "probe", r->probe, c.probe,
                                  fmt::format("condition '{}' reads other values now", c.name));
    if (r->source.is_null()) continue;
    MECHLENS_CHECK(c.source_of.empty() || c.source_of.size() == pairs.size(), ArgumentError,
                   "condition '{}': source_of has {} entries for {} pairs", c.name, c.source_of.size(), pairs.size());
    const std::string want = pairs[c.source_of.empty() ? i : c.source_of[i]].id;
    const auto got = r->source.is_object() ? io::json_optional<std::string>(r->source, "pair_id", "", log.path()) : "";
    if (got != want)
      ::mechlens::detail::kept_record_differs(log, *r, "source.pair_id", got, want, "the source pairs changed");
  }
}

}  // namespace mechlens::experiments
