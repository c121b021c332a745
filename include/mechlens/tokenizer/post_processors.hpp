#pragma once
/// \file
/// tokenizer.json post-processors (the "post_processor" field): what `add_special_tokens = true`
/// wraps around the ids of one sequence. Supported: TemplateProcessing, ByteLevel (adds
/// nothing; it only adjusts offsets), BertProcessing, RobertaProcessing, Sequence.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"

namespace mechlens::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  /// Wraps the ids of a single sequence.
  virtual std::vector<int64_t> process(std::vector<int64_t> ids) const = 0;
};

/// A list of pieces: fixed special-token ids or the sequence itself ("$A").
class TemplatePostProcessor : public PostProcessor {
 public:
  struct Piece {
    bool is_sequence = false;
    std::vector<int64_t> ids;  // for special tokens
  };
  explicit TemplatePostProcessor(std::vector<Piece> single) : single_(std::move(single)) {}
  std::vector<int64_t> process(std::vector<int64_t> ids) const override {
    std::vector<int64_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& p : single_) {
      if (p.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), p.ids.begin(), p.ids.end());
      }
    }
    return out;
  }

 private:
  std::vector<Piece> single_;
};

class IdentityPostProcessor : public PostProcessor {
 public:
  std::vector<int64_t> process(std::vector<int64_t> ids) const override { return ids; }
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  std::vector<int64_t> process(std::vector<int64_t> ids) const override {
    for (const auto& p : parts_) ids = p->process(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

namespace detail {

/// TemplateProcessing's "single": either the list form or the string form ("<s>:0 $A:0").
inline std::vector<TemplatePostProcessor::Piece> parse_template(const nlohmann::json& single,
                                                                const nlohmann::json& special_tokens,
                                                                const std::string& where) {
  const auto special_ids = [&](const std::string& name) {
    MECHLENS_CHECK(special_tokens.is_object() && special_tokens.contains(name), FormatError,
                   "{}: template uses special token '{}', which is not in 'special_tokens'", where, name);
    const auto& entry = special_tokens.at(name);
    MECHLENS_CHECK(entry.is_object() && entry.contains("ids") && entry.at("ids").is_array(), FormatError,
                   "{}: special_tokens['{}'] has no 'ids' array", where, name);
    std::vector<int64_t> ids;
    const auto& list = entry.at("ids");
    for (size_t i = 0; i < list.size(); ++i) {
      const auto id = io::json_as<int64_t>(list[i], fmt::format("special_tokens['{}'].ids[{}]", name, i), where);
      MECHLENS_CHECK(id >= 0, FormatError, "{}: special_tokens['{}'].ids[{}] is {}, not a token id", where, name, i, id);
      ids.push_back(id);
    }
    return ids;
  };
  std::vector<TemplatePostProcessor::Piece> pieces;
  const auto add_item = [&](const std::string& item) {  // "$A", "$A:0", "<s>:0", "$B:1"
    const std::string name = item.substr(0, item.rfind(':') == std::string::npos ? item.size() : item.rfind(':'));
    if (!name.empty() && name[0] == '$') {
      MECHLENS_CHECK(name == "$A" || name == "$" || name == "$0", ConfigError,
                     "{}: single-sequence template refers to '{}', expected $A", where, name);
      pieces.push_back({true, {}});
    } else {
      pieces.push_back({false, special_ids(name)});
    }
  };
  if (single.is_string()) {
    std::string s = single.get<std::string>();
    std::size_t pos = 0;
    while (pos < s.size()) {
      const std::size_t end = s.find(' ', pos);
      const std::string item = s.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      if (!item.empty()) add_item(item);
      if (end == std::string::npos) break;
      pos = end + 1;
    }
    return pieces;
  }
  MECHLENS_CHECK(single.is_array(), FormatError, "{}: 'single' must be an array or a string, got {}", where,
                 single.type_name());
  for (const auto& item : single) {
    MECHLENS_CHECK(item.is_object(), FormatError, "{}: template piece {} is not an object", where, io::json_excerpt(item));
    if (item.contains("Sequence")) {
      const auto id = io::json_required<std::string>(item.at("Sequence"), "id", where);
      MECHLENS_CHECK(id == "A", ConfigError, "{}: single-sequence template refers to sequence '{}', expected A", where,
                     id);
      pieces.push_back({true, {}});
    } else if (item.contains("SpecialToken")) {
      pieces.push_back({false, special_ids(io::json_required<std::string>(item.at("SpecialToken"), "id", where))});
    } else {
      mechlens::detail::raise<FormatError>("{}: template piece {} is neither Sequence nor SpecialToken", where,
                                           io::json_excerpt(item));
    }
  }
  return pieces;
}

inline int64_t bert_token_id(const nlohmann::json& j, const std::string& key, const std::string& where) {
  MECHLENS_CHECK(j.contains(key) && j.at(key).is_array() && j.at(key).size() == 2 && j.at(key)[1].is_number_integer() &&
                     j.at(key)[1].get<int64_t>() >= 0,
                 FormatError, "{}: '{}' must be [token, id] with a non-negative integer id", where, key);
  return j.at(key)[1].get<int64_t>();
}

}  // namespace detail

/// Builds the post-processor described by tokenizer.json's "post_processor"; nullptr for null.
inline std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  MECHLENS_CHECK(j.is_object(), FormatError, "{}: post_processor must be an object or null, got {}", where,
                 j.type_name());
  const auto type = io::json_required<std::string>(j, "type", where + ": post_processor");
  const std::string here = fmt::format("{}: post_processor {}", where, type);
  if (type == "TemplateProcessing") {
    MECHLENS_CHECK(j.contains("single"), FormatError, "{}: required field 'single' is missing", here);
    return std::make_unique<TemplatePostProcessor>(
        detail::parse_template(j.at("single"), j.value("special_tokens", nlohmann::json::object()), here));
  }
  if (type == "ByteLevel") return std::make_unique<IdentityPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    std::vector<TemplatePostProcessor::Piece> single{{false, {detail::bert_token_id(j, "cls", here)}},
                                                     {true, {}},
                                                     {false, {detail::bert_token_id(j, "sep", here)}}};
    return std::make_unique<TemplatePostProcessor>(std::move(single));
  }
  if (type == "Sequence") {
    MECHLENS_CHECK(j.contains("processors") && j.at("processors").is_array(), FormatError,
                   "{}: 'processors' must be an array", here);
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const auto& item : j.at("processors")) parts.push_back(make_post_processor(item, where));
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  mechlens::detail::raise<ConfigError>(
      "{}: post_processor type '{}' is not supported by mechlens (supported: TemplateProcessing, ByteLevel, "
      "BertProcessing, RobertaProcessing, Sequence)",
      where, type);
}

}  // namespace mechlens::tokenizer
