#pragma once
/// \file
/// tokenizer.json decoders (the "decoder" field): they turn token strings back into text.
/// Supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence. Each works on
/// the whole list of token strings (HF's decode_chain), and the results are concatenated.

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/tokenizer/detail/byte_level.hpp"
#include "mechlens/tokenizer/detail/utf8.hpp"
#include "mechlens/tokenizer/normalizers.hpp"

namespace mechlens::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  /// Rewrites the token strings in place (their number may change).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

/// Stand-in characters back to bytes, then bytes to text with U+FFFD for invalid UTF-8. A token
/// with a character outside the table (an added token such as "<|eot_id|>" is fine, it is ASCII)
/// contributes its own UTF-8 bytes.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& table = detail::byte_level_tables().char_to_byte;
    std::string bytes;
    for (const auto& t : tokens) {
      const std::size_t mark = bytes.size();
      bool mapped = true;
      for (std::size_t i = 0; i < t.size();) {
        const auto it = table.find(detail::utf8_decode(t, i));
        if (it == table.end()) {
          mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(it->second));
        i += detail::utf8_char_length(static_cast<unsigned char>(t[i]));
      }
      if (!mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, detail::utf8_lossy(bytes));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const nlohmann::json& pattern, std::string content, const std::string& where)
      : pattern_(pattern, where), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern_.replace(t, content_);
  }

 private:
  detail::Pattern pattern_;
  std::string content_;
};

/// Runs of "<0xXX>" tokens become the bytes they name: the text when the run is valid UTF-8,
/// otherwise one U+FFFD per byte (as HF does).
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    std::size_t run_count = 0;
    const auto flush = [&] {
      if (run_count == 0) return;
      if (detail::is_valid_utf8(run)) {
        out.push_back(run);
      } else {
        for (std::size_t i = 0; i < run_count; ++i) out.emplace_back(detail::kReplacementChar);
      }
      run.clear();
      run_count = 0;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = parse_hex(t[3], t[4]);
      if (byte >= 0) {
        run.push_back(static_cast<char>(byte));
        ++run_count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int parse_hex(char a, char b) {
    const int x = hex_digit(a), y = hex_digit(b);
    return x < 0 || y < 0 ? -1 : x * 16 + y;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

/// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, std::size_t start, std::size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const std::size_t w = content_.size();
    for (auto& t : tokens) {
      std::size_t b = 0, e = t.size();
      for (std::size_t i = 0; i < start_ && b + w <= e && t.compare(b, w, content_) == 0; ++i) b += w;
      for (std::size_t i = 0; i < stop_ && e >= b + w && t.compare(e - w, w, content_) == 0; ++i) e -= w;
      t = t.substr(b, e - b);
    }
  }

 private:
  std::string content_;
  std::size_t start_, stop_;
};

/// The replacement character back to spaces; in the first token it is dropped instead (HF drops
/// every one there, not only the leading one) unless the prepend scheme is "never".
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepended) : replacement_(std::move(replacement)), prepended_(prepended) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = detail::replace_all(tokens[i], replacement_, i == 0 && prepended_ ? "" : " ");
    }
  }

 private:
  std::string replacement_;
  bool prepended_;
};

/// Builds the decoder described by tokenizer.json's "decoder"; nullptr for null.
inline std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  MECHLENS_CHECK(j.is_object(), FormatError, "{}: decoder must be an object or null, got {}", where, j.type_name());
  const auto type = io::json_required<std::string>(j, "type", where + ": decoder");
  const std::string here = fmt::format("{}: decoder {}", where, type);
  if (type == "Sequence") {
    MECHLENS_CHECK(j.contains("decoders") && j.at("decoders").is_array(), FormatError,
                   "{}: 'decoders' must be an array", here);
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const auto& item : j.at("decoders")) parts.push_back(make_decoder(item, where));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    MECHLENS_CHECK(j.contains("pattern"), ConfigError, "{}: required field 'pattern' is missing", here);
    return std::make_unique<ReplaceDecoder>(j.at("pattern"), io::json_required<std::string>(j, "content", here), here);
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    // An empty content would match forever: `start` copies of nothing, up to 2^64 of them.
    MECHLENS_CHECK(!io::json_required<std::string>(j, "content", here).empty(), ConfigError,
                   "{}: Strip decoder with an empty 'content' (expected the character to strip)", here);
    return std::make_unique<StripDecoder>(io::json_required<std::string>(j, "content", here),
                                          io::json_required<std::size_t>(j, "start", here),
                                          io::json_required<std::size_t>(j, "stop", here));
  }
  if (type == "Metaspace") {
    bool prepended = true;
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
      prepended = io::json_required<std::string>(j, "prepend_scheme", here) != "never";
    } else {
      prepended = io::json_optional<bool>(j, "add_prefix_space", true, here);
    }
    return std::make_unique<MetaspaceDecoder>(io::json_optional<std::string>(j, "replacement", "\xE2\x96\x81", here),
                                              prepended);
  }
  mechlens::detail::raise<ConfigError>(
      "{}: decoder type '{}' is not supported by mechlens (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
      "Metaspace, Sequence)",
      where, type);
}

}  // namespace mechlens::tokenizer
