#pragma once
/// \file
/// PCRE2 (UTF-8, Unicode properties, JIT) behind a small RAII class that finds every match of a
/// tokenizer.json regex the way HF `tokenizers` (Oniguruma) does.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pcre2.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/utf8.hpp"

namespace mechlens::tokenizer::detail {

/// Oniguruma's \s (what HF `tokenizers` compiles its patterns with) also matches U+0085 (NEL),
/// which PCRE2's \s does not; every other class used by tokenizer.json patterns agrees. Rewrite
/// \s and \S so the two engines split text identically.
inline std::string oniguruma_to_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char n = pattern[i + 1];
      if (n == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (n == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out += '^';
        ++i;
      }
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') {
        out += ']';
        ++i;
      }
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

/// A compiled pattern. Thread-safe for matching: each call uses its own match data and JIT stack.
class Regex {
 public:
  /// Compiles `pattern` (Oniguruma syntax as in tokenizer.json) for UTF-8 subjects. `where` names
  /// the component for error messages.
  Regex(std::string_view pattern, const std::string& where) : source_(pattern) {
    const std::string translated = oniguruma_to_pcre2(pattern);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      mechlens::detail::raise<FormatError>("{}: regex '{}' does not compile at offset {}: {}", where, source_,
                                 static_cast<std::size_t>(error_offset), reinterpret_cast<const char*>(message));
    }
    code_.reset(code);
    // JIT is an optimisation only: without it (unsupported CPU, no executable memory) the
    // interpreter gives the same matches.
    jit_ = pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE) == 0;
  }

  const std::string& source() const { return source_; }
  /// Whether PCRE2's JIT compiled the pattern (matches are the same either way).
  bool jit() const { return jit_; }

  /// Every non-overlapping match in `subject` (valid UTF-8), left to right, as byte ranges.
  /// After an empty match the search resumes one character later, as Oniguruma's find_iter does.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view subject) const {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    Scratch& s = scratch();
    const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
    std::size_t start = 0;
    while (start <= subject.size()) {
      // The caller validated the subject once; skipping PCRE2's own check per call keeps
      // matching linear in the text length.
      const int rc = pcre2_match(code_.get(), data, subject.size(), start, PCRE2_NO_UTF_CHECK, s.match_data,
                                 s.context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        mechlens::detail::raise<Error>("regex '{}' failed at byte {} of a {}-byte text: {}", source_, start, subject.size(),
                             reinterpret_cast<const char*>(message));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.match_data);
      const std::size_t b = ov[0], e = ov[1];
      matches.emplace_back(b, e);
      if (e > b) {
        start = e;
      } else {
        if (e >= subject.size()) break;
        start = e + utf8_char_length(static_cast<unsigned char>(subject[e]));
      }
    }
    return matches;
  }

 private:
  struct CodeDeleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };

  // Per-thread match data, match context and JIT stack (PCRE2 forbids sharing them between
  // concurrent matches). The JIT stack grows to 8 MiB for patterns like \s+(?!\S) on long runs.
  struct Scratch {
    pcre2_match_data* match_data = nullptr;
    pcre2_match_context* context = nullptr;
    pcre2_jit_stack* jit_stack = nullptr;
    Scratch() {
      match_data = pcre2_match_data_create(16, nullptr);
      context = pcre2_match_context_create(nullptr);
      jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
      if (match_data == nullptr || context == nullptr || jit_stack == nullptr) {
        throw Error("PCRE2: out of memory creating match data");
      }
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    ~Scratch() {
      pcre2_jit_stack_free(jit_stack);
      pcre2_match_context_free(context);
      pcre2_match_data_free(match_data);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
  };
  static Scratch& scratch() {
    thread_local Scratch s;
    return s;
  }

  std::string source_;
  std::unique_ptr<pcre2_code, CodeDeleter> code_;
  bool jit_ = false;
};

}  // namespace mechlens::tokenizer::detail
