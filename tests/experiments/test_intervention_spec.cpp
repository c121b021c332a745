// Intervention specs (experiments/intervention_spec.hpp): JSON <-> InterventionSpec round trips,
// errors that name the field and what was expected, and the interventions they make: values
// computed by hand on tiny hook points, and transformers' patched logits (interventions.json of
// the reference checkpoints) reproduced from specs alone.

#include <catch2/catch.hpp>

#include <mechlens/experiments/intervention_spec.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;
using nlohmann::json;

namespace {
ex::InterventionSpec spec(const json& j) { return ex::parse_intervention_spec(j, "test spec"); }
}  // namespace

TEST_CASE("A canonical spec of every kind survives parse and to_json unchanged", "[experiments][spec]") {
  const std::vector<json> canonical = {
      {{"kind", "kv_splice"}, {"layers", "16:32"}, {"align", "right"}, {"rows", true}, {"rerotate", false},
       {"from_end", {1, 2}}, {"source", {{"role", "recursive"}, {"pair", "same"}}}},
      {{"kind", "kv_splice"}, {"layers", "0:2"}, {"heads", {1}}, {"align", "left"}, {"rerotate", true},
       {"slot_map", {{0, 1}, {2, 3}}}, {"slots", "0:2"}},
      {{"kind", "swap"}, {"site", "qkv"}, {"layers", "24:25"}, {"positions", "all"}, {"align", "right"},
       {"rows", true}, {"scope", "prompt"}, {"source", {{"role", "baseline"}, {"pair", "other"}}}},
      {{"kind", "patch"}, {"hook", "blocks.*.attn.hook_v"}, {"layers", "2:4"}, {"positions", {1, 2}},
       {"heads", {0}}, {"align", "exact"}, {"scope", "both"}, {"source", {{"ids", {5, 6, 7}}}}},
      {{"kind", "patch"}, {"hook", "blocks.1.hook_resid_post"}, {"positions", {{"last", 2}}}, {"align", "left"},
       {"steps", "2:"}, {"source", {{"prompt", "a text"}}}},
      {{"kind", "ablation"}, {"hook", "blocks.3.hook_mlp_out"}, {"mode", "zero"}, {"positions", "1:3"}, {"scope", "generated"}},
      {{"kind", "ablation"}, {"hook", "blocks.3.hook_mlp_out"}, {"mode", "resample"}, {"positions", "all"},
       {"seed", 7}, {"scope", "prompt"}, {"source", {{"ids", {1, 2}}}}},
      {{"kind", "steering"}, {"hook", "blocks.0.hook_resid_post"}, {"positions", "all"}, {"vector", {0.5, -1.0}},
       {"scale", 4.0}, {"steps", "2:4"}},
      {{"kind", "scale"}, {"hook", "blocks.*.attn.hook_z"}, {"layers", "0:2"}, {"positions", "all"}, {"factor", 0.5}, {"scope", "prompt"}}};
  for (const auto& j : canonical) {
    CAPTURE(j.dump());
    const auto s = spec(j);
    CHECK(ex::to_json(s) == j);
    CHECK(spec(ex::to_json(s)) == s);
  }
}

TEST_CASE("A spec's defaults are written out: positions all, align exact, scope prompt, rerotate false", "[experiments][spec]") {
  CHECK(ex::to_json(spec({{"kind", "swap"}, {"site", "v"}, {"layers", 3}, {"source", {{"ids", {1}}}}})) ==
        json{{"kind", "swap"}, {"site", "v"}, {"layers", "3:4"}, {"positions", "all"}, {"align", "exact"},
             {"scope", "prompt"}, {"source", {{"ids", {1}}}}});
  CHECK(ex::to_json(spec({{"kind", "kv_splice"}, {"source", {{"role", "recursive"}}}})) ==
        json{{"kind", "kv_splice"}, {"align", "exact"}, {"rerotate", false},
             {"source", {{"role", "recursive"}, {"pair", "same"}}}});
  // Steps that a named scope covers are written as that scope; "during_decoding" (0.2) as both.
  const json generated = ex::to_json(spec({{"kind", "patch"}, {"hook", "h"}, {"steps", "1:"}, {"source", {{"ids", {1}}}}}));
  CHECK(generated.at("scope") == "generated");
  CHECK_FALSE(generated.contains("steps"));
  CHECK(ex::to_json(spec({{"kind", "patch"}, {"hook", "h"}, {"steps", "0:1"}, {"source", {{"ids", {1}}}}})).at("scope") == "prompt");
  CHECK(ex::to_json(spec({{"kind", "ablation"}, {"hook", "h"}, {"mode", "zero"}, {"during_decoding", true}})).at("scope") == "both");
  const auto s = spec({{"kind", "kv_splice"}, {"layers", "1:3"}, {"align", "right"}, {"rerotate", true}});
  CHECK(s.layers->begin == 1);
  CHECK(s.layers->end == 3);
  CHECK(s.align == Align::Right);
  CHECK(s.rerotate);
  CHECK_FALSE(s.source.given());
}

TEST_CASE("A malformed spec is an error naming the field and what was expected", "[experiments][spec]") {
  auto fails = [](const json& j, const std::string& what) {
    CAPTURE(j.dump());
    CHECK_THROWS_WITH(spec(j), Catch::Contains("test spec") && Catch::Contains(what));
  };
  fails(json::array(), "must be a JSON object");
  fails({{"hook", "x"}}, "required field 'kind' is missing");
  fails({{"kind", "splice"}}, "field 'kind' is 'splice', expected kv_splice, patch, swap");
  fails({{"kind", "patch"}, {"hook", "h"}, {"position", "all"}, {"source", {{"ids", {1}}}}},
        "'position' is not a field of a 'patch' spec (expected hook, layers, positions");
  fails({{"kind", "patch"}, {"hook", "h"}}, "required field 'source' is missing");
  fails({{"kind", "patch"}, {"hook", 3}, {"source", {{"ids", {1}}}}}, "field 'hook' has the wrong type");
  fails({{"kind", "swap"}, {"site", "o"}, {"layers", "1:2"}, {"source", {{"ids", {1}}}}},
        "field 'site' is 'o', expected v, q, k, qkv, resid or z");
  fails({{"kind", "swap"}, {"site", "v"}, {"source", {{"ids", {1}}}}}, "required field 'layers' is missing");
  fails({{"kind", "swap"}, {"site", "v"}, {"layers", "2:"}, {"source", {{"ids", {1}}}}}, "field 'layers'");
  fails({{"kind", "swap"}, {"site", "v"}, {"layers", "3:1"}, {"source", {{"ids", {1}}}}}, "field 'layers'");
  fails({{"kind", "patch"}, {"hook", "blocks.1.attn.hook_v"}, {"layers", "0:2"}, {"source", {{"ids", {1}}}}},
        "needs a hook glob that starts with 'blocks.*.'");
  fails({{"kind", "patch"}, {"hook", "h"}, {"positions", "3:1"}, {"source", {{"ids", {1}}}}},
        "field 'positions' is '3:1', expected \"all\", \"lo:hi\"");
  fails({{"kind", "patch"}, {"hook", "h"}, {"positions", {1, -2}}, {"source", {{"ids", {1}}}}},
        "field 'positions' holds -2, expected integers >= 0");
  fails({{"kind", "patch"}, {"hook", "h"}, {"positions", {1.5}}, {"source", {{"ids", {1}}}}},
        "field 'positions' must be an integer");
  fails({{"kind", "patch"}, {"hook", "h"}, {"align", "middle"}, {"source", {{"ids", {1}}}}},
        "field 'align' is 'middle', expected exact, left or right");
  fails({{"kind", "patch"}, {"hook", "h"}, {"source", {{"ids", {1}}, {"prompt", "x"}}}},
        "give exactly one of 'role', 'ids' and 'prompt'");
  fails({{"kind", "patch"}, {"hook", "h"}, {"source", {{"role", "other"}}}}, "expected \"recursive\" or \"baseline\"");
  fails({{"kind", "patch"}, {"hook", "h"}, {"source", {{"ids", {1}}, {"from", 2}}}}, "'from' is not a source field");
  fails({{"kind", "ablation"}, {"hook", "h"}, {"mode", "zero"}, {"source", {{"ids", {1}}}}},
        "a zero ablation takes no 'source'");
  fails({{"kind", "ablation"}, {"hook", "h"}, {"mode", "half"}}, "field 'mode' is 'half', expected zero, mean");
  fails({{"kind", "ablation"}, {"hook", "h"}, {"mode", "zero"}, {"seed", 3}}, "'seed' goes with mode resample");
  fails({{"kind", "steering"}, {"hook", "h"}, {"vector", {1, "x"}}}, "field 'vector' holds \"x\", expected numbers");
  fails({{"kind", "steering"}, {"hook", "h"}}, "field 'vector' must be a non-empty list");
  fails({{"kind", "scale"}, {"hook", "h"}}, "required field 'factor' is missing");
  fails({{"kind", "kv_splice"}, {"rows", true}, {"slots", "0:2"}}, "apply to plain splices");
  fails({{"kind", "kv_splice"}, {"from_end", {0}}, {"rows", true}}, "field 'from_end' holds 0, expected integers >= 1");
  fails({{"kind", "kv_splice"}, {"from_end", {1}}}, "apply to row splices (rows: true)");
  fails({{"kind", "kv_splice"}, {"slot_map", {{1}}}}, "expected [target slot, source slot]");
}

namespace {
struct Site {
  HookRegistry reg;
  HookPoint *v, *resid0, *resid1;
  Site() {
    v = &reg.add_point("blocks.0.attn.hook_v", 0, {kDimBatch, kDimPos, 2, 3});
    resid0 = &reg.add_point("blocks.0.hook_resid_post", 0, {kDimBatch, kDimPos, 4});
    resid1 = &reg.add_point("blocks.1.hook_resid_post", 1, {kDimBatch, kDimPos, 4});
  }
};
}  // namespace

TEST_CASE("Hook specs make the interventions they describe (values by hand)", "[experiments][spec]") {
  Site s;
  {  // zero ablation of KV head 1 at the last position
    auto scope = ex::to_intervention(spec({{"kind", "ablation"}, {"mode", "zero"}, {"hook", "blocks.0.attn.hook_v"},
                                           {"positions", {{"last", 1}}}, {"heads", {1}}}))
                     .apply(s.reg);
    at::Tensor expected = at::ones({1, 3, 2, 3});
    expected[0][2][1].fill_(0);
    CHECK((*s.v)(at::ones({1, 3, 2, 3})).equal(expected));
  }
  {  // steering at position 0 by 0.5 x (1, 0, -1, 2)
    auto scope = ex::to_intervention(spec({{"kind", "steering"}, {"hook", "blocks.0.hook_resid_post"},
                                           {"positions", {0}}, {"vector", {1, 0, -1, 2}}, {"scale", 0.5}}))
                     .apply(s.reg);
    at::Tensor y = (*s.resid0)(at::zeros({1, 2, 4}));
    CHECK(y[0][0].equal(at::tensor({0.5f, 0.0f, -0.5f, 1.0f})));
    CHECK(y[0][1].abs().sum().item<double>() == 0.0);
  }
  {  // scale x3 at layers 0:2 of a glob: both residual hooks
    auto iv = ex::to_intervention(spec({{"kind", "scale"}, {"hook", "blocks.*.hook_resid_post"}, {"layers", "0:2"},
                                        {"factor", 3.0}}));
    CHECK(ex::spec_hooks(spec({{"kind", "scale"}, {"hook", "blocks.*.hook_resid_post"}, {"layers", "0:2"},
                               {"factor", 3.0}})) ==
          std::vector<std::string>{"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"});
    auto scope = iv.apply(s.reg);
    CHECK((*s.resid0)(at::ones({1, 1, 4})).sum().item<double>() == 12.0);
    CHECK((*s.resid1)(at::ones({1, 1, 4})).sum().item<double>() == 12.0);
  }
  CHECK(ex::to_intervention(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}})).scope_str() == "prompt");
  CHECK(ex::to_intervention(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"during_decoding", true}}))
            .scope_str() == "both");
  CHECK(ex::to_intervention(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"scope", "generated"}}))
            .scope_str() == "generated");
  CHECK(ex::to_intervention(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"steps", "2:5"}}))
            .scope_str() == "steps 2:5");
  CHECK(ex::to_json(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"during_decoding", true}})).at("scope") ==
        "both");
  CHECK_THROWS_WITH(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"scope", "decode"}}),
                    Catch::Contains("expected prompt, generated or both"));
  CHECK_THROWS_WITH(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"steps", "3:1"}}),
                    Catch::Contains("0 <= a < b"));
  CHECK_THROWS_WITH(spec({{"kind", "scale"}, {"hook", "h"}, {"factor", 2.0}, {"scope", "both"}, {"steps", "1:"}}),
                    Catch::Contains("one of 'scope', 'steps'"));
  CHECK(ex::spec_hooks(spec({{"kind", "swap"}, {"site", "qkv"}, {"layers", "1:3"}, {"source", {{"ids", {1}}}}})) ==
        std::vector<std::string>{"blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v",
                                 "blocks.2.attn.hook_q", "blocks.2.attn.hook_k", "blocks.2.attn.hook_v"});
  CHECK_THROWS_WITH(ex::to_intervention(spec({{"kind", "swap"}, {"site", "v"}, {"layers", 0}, {"source", {{"ids", {1}}}}})),
                    Catch::Contains("needs the source run's activation cache"));
  CHECK_THROWS_WITH(ex::to_intervention(spec({{"kind", "kv_splice"}})), Catch::Contains("edits the KV cache"));
}

TEST_CASE("A kv_splice spec gives the splice options it describes", "[experiments][spec]") {
  ModelConfig cfg = ModelConfig::from_file(std::string(MECHLENS_TEST_DATA) + "/models/llama_tied");
  const auto plain = ex::to_splice_options(
      spec({{"kind", "kv_splice"}, {"layers", "1:3"}, {"heads", {0}}, {"align", "left"}, {"slots", {0, 1}},
            {"rerotate", true}}),
      cfg);
  CHECK(plain.layers->str() == "1:3");
  CHECK(plain.kv_heads.indices == std::vector<int64_t>{0});
  CHECK(plain.align == Align::Left);
  CHECK(plain.slots.str() == "[0, 1]");
  CHECK(plain.rerotate);
  CHECK(plain.rope.has_value());
  const auto rows = ex::to_row_splice_options(
      spec({{"kind", "kv_splice"}, {"rows", true}, {"align", "right"}, {"from_end", {1, 2}}, {"from_start", {0}}}), cfg);
  CHECK_FALSE(rows.layers.has_value());
  CHECK(rows.align == Align::Right);
  CHECK(rows.from_end == std::vector<int64_t>{1, 2});
  CHECK(rows.from_start == std::vector<int64_t>{0});
  CHECK_THROWS_WITH(ex::to_splice_options(spec({{"kind", "kv_splice"}, {"layers", "0:99"}}), cfg),
                    Catch::Contains("kv_splice layers 0:99 does not fit a model of"));
}

TEST_CASE("Swap specs reproduce transformers' patched logits", "[experiments][spec]") {
  for (const char* name : {"llama_gqa_llama3", "mistral_swa"}) {
    const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/" + name;
    Model model = load_model(dir, {at::kFloat, test::device()});
    auto meta = io::read_json_file(dir + "/interventions.json");
    auto ref = io::load_safetensors(dir + "/interventions.safetensors");
    at::Tensor target = ref.at("target_ids"), source = ref.at("source_ids");
    if (target.dim() == 1) target = target.unsqueeze(0), source = source.unsqueeze(0);
    const at::Tensor flat = source.flatten().to(at::kLong).contiguous();
    const std::vector<int64_t> source_ids(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel());
    REQUIRE(meta.at("cases").size() == 45);
    const std::map<std::string, std::string> site_of = {
        {"q_proj", "q"}, {"k_proj", "k"}, {"v_proj", "v"}, {"layer", "resid"}, {"head_z", "z"}};
    for (const auto& c : meta.at("cases")) {
      const std::string site = c.at("site");
      REQUIRE(site_of.count(site));
      json j = {{"kind", "swap"}, {"site", site_of.at(site)}, {"layers", c.at("layer")},
                {"positions", c.at("positions")}, {"source", {{"ids", source_ids}}}};
      if (!c.at("head").is_null()) j["heads"] = {c.at("head")};
      const auto s = spec(j);
      CacheOptions keep;
      keep.names = ex::spec_hooks(s);
      auto src = model->run_with_cache(source.to(model->device()), keep).second;
      auto scope = model->apply(ex::to_intervention(s, &src));
      INFO(name << " " << j.dump());
      REQUIRE(test::max_rel_diff(model->forward(target.to(model->device())), ref.at(c.at("key").get<std::string>())) <=
              1e-4);
    }
  }
}
