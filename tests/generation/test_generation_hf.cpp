// Generation against transformers' greedy decoding (tests/reference/make_model_reference.py,
// generation.json): plain greedy, KV splices (left/right alignment, four layer ranges, equal and
// unequal lengths) and KV prefix memory. Token k is compared while every reference margin
// (top-1 minus top-2 logit) up to it is above 1e-3, as issue 5 states.
#include <mechlens/generation/generate.hpp>
#include <mechlens/interventions/kv_splice.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
using test::require_same_prefix;
std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }


GenerationOptions greedy_options(int64_t n) {
  GenerationOptions g;
  g.max_new_tokens = n;
  g.use_model_eos = false;  // the reference decodes a fixed number of tokens
  return g;
}
}  // namespace

TEST_CASE("Greedy decoding from the prompt state reproduces transformers, past a sliding window too") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"}) {
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    auto ref = io::read_json_file(model_dir(name) + "/generation.json");
    for (const auto& rec : ref.at("greedy")) {
      auto prompt = rec.at("prompt_ids").get<std::vector<int64_t>>();
      INFO(name << " prompt of " << prompt.size() << " tokens");
      auto out = generate(*model, {prompt}, greedy_options(static_cast<int64_t>(rec.at("new_ids").size())));
      require_same_prefix(out.tokens[0], rec);
    }
  }
}

TEST_CASE("KV splices with left and right alignment reproduce transformers for every layer range") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "qwen2_bias"}) {
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    auto ref = io::read_json_file(model_dir(name) + "/generation.json");
    REQUIRE(ref.at("splice").size() == 24);
    for (const auto& rec : ref.at("splice")) {
      auto target = rec.at("target_ids").get<std::vector<int64_t>>();
      auto source = rec.at("source_ids").get<std::vector<int64_t>>();
      auto layers = rec.at("layers").get<std::vector<int64_t>>();
      const int64_t n_new = static_cast<int64_t>(rec.at("new_ids").size());
      PromptState tgt = prefill(*model, target, n_new);
      PromptState src = prefill(*model, source, 0);
      SpliceOptions splice;
      splice.layers = LayerRange{layers[0], layers[1]};
      splice.align = parse_align(rec.at("align").get<std::string>());
      splice_kv(tgt.cache, src.cache, splice);
      auto out = decode(*model, tgt, greedy_options(n_new));
      INFO(name << " target " << target.size() << " source " << source.size() << " layers " << layers[0] << ":"
                << layers[1] << " align " << rec.at("align"));
      require_same_prefix(out.tokens[0], rec);
    }
  }
}

TEST_CASE("A KV prefix memory continues positions after the source and reproduces transformers") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "qwen2_bias"}) {
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    auto rec = io::read_json_file(model_dir(name) + "/generation.json").at("prefix").at(0);
    auto source = rec.at("source_ids").get<std::vector<int64_t>>();
    auto target = rec.at("target_ids").get<std::vector<int64_t>>();
    const int64_t n_new = static_cast<int64_t>(rec.at("new_ids").size());
    KVCache memory = encode_prompt(*model, source);
    PromptState state = prefill(*model, target, n_new, &memory);
    REQUIRE(state.position.item<int64_t>() == rec.at("pending_position").get<int64_t>());
    auto out = decode(*model, state, greedy_options(n_new));
    INFO(name);
    require_same_prefix(out.tokens[0], rec);
  }
}

TEST_CASE("Splicing prompts of different lengths without an alignment names both lengths") {
  Model model = load_model(model_dir("llama_tied"), {at::kFloat, test::device()});
  PromptState a = prefill(*model, std::vector<int64_t>{5, 6, 7, 8}, 4);
  PromptState b = prefill(*model, std::vector<int64_t>{5, 6, 7, 8, 9, 10}, 4);
  REQUIRE_THROWS_WITH(splice_kv(a.cache, b.cache), Catch::Contains("5 slots") && Catch::Contains("3"));
  SpliceOptions past;
  past.layers = LayerRange{2, 9};
  past.align = Align::Right;
  REQUIRE_THROWS_WITH(splice_kv(a.cache, b.cache, past), Catch::Contains("2:9") && Catch::Contains("3 layers"));
}
