#pragma once
/// \file
/// "Did you mean" suggestions for misspelt names (hooks, tensor keys): edit distance and the
/// nearest names, quoted for error messages.

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mechlens::detail {

/// Levenshtein distance.
inline size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// Up to `count` of `names` closest to `wanted` by edit distance (ties by name).
inline std::vector<std::string> nearest_names(const std::string& wanted, const std::vector<std::string>& names,
                                              size_t count = 3) {
  std::vector<std::pair<size_t, const std::string*>> scored;
  scored.reserve(names.size());
  for (const auto& n : names) scored.emplace_back(edit_distance(wanted, n), &n);
  std::sort(scored.begin(), scored.end(), [](const auto& x, const auto& y) {
    return x.first != y.first ? x.first < y.first : *x.second < *y.second;
  });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < count; ++i) out.push_back(*scored[i].second);
  return out;
}

/// "'a', 'b', 'c'".
inline std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", '" : "'") + names[i] + "'";
  return s;
}

}  // namespace mechlens::detail
