#pragma once
/// \file
/// Reading JSON files with errors that name the file and the key.

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"

namespace mechlens::io {

/// How deeply arrays and objects may nest in any JSON mechlens reads (real files nest a few
/// levels; a hostile one nested 10^6 deep would overflow the stack of whatever walks it).
inline constexpr int kMaxJsonDepth = 256;

/// Throws FormatError naming `where` when `text` nests arrays / objects deeper than `max_depth`
/// (brackets inside strings do not count). One pass over the bytes, before parsing.
inline void check_json_depth(std::string_view text, const std::string& where, int max_depth = kMaxJsonDepth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      MECHLENS_CHECK(++depth <= max_depth, FormatError,
                     "{}: JSON nested deeper than {} levels (at byte {}); no file mechlens reads needs that", where,
                     max_depth, i);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

/// Parses JSON text; `where` names it (a file, "file:line") in errors. Every JSON the project reads
/// goes through here: nesting deeper than kMaxJsonDepth, invalid JSON and numbers beyond the range
/// of a double are FormatErrors naming `where`, never a crash or a foreign exception.
inline nlohmann::json parse_json(std::string_view text, const std::string& where) {
  check_json_depth(text, where);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    detail::raise<FormatError>("{} is not valid JSON: {}", where, e.what());
  }
}

/// Parses the JSON file at `path`. Throws IoError when it cannot be read and FormatError (naming
/// the file and the parser's position) when it is not valid JSON (parse_json).
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MECHLENS_CHECK(in.good(), IoError, "cannot open JSON file '{}'", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_json(buffer.str(), "'" + path + "'");
}

/// Returns j[key] converted to T, or throws ConfigError naming `where` (a file) and the key when
/// it is missing or of the wrong type.
template <class T>
T json_required(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  MECHLENS_CHECK(it != j.end() && !it->is_null(), ConfigError, "{}: required field '{}' is missing", where, key);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    detail::raise<ConfigError>("{}: field '{}' has the wrong type ({}): {}", where, key,
                               it->type_name(), e.what());
  }
}

/// Returns j[key] converted to T, or `fallback` when the key is absent or null.
template <class T>
T json_optional(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    detail::raise<ConfigError>("{}: field '{}' has the wrong type ({}): {}", where, key,
                               it->type_name(), e.what());
  }
}

}  // namespace mechlens::io
