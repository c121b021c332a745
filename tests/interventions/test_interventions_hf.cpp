// Single-pass patches against transformers (interventions.json): the target's logits after
// replacing q_proj / k_proj / v_proj outputs, a decoder layer's output or one head of the o_proj
// input with the source's, at all positions, the last four and one, at the first, a middle and
// the last layer. Tolerance: max|ours - ref| <= 1e-4 * max|ref| (issue 4).
#include <mechlens/interventions/swaps.hpp>
#include <mechlens/io/json.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

TEST_CASE("The study's single-pass patches reproduce transformers' patched logits") {
  for (const char* name : {"llama_gqa_llama3", "mistral_swa"}) {
    const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/" + name;
    Model model = load_model(dir, {at::kFloat, test::device()});
    auto meta = io::read_json_file(dir + "/interventions.json");
    auto ref = io::load_safetensors(dir + "/interventions.safetensors");
    at::Tensor target = ref.at("target_ids"), source = ref.at("source_ids");
    if (target.dim() == 1) target = target.unsqueeze(0), source = source.unsqueeze(0);

    CacheOptions keep;
    keep.names = {"blocks.*.attn.hook_q", "blocks.*.attn.hook_k", "blocks.*.attn.hook_v", "blocks.*.attn.hook_z",
                  "blocks.*.hook_resid_post"};
    auto [source_logits, src] = model->run_with_cache(source, keep);
    REQUIRE(test::max_rel_diff(source_logits, ref.at("source_logits")) <= 1e-4);

    REQUIRE(meta.at("cases").size() == 45);
    for (const auto& c : meta.at("cases")) {
      const std::string site = c.at("site");
      const int64_t layer = c.at("layer");
      Positions pos = Positions::list(c.at("positions").get<std::vector<int64_t>>());
      Intervention iv = site == "q_proj"   ? q_swap(src, layer, pos)
                        : site == "k_proj" ? k_swap(src, layer, pos)
                        : site == "v_proj" ? v_swap(src, layer, pos)
                        : site == "layer"  ? resid_patch(src, LayerRange::single(layer), pos)
                                           : head_patch(src, layer, c.at("head").get<int64_t>(), pos);
      auto scope = model->apply(iv);
      at::Tensor logits = model->forward(target);
      INFO(name << " " << site << " layer " << layer << " positions " << c.at("positions_name"));
      REQUIRE(test::max_rel_diff(logits, ref.at(c.at("key").get<std::string>())) <= 1e-4);
    }
    // The scope is gone: the target runs clean again.
    REQUIRE(test::max_rel_diff(model->forward(target), ref.at("target_logits")) <= 1e-4);
  }
}
