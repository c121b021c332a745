#pragma once
/// \file
/// Align: how the positions (or KV slots) of a source prompt line up with a target prompt's when
/// an activation patch or a KV splice copies from one into the other.
///
///   - `Exact` (the default of every patch and splice): the two must have the same length;
///     position i receives position i. Prompts of different lengths are an error that names both
///     lengths, never a silent choice.
///   - `Left`: the first m = min(n_target, n_source) positions pair up (i receives i).
///   - `Right`: the last m positions pair up (target n_target - m + i receives source
///     n_source - m + i), so both prompts' final tokens meet. The DEC7 programs pass Right
///     (their `--align right` default): the study's prompt pairs differ in length and the
///     transferred state is what precedes the last token.
///
/// Left-padded batches are aligned row by row on their real tokens (kv_splice_rows.hpp,
/// patch_rows.hpp); the rule above then holds within each row.

#include <string>

#include "mechlens/core/error.hpp"

namespace mechlens {

enum class Align { Exact, Left, Right };

inline std::string align_name(Align a) { return a == Align::Left ? "left" : a == Align::Right ? "right" : "exact"; }

/// "exact", "left" or "right" ("" is exact).
inline Align parse_align(const std::string& s) {
  if (s == "left") return Align::Left;
  if (s == "right") return Align::Right;
  if (s == "exact" || s.empty()) return Align::Exact;
  detail::raise<ArgumentError>("unknown alignment '{}' (expected exact, left or right)", s);
}

}  // namespace mechlens
