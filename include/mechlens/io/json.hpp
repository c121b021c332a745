#pragma once
/// \file
/// Reading JSON files with errors that name the file and the key.

#include <string>
#include <unordered_set>
#include <vector>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/read_file.hpp"

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

/// What to do with a key that appears twice in one object: JSON parsers (nlohmann, Python's
/// json) keep the last silently; where a repeated key means two conflicting entries (a
/// safetensors header naming a tensor twice, an index mapping a tensor to two shards) refuse it.
enum class DuplicateKeys { KeepLast, Refuse };

/// Parses JSON text; `where` names it (a file, "file:line") in errors. Every JSON the project reads
/// goes through here: nesting deeper than kMaxJsonDepth, invalid JSON and numbers beyond the range
/// of a double are FormatErrors naming `where`, never a crash or a foreign exception.
inline nlohmann::json parse_json(std::string_view text, const std::string& where,
                                 DuplicateKeys duplicates = DuplicateKeys::KeepLast) {
  check_json_depth(text, where);
  try {
    if (duplicates == DuplicateKeys::KeepLast) return nlohmann::json::parse(text.begin(), text.end());
    // The keys seen in each open object (depth is bounded above, so the stack is too).
    std::vector<std::unordered_set<std::string>> open_objects;
    std::string repeated;
    const nlohmann::json::parser_callback_t track = [&](int, nlohmann::json::parse_event_t event,
                                                        nlohmann::json& parsed) {
      using E = nlohmann::json::parse_event_t;
      if (event == E::object_start) {
        open_objects.emplace_back();
      } else if (event == E::object_end) {
        if (!open_objects.empty()) open_objects.pop_back();
      } else if (event == E::key && !open_objects.empty() && repeated.empty()) {
        if (!open_objects.back().insert(parsed.get<std::string>()).second) repeated = parsed.get<std::string>();
      }
      return true;
    };
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), track);
    MECHLENS_CHECK(repeated.empty(), FormatError, "{}: key '{}' appears twice in one object (which one is meant?)",
                   where, repeated.substr(0, 120));
    return j;
  } catch (const nlohmann::json::exception& e) {
    detail::raise<FormatError>("{} is not valid JSON: {}", where, e.what());
  }
}

/// Parses the JSON file at `path`. Throws IoError when it cannot be read and FormatError (naming
/// the file and the parser's position) when it is not valid JSON (parse_json).
inline nlohmann::json read_json_file(const std::string& path, DuplicateKeys duplicates = DuplicateKeys::KeepLast) {
  return parse_json(read_file(path, "JSON file"), "'" + path + "'", duplicates);
}

/// `value` as JSON text for an error message: at most `max_chars` characters (a long value is cut
/// and its length said), invalid UTF-8 in strings replaced rather than thrown on.
inline std::string json_excerpt(const nlohmann::json& value, std::size_t max_chars = 80) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() <= max_chars) return text;
  const std::size_t total = text.size();
  text.resize(max_chars);
  // Do not end inside a UTF-8 sequence.
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && (static_cast<unsigned char>(text.back()) & 0x80)) text.pop_back();
  return text + "... (" + std::to_string(total) + " characters)";
}

/// `value` (the field `key` of `where`) as T. Integer types take only JSON integers (64.9 is not
/// silently truncated to 64), unsigned ones only non-negative integers (-1 does not wrap to
/// 2^64 - 1); every other mismatch is a ConfigError naming the field, never a raw parser error.
template <class T>
T json_as(const nlohmann::json& value, const std::string& key, const std::string& where) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    MECHLENS_CHECK(value.is_number_integer(), ConfigError, "{}: field '{}' must be an integer, got {} {}", where, key,
                   value.type_name(), value.is_number() ? json_excerpt(value) : std::string());
    if constexpr (std::is_unsigned_v<T>)
      MECHLENS_CHECK(value.is_number_unsigned() || value.get<int64_t>() >= 0, ConfigError, "{}: field '{}' must be a non-negative integer, got {}",
                     where, key, json_excerpt(value));
  }
  try {
    return value.get<T>();
  } catch (const nlohmann::json::exception& e) {
    detail::raise<ConfigError>("{}: field '{}' has the wrong type ({}): {}", where, key, value.type_name(), e.what());
  }
}

/// Returns j[key] converted to T, or throws ConfigError naming `where` (a file) and the key when
/// it is missing or of the wrong type (json_as).
template <class T>
T json_required(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  MECHLENS_CHECK(it != j.end() && !it->is_null(), ConfigError, "{}: required field '{}' is missing", where, key);
  return json_as<T>(*it, key, where);
}

/// Returns j[key] converted to T, or `fallback` when the key is absent or null.
template <class T>
T json_optional(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return json_as<T>(*it, key, where);
}

}  // namespace mechlens::io
