#pragma once
/// \file
/// mechlens::Tokenizer: a Hugging Face tokenizer.json (BPE, byte-level or SentencePiece-style with
/// byte fallback) plus tokenizer_config.json / special_tokens_map.json, giving the same ids, token
/// strings and decoded text as HF `tokenizers`, and the chat formats of chat_template.hpp.
///
///     auto tok = mechlens::Tokenizer::from_file("/models/Meta-Llama-3-8B-Instruct");
///     std::vector<int64_t> ids = tok.encode("Hello world");          // with special tokens
///     std::string text = tok.decode(ids, /*skip_special_tokens=*/true);
///     std::string prompt = tok.apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}},
///                                                  /*add_generation_prompt=*/true);
///     auto prompt_ids = tok.encode(prompt, /*add_special_tokens=*/false);  // = HF's ids
///
/// Pure C++: no LibTorch. Encoding and decoding are const and safe to call from several threads.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/io/read_file.hpp"
#include "mechlens/tokenizer/added_vocabulary.hpp"
#include "mechlens/tokenizer/bpe.hpp"
#include "mechlens/tokenizer/chat_template.hpp"
#include "mechlens/tokenizer/decoders.hpp"
#include "mechlens/tokenizer/detail/huge_pages.hpp"
#include "mechlens/tokenizer/detail/json_scan.hpp"
#include "mechlens/tokenizer/detail/utf8.hpp"
#include "mechlens/tokenizer/normalizers.hpp"
#include "mechlens/tokenizer/post_processors.hpp"
#include "mechlens/tokenizer/pre_tokenizers.hpp"

namespace mechlens {

/// How to read a checkpoint's tokenizer files.
struct TokenizerOptions {
  /// By default mechlens follows tokenizer.json, as HF `tokenizers` and transformers 4 do.
  /// transformers 5 instead rebuilds tokenizers whose tokenizer_config.json names
  /// "LlamaTokenizer" / "LlamaTokenizerFast" (Llama-2, Mistral, and their fine-tunes): no
  /// normalizer, a Metaspace pre-tokenizer (prepend "always" when the config says legacy: true,
  /// else "first"; "never" when add_prefix_space is false) and a matching decoder. That changes
  /// the ids of text that starts with a space or follows an added token such as "<s>" (20 of the
  /// 274 corpus strings on the Llama-2-style vocabulary). Set this to get transformers 5's ids.
  bool match_transformers_v5 = false;
};

class Tokenizer {
 public:
  /// Loads a tokenizer from a checkpoint directory (tokenizer.json, and tokenizer_config.json,
  /// special_tokens_map.json, chat_template.jinja when present) or from a tokenizer.json path
  /// (the other files are then looked for beside it). Throws IoError when the files cannot be
  /// read, FormatError for malformed JSON or components, ConfigError for unsupported components.
  static Tokenizer from_file(const std::string& path, const TokenizerOptions& options = {}) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path dir, file;
    if (fs::is_directory(path, ec)) {
      dir = path;
      file = dir / "tokenizer.json";
      MECHLENS_CHECK(fs::exists(file, ec), IoError, "tokenizer: directory '{}' has no tokenizer.json", path);
    } else {
      MECHLENS_CHECK(fs::exists(path, ec), IoError, "tokenizer: '{}' does not exist", path);
      file = path;
      dir = file.parent_path();
    }
    nlohmann::json config = nlohmann::json::object();
    const fs::path config_path = dir / "tokenizer_config.json";
    if (fs::exists(config_path, ec)) config = io::read_json_file(config_path.string());
    const fs::path map_path = dir / "special_tokens_map.json";
    if (fs::exists(map_path, ec)) {
      // transformers lets special_tokens_map.json override tokenizer_config.json.
      const auto map = io::read_json_file(map_path.string());
      MECHLENS_CHECK(map.is_object(), FormatError, "'{}' must hold a JSON object", map_path.string());
      for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
        if (map.contains(key) && !map.at(key).is_null()) config[key] = map.at(key);
      }
    }
    const fs::path jinja_path = dir / "chat_template.jinja";
    if (fs::exists(jinja_path, ec)) {
      config["chat_template"] = io::read_file(jinja_path.string(), "chat template");
    }
    // tokenizer.json is megabytes (9 for Llama-3): read into huge pages (detail/huge_pages.hpp).
    const auto text = io::read_file_as<std::vector<char, tokenizer::detail::HugePageAllocator<char>>>(
        file.string(), "JSON file");
    Tokenizer t = from_json_text(std::string_view(text.data(), text.size()), config, file.string(), options);
    t.config_path_ = fs::exists(config_path, ec) ? config_path.string() : std::string();
    return t;
  }

  /// Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json contents (the latter
  /// may be an empty object). `where` names the source in error messages.
  static Tokenizer from_json(const nlohmann::json& tokenizer_json, const nlohmann::json& config,
                             const std::string& where = "tokenizer.json", const TokenizerOptions& options = {}) {
    return build(tokenizer_json, config, where, options, [&] {
      return tokenizer::BpeModel::from_json(tokenizer_json.at("model"), where);
    });
  }

  /// The same as from_json(io::parse_json(text, "'" + where + "'"), config, where, options), the
  /// same tokenizer and the same errors, in a fraction of the time: the model's "vocab" and
  /// "merges" (almost all of a tokenizer.json) are read straight from the text
  /// (tokenizer/detail/json_scan.hpp) and only the rest goes through nlohmann's parser. A file
  /// that is not the plain well-formed kind that reader accepts, or whose tables do not make a
  /// valid model, is loaded through from_json instead, which says what is wrong with it.
  static Tokenizer from_json_text(std::string_view text, const nlohmann::json& config,
                                  const std::string& where = "tokenizer.json", const TokenizerOptions& options = {}) {
    if (auto fast = try_from_json_text(text, config, where, options)) return std::move(*fast);
    return from_json(io::parse_json(text, "'" + where + "'"), config, where, options);
  }

  /// from_json_text's fast path alone: nullopt where from_json_text hands the file to from_json
  /// (a file that is not of the plain kind the fast path reads, or has something wrong with it),
  /// else the same tokenizer. Tests use it to check which files take which path.
  static std::optional<Tokenizer> try_from_json_text(std::string_view text, const nlohmann::json& config,
                                                     const std::string& where = "tokenizer.json",
                                                     const TokenizerOptions& options = {}) {
    namespace scan = tokenizer::detail::json_scan;
    try {
      tokenizer::BpeTables tables;
      bool have_vocab = false;
      std::optional<std::size_t> merges_first;  // where "merges" starts when it comes before "vocab"
      scan::Span vocab_span, merges_span;
      const bool walked = scan::walk_tokenizer_json(
          text, io::kMaxJsonDepth,
          [&](scan::Reader& r) { return have_vocab = tables.read_vocab(r); },
          [&](scan::Reader& r) {
            if (have_vocab) return tables.read_merges(r);
            merges_first = r.pos();  // read it once the vocabulary is known
            return scan::read_merges(r, [](std::string_view, std::string_view, bool) { return true; });
          },
          vocab_span, merges_span);
      if (!walked) return std::nullopt;
      if (merges_first) {
        scan::Reader r(text, *merges_first);
        if (!tables.read_merges(r)) return std::nullopt;
      }
      // The rest of the file, with "vocab": {} and "merges": [] in place of the two tables.
      const bool vocab_first = vocab_span.begin < merges_span.begin;
      const scan::Span& first = vocab_first ? vocab_span : merges_span;
      const scan::Span& second = vocab_first ? merges_span : vocab_span;
      std::string rest;
      rest.reserve(text.size() - (first.end - first.begin) - (second.end - second.begin) + 4);
      rest.append(text.substr(0, first.begin)).append(vocab_first ? "{}" : "[]");
      rest.append(text.substr(first.end, second.begin - first.end)).append(vocab_first ? "[]" : "{}");
      rest.append(text.substr(second.end));
      const nlohmann::json j = io::parse_json(rest, "'" + where + "'");
      // The walk found the two tables where nlohmann sees them (a check, not a reading).
      if (!j.is_object() || !j.contains("model")) return std::nullopt;
      const auto& model = j.at("model");
      if (!model.is_object() || !model.contains("vocab") || !model.at("vocab").is_object() ||
          !model.at("vocab").empty() || !model.contains("merges") || !model.at("merges").is_array() ||
          !model.at("merges").empty()) {
        return std::nullopt;
      }
      return build(j, config, where, options, [&] {
        auto m = tokenizer::BpeModel::from_tables(model, std::move(tables), where);
        if (!m) throw InvalidTables{};
        return std::move(*m);
      });
    } catch (const InvalidTables&) {  // a model from_json would refuse
      return std::nullopt;
    } catch (const Error&) {
      return std::nullopt;  // from_json gives this error, in its own words
    } catch (const nlohmann::json::exception&) {
      return std::nullopt;
    }
  }

  /// Token ids of `text` (UTF-8; invalid UTF-8 is an ArgumentError naming the byte offset). Text
  /// that spells an added token ("<|eot_id|>", "<s>") becomes that token's id, as in HF.
  /// `add_special_tokens` applies the post-processor (for Llama-2/Mistral files: a leading BOS).
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = true) const {
    return encode_impl(text, add_special_tokens, nullptr);
  }

  /// Ids with the byte range of `text` each one comes from (HF's offsets, in bytes). A token
  /// that covers part of a multi-byte character gets the whole character's range; tokens added
  /// by the post-processor (BOS) get {0, 0}.
  struct Encoding {
    std::vector<int64_t> ids;
    std::vector<std::pair<std::size_t, std::size_t>> offsets;
  };
  Encoding encode_with_offsets(std::string_view text, bool add_special_tokens = true) const {
    Encoding e;
    e.ids = encode_impl(text, add_special_tokens, &e.offsets);
    return e;
  }

  /// Text of `ids` as HF's decode gives it (the decoder of tokenizer.json; invalid UTF-8 from
  /// partial byte sequences becomes U+FFFD). With skip_special_tokens, added tokens marked
  /// special are left out. An id outside the vocabulary is an ArgumentError (HF drops it).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const {
    std::vector<std::string> pieces;
    pieces.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (const auto* a = added_.find_id(ids[i])) {
        if (!(skip_special_tokens && a->special)) pieces.push_back(a->content);
        continue;
      }
      const auto t = model_->id_to_token(ids[i]);
      MECHLENS_CHECK(t.has_value(), ArgumentError, "tokenizer: id {} (position {}) is not in the vocabulary of {} (size {})",
                     ids[i], i, source_, vocab_size_);
      pieces.emplace_back(*t);
    }
    if (!decoder_) {
      std::string out;
      for (std::size_t i = 0; i < pieces.size(); ++i) out += (i ? " " : "") + pieces[i];
      return out;
    }
    decoder_->decode_chain(pieces);
    std::string out;
    for (const auto& p : pieces) out += p;
    return out;
  }

  /// Token strings of `ids` (HF's convert_ids_to_tokens), e.g. "Ġworld" or "▁world".
  std::vector<std::string> tokens(const std::vector<int64_t>& ids) const {
    std::vector<std::string> out;
    out.reserve(ids.size());
    for (int64_t id : ids) out.push_back(id_to_token(id));
    return out;
  }

  /// The token string of one id; ArgumentError when the id is not in the vocabulary.
  std::string id_to_token(int64_t id) const {
    if (const auto* a = added_.find_id(id)) return a->content;
    const auto t = model_->id_to_token(id);
    MECHLENS_CHECK(t.has_value(), ArgumentError, "tokenizer: id {} is not in the vocabulary of {} (size {})", id,
                   source_, vocab_size_);
    return std::string(*t);
  }

  /// The id of a token string (added tokens first, then the model vocabulary), if any.
  std::optional<int64_t> token_to_id(std::string_view token) const {
    if (const auto* a = added_.find_content(token)) return a->id;
    return model_->token_to_id(token);
  }

  /// The id of a token string; NotFoundError naming it when there is none.
  int64_t require_token_id(std::string_view token) const {
    auto id = token_to_id(token);
    MECHLENS_CHECK(id.has_value(), NotFoundError, "tokenizer: token '{}' is not in the vocabulary of {}",
                   tokenizer::detail::excerpt(token), source_);
    return *id;
  }

  /// Vocabulary size including added tokens (HF's len(tokenizer)); every id is below it for the
  /// usual contiguous vocabularies.
  int64_t vocab_size() const { return vocab_size_; }

  /// bos_token / eos_token of tokenizer_config.json (or special_tokens_map.json), if set.
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  const std::optional<std::string>& eos_token() const { return eos_token_; }
  std::optional<int64_t> bos_id() const { return bos_token_ ? token_to_id(*bos_token_) : std::nullopt; }
  std::optional<int64_t> eos_id() const { return eos_token_ ? token_to_id(*eos_token_) : std::nullopt; }

  /// The added tokens of tokenizer.json (special and not).
  const std::vector<tokenizer::AddedToken>& added_tokens() const { return added_.tokens(); }

  /// The Jinja chat template of tokenizer_config.json / chat_template.jinja, if any.
  const std::optional<std::string>& chat_template() const { return chat_template_text_; }
  /// Replaces the chat template text (it must be one mechlens knows when it is used).
  void set_chat_template(std::string jinja) {
    chat_template_text_ = std::move(jinja);
    forced_template_.reset();
  }
  /// Uses a known template by name ("llama3-instruct", "mistral-v0.2", ...; see
  /// tokenizer::ChatTemplate::known()) whatever the files say.
  void use_chat_template(std::string_view name) { forced_template_ = tokenizer::ChatTemplate::named(name); }

  /// The chat template that apply_chat_template uses. ConfigError when there is none or it is
  /// not one mechlens knows.
  tokenizer::ChatTemplate chat_format() const {
    if (forced_template_) return *forced_template_;
    MECHLENS_CHECK(chat_template_text_.has_value(), ConfigError,
                   "tokenizer {}: no chat template (tokenizer_config.json has no 'chat_template' and there is no "
                   "chat_template.jinja); call set_chat_template or use_chat_template",
                   source_);
    return tokenizer::ChatTemplate::recognize(*chat_template_text_,
                                              config_path_.empty() ? source_ : config_path_);
  }

  /// The prompt text transformers' apply_chat_template(messages, tokenize=False,
  /// add_generation_prompt=...) renders. Encode it with add_special_tokens = false.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    const auto t = chat_format();
    MECHLENS_CHECK(bos_token_.has_value(), ConfigError, "tokenizer {}: chat template '{}' needs bos_token, which "
                   "tokenizer_config.json does not set", source_, t.name());
    MECHLENS_CHECK(t.format() == tokenizer::ChatFormat::kLlama3 || eos_token_.has_value(), ConfigError,
                   "tokenizer {}: chat template '{}' needs eos_token, which tokenizer_config.json does not set",
                   source_, t.name());
    return t.render(messages, add_generation_prompt, *bos_token_, eos_token_.value_or(""));
  }

  /// Ids of the rendered chat prompt: encode(apply_chat_template(...), false), which is what
  /// transformers' apply_chat_template(..., tokenize=True) returns.
  std::vector<int64_t> encode_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    return encode(apply_chat_template(messages, add_generation_prompt), /*add_special_tokens=*/false);
  }

  /// Where the tokenizer came from (for messages).
  const std::string& source() const { return source_; }

 private:
  Tokenizer() = default;

  struct InvalidTables {};  // thrown by try_from_json_text's make_model

  // from_json's work, with the model made by make_model() (from the parsed "model" object, or
  // from the tables read from the text).
  template <class MakeModel>
  static Tokenizer build(const nlohmann::json& tokenizer_json, const nlohmann::json& config, const std::string& where,
                         const TokenizerOptions& options, MakeModel&& make_model) {
    MECHLENS_CHECK(tokenizer_json.is_object(), FormatError, "{}: expected a JSON object, got {}", where,
                   tokenizer_json.type_name());
    MECHLENS_CHECK(config.is_object(), FormatError, "tokenizer_config.json for {}: expected a JSON object, got {}",
                   where, config.type_name());
    MECHLENS_CHECK(tokenizer_json.contains("model"), FormatError, "{}: required field 'model' is missing", where);
    Tokenizer t;
    t.source_ = where;
    const auto field = [&](const char* key) {
      return tokenizer_json.contains(key) ? tokenizer_json.at(key) : nlohmann::json();
    };
    t.normalizer_ = tokenizer::make_normalizer(field("normalizer"), where);
    t.pre_tokenizer_ = tokenizer::make_pre_tokenizer(field("pre_tokenizer"), where);
    t.model_ = std::make_shared<tokenizer::BpeModel>(make_model());
    t.post_processor_ = tokenizer::make_post_processor(field("post_processor"), where);
    t.decoder_ = tokenizer::make_decoder(field("decoder"), where);
    if (options.match_transformers_v5) t.rebuild_like_transformers_v5(config, where);
    t.added_ = tokenizer::AddedVocabulary(field("added_tokens"), t.normalizer_.get(), where);

    // Size with added tokens = the distinct ids of both vocabularies (HF's len(tokenizer)).
    int64_t extra = 0;
    for (const auto& a : t.added_.tokens()) {
      if (!t.model_->id_to_token(a.id)) ++extra;
    }
    t.vocab_size_ = static_cast<int64_t>(t.model_->vocab_size()) + extra;

    const std::string cfg = "tokenizer_config.json for " + where;
    t.bos_token_ = special_token_text(config, "bos_token", cfg);
    t.eos_token_ = special_token_text(config, "eos_token", cfg);
    if (config.contains("chat_template") && !config.at("chat_template").is_null()) {
      t.chat_template_text_ = chat_template_text(config.at("chat_template"), cfg);
    }
    return t;
  }


  // transformers 5's LlamaTokenizer.__init__ (models/llama/tokenization_llama.py) keeps the
  // file's vocabulary, merges and post-processor but replaces the rest.
  void rebuild_like_transformers_v5(const nlohmann::json& config, const std::string& where) {
    const auto cls = config.value("tokenizer_class", std::string());
    if (cls != "LlamaTokenizer" && cls != "LlamaTokenizerFast") return;
    const std::string cfg = "tokenizer_config.json for " + where;
    const bool add_prefix_space = io::json_optional<bool>(config, "add_prefix_space", true, cfg);
    const bool legacy = io::json_optional<bool>(config, "legacy", false, cfg);
    using Prepend = tokenizer::MetaspacePreTokenizer::Prepend;
    const Prepend prepend = !add_prefix_space ? Prepend::kNever : legacy ? Prepend::kAlways : Prepend::kFirst;
    const std::string space = "\xE2\x96\x81";  // U+2581
    normalizer_ = nullptr;
    pre_tokenizer_ = std::make_shared<tokenizer::MetaspacePreTokenizer>(space, prepend, /*split=*/false);
    nlohmann::json decoders = nlohmann::json::array(
        {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
         {{"type", "ByteFallback"}},
         {{"type", "Fuse"}}});
    if (add_prefix_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder_ = tokenizer::make_decoder({{"type", "Sequence"}, {"decoders", decoders}}, where);
  }

  using Offsets = tokenizer::detail::Offsets;

  std::vector<int64_t> encode_impl(std::string_view text, bool add_special_tokens, std::vector<Offsets>* offsets) const {
    if (auto bad = tokenizer::detail::first_invalid_utf8(text)) {
      mechlens::detail::raise<ArgumentError>("tokenizer: text is not valid UTF-8 at byte {} of {} (bytes there: {})",
                                             *bad, text.size(), tokenizer::detail::excerpt(text.substr(*bad), 8));
    }
    std::vector<int64_t> ids;
    ids.reserve(text.size() / 3 + 4);
    for (const auto& seg : added_.split(text, /*normalized=*/false)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        if (offsets) offsets->emplace_back(seg.offset, seg.offset + seg.text.size());
        continue;
      }
      std::string piece(seg.text);
      std::vector<Offsets> align;
      if (offsets) align = char_ranges(seg.text, seg.offset);
      if (normalizer_) normalizer_->normalize(piece, offsets ? &align : nullptr);
      const bool at_start = seg.offset == 0;
      if (added_.has_normalized_tokens()) {
        for (const auto& sub : added_.split(piece, /*normalized=*/true)) {
          std::vector<Offsets> sub_align;
          if (offsets) sub_align.assign(align.begin() + sub.offset, align.begin() + sub.offset + sub.text.size());
          if (sub.id >= 0) {
            ids.push_back(sub.id);
            if (offsets) offsets->push_back(tokenizer::detail::span_of(sub_align, 0, sub_align.size()));
          } else {
            tokenize_piece(std::string(sub.text), at_start && sub.offset == 0, std::move(sub_align), ids, offsets);
          }
        }
      } else {
        tokenize_piece(std::move(piece), at_start, std::move(align), ids, offsets);
      }
    }
    if (add_special_tokens && post_processor_) {
      const std::size_t before = ids.size();
      std::vector<int64_t> processed = post_processor_->process(ids);
      if (offsets) {
        // Locate the sequence inside the processed ids to give special tokens {0, 0}.
        std::vector<Offsets> out(processed.size(), Offsets{0, 0});
        for (std::size_t start = 0; start + before <= processed.size(); ++start) {
          if (std::equal(ids.begin(), ids.end(), processed.begin() + start)) {
            std::copy(offsets->begin(), offsets->end(), out.begin() + start);
            break;
          }
        }
        *offsets = std::move(out);
      }
      ids = std::move(processed);
    }
    return ids;
  }

  /// For each byte of s, the byte range (shifted by base) of the character it belongs to.
  static std::vector<Offsets> char_ranges(std::string_view s, std::size_t base) {
    std::vector<Offsets> r;
    r.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
      const std::size_t n = tokenizer::detail::utf8_char_length(static_cast<unsigned char>(s[i]));
      r.insert(r.end(), n, Offsets{base + i, base + i + n});
      i += n;
    }
    return r;
  }

  void tokenize_piece(std::string piece, bool at_start, std::vector<Offsets> align, std::vector<int64_t>& ids,
                      std::vector<Offsets>* offsets) const {
    if (piece.empty()) return;
    std::vector<tokenizer::PreToken> words;
    words.push_back({std::move(piece), at_start, std::move(align)});
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(words);
    std::vector<std::size_t> lengths;
    for (const auto& w : words) {
      if (!offsets) {
        model_->tokenize(w.text, ids);
        continue;
      }
      lengths.clear();
      model_->tokenize(w.text, ids, &lengths);
      std::size_t pos = 0;
      for (std::size_t len : lengths) {
        offsets->push_back(tokenizer::detail::span_of(w.align, pos, pos + len));
        pos += len;
      }
    }
  }

  /// "bos_token": "<s>" or {"content": "<s>", ...} (AddedToken serialisation) or null.
  static std::optional<std::string> special_token_text(const nlohmann::json& config, const char* key,
                                                       const std::string& where) {
    if (!config.contains(key) || config.at(key).is_null()) return std::nullopt;
    const auto& v = config.at(key);
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
    mechlens::detail::raise<FormatError>("{}: '{}' must be a string or an object with 'content', got {}", where, key,
                                         io::json_excerpt(v));
  }

  /// "chat_template": "..." or [{"name": "default", "template": "..."}, ...].
  static std::string chat_template_text(const nlohmann::json& v, const std::string& where) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_array()) {
      for (const auto& item : v) {
        if (item.is_object() && item.value("name", "") == "default" && item.contains("template") &&
            item.at("template").is_string()) {
          return item.at("template").get<std::string>();
        }
      }
      mechlens::detail::raise<ConfigError>("{}: 'chat_template' is a list without a 'default' entry", where);
    }
    mechlens::detail::raise<FormatError>("{}: 'chat_template' must be a string or a list of named templates, got {}",
                                         where, v.type_name());
  }

  std::string source_;
  std::string config_path_;
  std::shared_ptr<const tokenizer::Normalizer> normalizer_;
  std::shared_ptr<const tokenizer::PreTokenizer> pre_tokenizer_;
  std::shared_ptr<const tokenizer::BpeModel> model_;
  std::shared_ptr<const tokenizer::PostProcessor> post_processor_;
  std::shared_ptr<const tokenizer::Decoder> decoder_;
  tokenizer::AddedVocabulary added_;
  int64_t vocab_size_ = 0;
  std::optional<std::string> bos_token_, eos_token_;
  std::optional<std::string> chat_template_text_;
  std::optional<tokenizer::ChatTemplate> forced_template_;
};

}  // namespace mechlens
