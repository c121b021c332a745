// Chat prompts: mechlens renders the known templates exactly as transformers' apply_chat_template
// does (tests/data/tokenizer/chat_reference.json, rendered by HF's Jinja), and refuses others.

#include <mechlens/tokenizer/tokenizer.hpp>

#include "tokenizer_test_support.hpp"

using mechlens::ChatMessage;
using mechlens::Tokenizer;
using mechlens_test::reference;
using mechlens_test::vocabulary_dir;

namespace {

const Tokenizer& loaded(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, Tokenizer::from_file(vocabulary_dir(name))).first;
  return it->second;
}

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return out;
}

const nlohmann::json& setup(const std::string& name) {
  for (const auto& s : reference("chat_reference.json").at("setups")) {
    if (s.at("name") == name) return s;
  }
  FAIL("chat_reference.json has no setup " << name);
  throw;  // unreachable
}

std::string expected_template_name(const std::string& setup_name) {
  static const std::map<std::string, std::string> names{
      {"llama3_package_template", "llama3-always-generation-prompt"},
      {"llama3_instruct", "llama3-instruct"},
      {"llama2_chat", "llama2-chat"},
      {"mistral_v0.1", "mistral-v0.1"},
      {"mistral_v0.2", "mistral-v0.2"},
      {"mistral_system_first", "mistral-system-first"},
      {"mistral_system_last", "mistral-system-last"}};
  return names.at(setup_name);
}

}  // namespace

TEST_CASE("The Llama-3 template for system + user + generation prompt gives HF's text and ids exactly", "[chat]") {
  Tokenizer tok = loaded("llama3");
  const auto& s = setup("llama3_instruct");
  tok.set_chat_template(s.at("template").get<std::string>());
  const std::vector<ChatMessage> msgs{{"system", "You are a careful assistant. Answer briefly."},
                                      {"user", "What is the capital of France?"}};
  for (const auto& c : s.at("cases")) {
    if (c.at("conversation") != "system_user" || !c.at("add_generation_prompt").get<bool>()) continue;
    CHECK(tok.apply_chat_template(msgs, true) == c.at("text").get<std::string>());
    CHECK(tok.encode_chat(msgs, true) == c.at("ids").get<std::vector<int64_t>>());
    CHECK(tok.encode_chat(msgs, true).front() == *tok.bos_id());
    return;
  }
  FAIL("the reference has no system_user case with a generation prompt");
}

TEST_CASE("Every known chat template renders every reference conversation as transformers does", "[chat]") {
  const auto& setups = reference("chat_reference.json").at("setups");
  REQUIRE(setups.size() == 7);
  int rendered = 0, refused = 0;
  for (const auto& s : setups) {
    const auto name = s.at("name").get<std::string>();
    const auto template_text = s.at("template").get<std::string>();
    Tokenizer tok = loaded(s.at("model").get<std::string>());
    if (s.at("from_tokenizer_config").get<bool>()) {
      REQUIRE(tok.chat_template().has_value());
      CHECK(*tok.chat_template() == template_text);
    } else {
      tok.set_chat_template(template_text);
    }
    CHECK(tok.chat_format().name() == expected_template_name(name));
    for (const auto& c : s.at("cases")) {
      const auto msgs = messages_of(c.at("messages"));
      const bool gen = c.at("add_generation_prompt").get<bool>();
      INFO(name << " / " << c.at("conversation").get<std::string>() << " / add_generation_prompt=" << gen);
      if (c.contains("error")) {
        // HF's message is "TemplateError: <text of raise_exception>"; mechlens says the same.
        const auto hf = c.at("error").get<std::string>();
        const auto text = hf.substr(hf.find(": ") + 2);
        CHECK_THAT(mechlens_test::thrown<mechlens::ArgumentError>([&] { tok.apply_chat_template(msgs, gen); }),
             Catch::Matchers::Contains(text));
        ++refused;
        continue;
      }
      CHECK(tok.apply_chat_template(msgs, gen) == c.at("text").get<std::string>());
      CHECK(tok.encode_chat(msgs, gen) == c.at("ids").get<std::vector<int64_t>>());
      ++rendered;
    }
  }
  CHECK(rendered == 104);
  CHECK(refused == 36);
}

TEST_CASE("A template written with \\n escapes instead of newlines is the same template", "[chat]") {
  Tokenizer tok = loaded("llama3");
  std::string escaped = mechlens::tokenizer::detail::replace_all(
      std::string(mechlens::tokenizer::detail::kLlama3InstructTemplate), "\n", "\\n");
  REQUIRE(escaped != mechlens::tokenizer::detail::kLlama3InstructTemplate);
  tok.set_chat_template(escaped + "\n");
  CHECK(tok.chat_format().name() == "llama3-instruct");
}

TEST_CASE("An unknown chat template is an error that says so, and a named one can be chosen instead", "[chat]") {
  Tokenizer tok = loaded("llama3");
  const std::vector<ChatMessage> msgs{{"user", "Hi"}};
  // One character away from the known Llama-3 template: must not be rendered as if it were it.
  std::string near_miss(mechlens::tokenizer::detail::kLlama3InstructTemplate);
  near_miss.replace(near_miss.find("| trim"), 6, "");
  tok.set_chat_template(near_miss);
  CHECK_THAT(mechlens_test::thrown<mechlens::ConfigError>([&] { tok.apply_chat_template(msgs, true); }),
             Catch::Matchers::Contains("not one mechlens knows") &&
                           Catch::Matchers::Contains("llama3-instruct"));
  tok.set_chat_template("{{ messages[0]['content'] }}");
  CHECK_THROWS_AS(tok.apply_chat_template(msgs, true), mechlens::ConfigError);
  tok.use_chat_template("llama3-instruct");
  CHECK(tok.apply_chat_template(msgs, false) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  CHECK_THAT(mechlens_test::thrown<mechlens::NotFoundError>([&] { tok.use_chat_template("chatml"); }),
             Catch::Matchers::Contains("mistral-v0.2"));
}

TEST_CASE("A tokenizer without a chat template refuses to render one", "[chat]") {
  const Tokenizer& tok = loaded("llama2");  // its tokenizer_config.json has no chat_template
  REQUIRE_FALSE(tok.chat_template().has_value());
  CHECK_THAT(mechlens_test::thrown<mechlens::ConfigError>([&] { tok.apply_chat_template({{"user", "Hi"}}, true); }),
             Catch::Matchers::Contains("no chat template"));
}

TEST_CASE("The Llama-3 template trims content the way Jinja's trim (Python str.strip) does", "[chat]") {
  Tokenizer tok = loaded("llama3");
  tok.use_chat_template("llama3-instruct");
  // \x1c-\x1f, NEL, NBSP, ideographic space are whitespace to Python; U+200B is not.
  const std::string content = "\x1c\xc2\x85\xc2\xa0 x \xe3\x80\x80\x1f";
  CHECK(tok.apply_chat_template({{"user", content}}, false) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
  CHECK(tok.apply_chat_template({{"user", "\xe2\x80\x8bx"}}, false) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n\xe2\x80\x8bx<|eot_id|>");
}

TEST_CASE("With match_transformers_v5 the chat prompts tokenize to transformers 5's ids", "[chat]") {
  mechlens::TokenizerOptions v5;
  v5.match_transformers_v5 = true;
  std::map<std::string, Tokenizer> toks;
  for (const std::string name : {"llama3", "llama2"}) toks.emplace(name, Tokenizer::from_file(vocabulary_dir(name), v5));
  int differing = 0;
  for (const auto& s : reference("chat_reference.json").at("setups")) {
    Tokenizer tok = toks.at(s.at("model").get<std::string>());
    tok.set_chat_template(s.at("template").get<std::string>());
    for (const auto& c : s.at("cases")) {
      if (c.contains("error")) continue;
      INFO(s.at("name").get<std::string>() << " / " << c.at("conversation").get<std::string>());
      const auto msgs = messages_of(c.at("messages"));
      const bool gen = c.at("add_generation_prompt").get<bool>();
      const auto& expected = c.contains("transformers_ids") ? c.at("transformers_ids") : c.at("ids");
      differing += c.contains("transformers_ids") ? 1 : 0;
      CHECK(tok.encode_chat(msgs, gen) == expected.get<std::vector<int64_t>>());
    }
  }
  CHECK(differing > 0);
}
