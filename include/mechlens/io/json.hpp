#pragma once
/// \file
/// Reading JSON files with errors that name the file and the key.

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"

namespace mechlens::io {

/// Parses the JSON file at `path`. Throws IoError when it cannot be read and FormatError (naming
/// the file and the parser's position) when it is not valid JSON.
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MECHLENS_CHECK(in.good(), IoError, "cannot open JSON file '{}'", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (const nlohmann::json::parse_error& e) {
    detail::raise<FormatError>("'{}' is not valid JSON: {}", path, e.what());
  }
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
