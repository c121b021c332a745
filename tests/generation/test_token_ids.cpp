// One vocabulary for token ids: a prompt's std::vector<int64_t> (what Tokenizer::encode gives), a
// batch of them, or a [batch, pos] int64 tensor — each entry point that takes ids gives the same
// numbers for each form; and load_pretrained gives a checkpoint folder's model and tokenizer.
#include <catch2/catch.hpp>

#include <mechlens/experiments/rv.hpp>
#include <mechlens/generation/generate.hpp>
#include <mechlens/models/pretrained.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
std::string toy_dir() { return std::string(MECHLENS_SOURCE_DIR) + "/examples/models/dec7-toy"; }
}  // namespace

TEST_CASE("forward, run_with_cache, prefill and measure_rv take a prompt's ids or a tensor alike") {
  auto [model, tok] = load_pretrained(toy_dir());
  const std::vector<int64_t> ids = tok.encode("the observer watches the watcher that is watching itself");
  REQUIRE(ids.size() >= 8);
  const at::Tensor tensor = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1});
  REQUIRE(at::equal(model->forward(ids), model->forward(tensor)));
  CacheOptions keep;
  keep.names = {"blocks.1.attn.hook_v"};
  auto [la, ca] = model->run_with_cache(ids, keep);
  auto [lb, cb] = model->run_with_cache(tensor, keep);
  REQUIRE(at::equal(la, lb));
  REQUIRE(at::equal(ca("v", 1), cb("v", 1)));

  // Two prompts of one length: a [2, n] tensor, and the two vectors.
  std::vector<int64_t> other = ids;
  std::reverse(other.begin() + 1, other.end());
  const at::Tensor both = at::stack({tensor[0], at::tensor(other, at::TensorOptions().dtype(at::kLong))});
  PromptState a = prefill(*model, both, 4), b = prefill(*model, {ids, other}, 4);
  REQUIRE(at::equal(a.cache.key_storage(), b.cache.key_storage()));
  REQUIRE(at::equal(a.pending, b.pending));
  auto o = default_rv_options(model->config());
  o.window = 4;
  REQUIRE(at::equal(measure_rv(*model, both, o).rv, measure_rv(*model, {ids, other}, o).rv));
  // One prompt alone against the same prompt in a batch of two: equal up to the batched products' rounding.
  REQUIRE(measure_rv(*model, {ids}, o).rv.item<double>() ==
          Approx(measure_rv(*model, {ids, other}, o).rv[0].item<double>()).epsilon(1e-6));

  CHECK_THROWS_WITH(model->forward(std::vector<int64_t>{}), Catch::Contains("no token ids"));
  CHECK_THROWS_WITH(prefill(*model, both.to(at::kInt), 4), Catch::Contains("[batch, pos] int64 tensor"));
}

TEST_CASE("load_pretrained names the folder when it holds no tokenizer.json") {
  const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/llama_tied";
  CHECK_THROWS_AS(load_pretrained(dir), IoError);
  CHECK_THROWS_WITH(load_pretrained(dir), Catch::Contains("llama_tied"));
}
