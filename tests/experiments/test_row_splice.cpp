// Row-wise KV splices and patches of left-padded batches (interventions/kv_splice_rows.hpp,
// interventions/patch_rows.hpp) against the batch-1 operations (splice_kv, patch) applied to each
// row alone. Here beside the experiments, whose batches of pairs they were made for and whose
// padding helper they use.

#include <catch2/catch.hpp>

#include <mechlens/experiments/conditions.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/generation/left_pad.hpp>
#include <mechlens/interventions/kv_splice.hpp>
#include <mechlens/interventions/kv_splice_rows.hpp>
#include <mechlens/interventions/patch.hpp>
#include <mechlens/interventions/patch_rows.hpp>
#include <mechlens/models/load.hpp>

#include "experiments_test_support.hpp"
#include "test_util.hpp"

using namespace mechlens;
namespace ex = mechlens::experiments;

namespace {

std::vector<int64_t> ids(std::initializer_list<int64_t> v) { return v; }

// Target and source prompts of different lengths per row (both directions), vocabulary 256.
const std::vector<std::vector<int64_t>> kTargets = {ids({1, 40, 41, 42, 43}), ids({1, 50, 51, 52, 53, 54, 55, 56, 57}),
                                                    ids({1, 60, 61, 62, 63, 64, 65})};
const std::vector<std::vector<int64_t>> kSources = {ids({1, 70, 71, 72, 73, 74, 75, 76}), ids({1, 80, 81, 82, 83, 84}),
                                                    ids({1, 90, 91, 92, 93, 94, 95})};

/// Keys or values of row r's real slots: [layers, kv, n, d].
at::Tensor real_slots(const KVCache& c, int64_t r, bool keys) {
  const at::Tensor& st = keys ? c.key_storage() : c.value_storage();
  const int64_t n = c.valid()[r].sum().item<int64_t>();
  return st.select(1, r).narrow(2, c.length() - n, n);
}

}  // namespace

TEST_CASE("KV splice of a padded batch equals splicing each row alone with splice_kv", "[experiments][splice]") {
  Model model = load_model(test::reference_model("llama_gqa_llama3"));
  for (bool rerotate : {false, true}) {
    for (Align align : {Align::Right, Align::Left}) {
      CAPTURE(rerotate, align_name(align));
      RowSpliceOptions opt;
      opt.layers = LayerRange{1, 3};
      opt.align = align;
      opt.rerotate = rerotate;
      opt.rope = model->config().rope;
      PromptState target = prefill(*model, kTargets, 4);
      PromptState source = prefill(*model, kSources, 0);
      const auto copied = splice_kv_rows(target.cache, source.cache, opt);
      for (size_t r = 0; r < kTargets.size(); ++r) {
        PromptState t1 = prefill(*model, kTargets[r], 4);
        PromptState s1 = prefill(*model, kSources[r], 0);
        SpliceOptions so;
        so.layers = opt.layers;
        so.align = align;
        so.rerotate = rerotate;
        so.rope = model->config().rope;
        splice_kv(t1.cache, s1.cache, so);
        CHECK(copied[r] == static_cast<int64_t>(std::min(kTargets[r].size(), kSources[r].size()) - 1));
        for (bool keys : {true, false}) {
          // Padded vs unpadded prefill differ by float rounding only.
          CHECK(test::max_rel_diff(real_slots(target.cache, static_cast<int64_t>(r), keys), real_slots(t1.cache, 0, keys)) < 1e-5);
        }
      }
    }
  }
}

TEST_CASE("KV splice with from_end copies only the named slots of each row", "[experiments][splice]") {
  Model model = load_model(test::reference_model("llama_tied"));
  PromptState target = prefill(*model, kTargets, 0);
  PromptState before = prefill(*model, kTargets, 0);
  PromptState source = prefill(*model, kSources, 0);
  RowSpliceOptions opt;
  opt.align = Align::Right;
  opt.from_end = {1, 3};
  opt.from_start = {0};
  const auto copied = splice_kv_rows(target.cache, source.cache, opt);
  for (int64_t r = 0; r < 3; ++r) {
    const at::Tensor now = real_slots(target.cache, r, true), old = real_slots(before.cache, r, true);
    const at::Tensor src = real_slots(source.cache, r, true);
    const int64_t n = now.size(2), ns = src.size(2), m = std::min(n, ns);
    int64_t expected = 0;
    for (int64_t k : {n - 1, n - 3, int64_t{0}}) expected += k >= n - m;  // chosen and aligned
    CHECK(copied[static_cast<size_t>(r)] == expected);
    for (int64_t k = 0; k < n; ++k) {
      const bool chosen = k == n - 1 || k == n - 3 || k == 0;
      // Right alignment: target slot k takes source slot k - (n - m) + (ns - m).
      const int64_t s = k - (n - m) + (ns - m);
      if (chosen && s >= 0 && k >= n - m) {
        CHECK(at::equal(now.select(2, k), src.select(2, s)));
      } else if (!chosen) {
        CHECK(at::equal(now.select(2, k), old.select(2, k)));
      }
    }
  }
}

TEST_CASE("KV splice of prompts of different lengths without an alignment names the row and both lengths",
          "[experiments][splice]") {
  Model model = load_model(test::reference_model("llama_tied"));
  PromptState target = prefill(*model, kTargets, 0);
  PromptState source = prefill(*model, kSources, 0);
  RowSpliceOptions opt;
  try {
    splice_kv_rows(target.cache, source.cache, opt);
    FAIL("no error");
  } catch (const ArgumentError& e) {
    CHECK_THAT(e.what(), Catch::Contains("row 0") && Catch::Contains("7 prefilled slots") && Catch::Contains("the target 4"));
  }
}

TEST_CASE("Row patch of a padded batch equals patch() on each row alone, the pending token included",
          "[experiments][patch]") {
  Model model = load_model(test::reference_model("mistral_swa"));
  const std::vector<std::string> hooks = {"blocks.1.attn.hook_v", "blocks.2.hook_resid_post"};
  CacheOptions co;
  co.names = hooks;
  // The sources over their whole prompts; lengths count every prompt token.
  const LeftPadded src = left_pad(kSources);
  const std::vector<int64_t>& ns = src.lengths;
  std::vector<int64_t> nt;
  for (const auto& t : kTargets) nt.push_back(static_cast<int64_t>(t.size()));
  ForwardOptions fo;
  fo.attention_mask = src.live;
  auto cached = model->run_with_cache(src.ids, co, fo).second;
  GenerationOptions go;
  go.max_new_tokens = 5;
  go.use_model_eos = false;
  PromptState batch;
  GenerationResult batch_out;
  {
    auto scope = model->apply(patch_rows(hooks, cached, ns, nt, Align::Right));
    batch = prefill(*model, kTargets, 5);
    batch_out = decode(*model, batch, go);
  }
  for (size_t r = 0; r < kTargets.size(); ++r) {
    INFO("row " << r);
    auto one = model->run_with_cache(at::tensor(kSources[r], at::kLong).view({1, -1}), co).second;
    auto scope = model->apply(patch(hooks[0], one, {}, Align::Right) | patch(hooks[1], one, {}, Align::Right));
    PromptState alone = prefill(*model, kTargets[r], 5);
    auto out = decode(*model, alone, go);
    CHECK(out.tokens[0] == batch_out.tokens[r]);
    for (bool keys : {true, false})
      CHECK(test::max_rel_diff(real_slots(batch.cache, static_cast<int64_t>(r), keys), real_slots(alone.cache, 0, keys)) < 1e-5);
  }
  // Lengths of the prefilled tokens only (the pending token left out) do not describe the run.
  std::vector<int64_t> short_nt;
  for (int64_t n : nt) short_nt.push_back(n - 1);
  auto scope = model->apply(patch_rows(hooks, cached, ns, short_nt, Align::Right));
  CHECK_THROWS_WITH(prefill(*model, kTargets, 5), Catch::Contains("n_target counts each row's whole prompt"));
}

TEST_CASE("A KV-transfer condition decodes a padded batch as it decodes each pair alone", "[experiments][splice]") {
  Model model = load_model(test::reference_model("llama_gqa_llama3"));
  std::vector<ex::PromptPair> pairs;
  std::vector<ex::EncodedPair> enc;
  for (size_t r = 0; r < kTargets.size(); ++r) {
    pairs.push_back({"p" + std::to_string(r), "", "", kSources[r], kTargets[r], nlohmann::json::object()});
    enc.push_back({kSources[r], kTargets[r]});
  }
  ex::KvTransferOptions opt;
  opt.layers = LayerRange{2, 4};
  opt.align = Align::Right;
  auto cond = ex::kv_transfer("t", ex::Role::Baseline, opt, model->config());
  GenerationOptions go;
  go.max_new_tokens = 6;
  go.use_model_eos = false;
  ex::BatchContext ctx;
  ctx.model = &*model;
  ctx.pairs = &pairs;
  ctx.encoded = &enc;
  ctx.max_new_tokens = 6;
  ctx.rows = {0, 1, 2};
  auto prepared = cond.prepare(ctx);
  const auto batch = decode(*model, prepared.state, go);
  for (size_t r = 0; r < 3; ++r) {
    ctx.rows = {r};
    auto one = cond.prepare(ctx);
    CHECK(decode(*model, one.state, go).tokens[0] == batch.tokens[r]);
  }
}
