// Participation ratio, effective rank and R_V against numpy.linalg.svd (pr_reference.json) and
// against the HF fixtures' hook_v activations (tests/data/models/*/rv.json, also numpy).
#include <mechlens/io/safetensors.hpp>
#include <mechlens/metrics/participation_ratio.hpp>

#include <algorithm>
#include <cstring>
#include <limits>

#include "reference.hpp"

using namespace mechlens::metrics;
using mechlens_test::stats_reference;

namespace {

at::Tensor tensor_from(const nlohmann::json& values, const nlohmann::json& shape_json) {
  const auto v = values.get<std::vector<double>>();
  const auto shape = shape_json.get<std::vector<int64_t>>();
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
  REQUIRE(static_cast<std::size_t>(t.numel()) == v.size());
  std::memcpy(t.data_ptr<double>(), v.data(), v.size() * sizeof(double));
  return t;
}

std::vector<double> values_of(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU).to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void check_all(const at::Tensor& actual, const nlohmann::json& expected, double rel) {
  const auto a = values_of(actual);
  const auto e = expected.get<std::vector<double>>();
  REQUIRE(a.size() == e.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    CHECK_REL(a[i], e[i], rel);
  }
}

}  // namespace

TEST_CASE("Participation ratio and effective rank match numpy's SVD, centred and not, batched") {
  const auto& ref = stats_reference("pr_reference.json");
  REQUIRE(ref.at("matrices").size() == 6);
  for (const auto& m : ref.at("matrices")) {
    INFO("matrix " << m.at("name").get<std::string>());
    const at::Tensor x = tensor_from(m.at("values"), m.at("shape"));
    for (bool centered : {false, true}) {
      INFO((centered ? "centred" : "uncentred"));
      const auto& e = m.at(centered ? "centered" : "uncentered");
      const at::Tensor pr = participation_ratio(x, centered);
      CHECK(pr.scalar_type() == at::kDouble);
      CHECK(pr.sizes() == x.sizes().slice(0, x.dim() - 2));
      check_all(pr, e.at("participation_ratio"), 1e-10);
      check_all(effective_rank(x, centered), e.at("effective_rank"), 1e-10);
      // Singular values: 1e-9 relative, except those at rounding level (centring removes one
      // direction exactly), compared with an absolute floor of 1e-12 of the largest.
      const auto sv = values_of(singular_values(x, centered));
      const auto sv_ref = e.at("singular_values").get<std::vector<double>>();
      REQUIRE(sv.size() == sv_ref.size());
      const double top = *std::max_element(sv_ref.begin(), sv_ref.end());
      for (std::size_t i = 0; i < sv.size(); ++i) {
        INFO("singular value " << i << ": " << sv[i] << " vs " << sv_ref[i]);
        CHECK(mechlens_test::close(sv[i], sv_ref[i], 1e-9, 1e-12 * top));
      }
    }
  }
}

TEST_CASE("Participation ratio of float32 input is computed in float64 from the float32 values") {
  const auto& m = stats_reference("pr_reference.json").at("matrices").at(0);
  const at::Tensor x64 = tensor_from(m.at("values"), m.at("shape"));
  const at::Tensor x32 = x64.to(at::kFloat);
  const at::Tensor pr32 = participation_ratio(x32);
  CHECK(pr32.scalar_type() == at::kDouble);
  // Identical to the float64 PR of the rounded values, and within float32 rounding of the exact.
  CHECK(pr32.item<double>() == participation_ratio(x32.to(at::kDouble)).item<double>());
  CHECK_REL(pr32.item<double>(), m.at("uncentered").at("participation_ratio").at(0).get<double>(), 1e-5);
}

TEST_CASE("Participation ratio of a batch equals the ratios of its matrices one by one") {
  const at::Tensor x = at::randn({2, 3, 16, 8}, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor batched = participation_ratio(x);
  REQUIRE(batched.sizes() == at::IntArrayRef({2, 3}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      CHECK_REL(batched[i][j].item<double>(), participation_ratio(x[i][j]).item<double>(), 1e-12);
  // Known values: an orthonormal set of k rows has PR = erank = k; one direction has PR = 1.
  CHECK_REL(participation_ratio(at::eye(5, at::kDouble)).item<double>(), 5.0, 1e-12);
  CHECK_REL(effective_rank(at::eye(5, at::kDouble)).item<double>(), 5.0, 1e-12);
  const at::Tensor rank1 = at::ones({16, 4}, at::kDouble) * at::arange(1, 5, at::kDouble);
  CHECK_REL(participation_ratio(rank1).item<double>(), 1.0, 1e-12);
}

TEST_CASE("R_V from value windows matches numpy, per prompt and per KV head") {
  const auto& rv = stats_reference("pr_reference.json").at("rv");
  const at::Tensor early = tensor_from(rv.at("early"), rv.at("early_shape"));
  const at::Tensor late = tensor_from(rv.at("late"), rv.at("early_shape"));
  check_all(rv_from_values(early, late), rv.at("uncentered").at("rv"), 1e-10);
  check_all(rv_from_values(early, late, true), rv.at("centered").at("rv"), 1e-10);
  check_all(participation_ratio(early), rv.at("uncentered").at("pr_early"), 1e-10);
  const int64_t heads = rv.at("per_head_heads").get<int64_t>();
  const at::Tensor per_head = rv_per_head_from_values(early, late, heads);
  CHECK(per_head.sizes() == at::IntArrayRef({3, heads}));
  check_all(per_head, rv.at("per_head_uncentered_rv"), 1e-10);
}

TEST_CASE("R_V of the HF fixtures' hook_v windows matches the reference script's numpy SVD") {
  for (const auto* model : {"llama_tied", "llama_gqa_llama3", "mistral_swa"}) {
    INFO("model " << model);
    const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/" + model;
    const auto expected = mechlens::io::read_json_file(dir + "/rv.json");
    const auto acts = mechlens::io::load_safetensors(dir + "/reference.safetensors");
    const std::string prompt = expected.at("prompt");
    const int64_t window = expected.at("window");
    for (const auto& [layer, pr] : expected.at("pr").items()) {
      INFO("layer " << layer);
      const at::Tensor v = acts.at(prompt + ".blocks." + layer + ".attn.hook_v");  // [1, pos, kv, dh]
      const at::Tensor win = value_window(v, window);
      CHECK(win.sizes() == at::IntArrayRef({1, window, v.size(2) * v.size(3)}));
      CHECK_REL(participation_ratio(win).item<double>(), pr.get<double>(), 1e-10);
      CHECK_REL(participation_ratio(win, true).item<double>(), expected.at("pr_centered").at(layer).get<double>(), 1e-10);
    }
    const std::string early = std::to_string(expected.at("rv").at("early").get<int>());
    const std::string late = std::to_string(expected.at("rv").at("late").get<int>());
    const at::Tensor e = value_window(acts.at(prompt + ".blocks." + early + ".attn.hook_v"), window);
    const at::Tensor l = value_window(acts.at(prompt + ".blocks." + late + ".attn.hook_v"), window);
    CHECK_REL(rv_from_values(e, l).item<double>(), expected.at("rv").at("value").get<double>(), 1e-10);
    CHECK_REL(rv_from_values(e, l, true).item<double>(), expected.at("rv").at("value_centered").get<double>(), 1e-10);
  }
}

TEST_CASE("Degenerate windows are refused with errors that name the problem") {
  using mechlens::ArgumentError;
  using mechlens::ShapeError;
  CHECK_THROWS_AS(participation_ratio(at::ones({5}, at::kDouble)), ShapeError);
  CHECK_THROWS_AS(participation_ratio(at::ones({4, 4}, at::kLong)), ArgumentError);
  at::Tensor x = at::randn({2, 3, 4, 4}, at::kDouble);
  x[1][2].zero_();
  CHECK_THROWS_WITH(participation_ratio(x), Catch::Contains("[1, 2]") && Catch::Contains("all zeros"));
  x[1][2].fill_(std::numeric_limits<double>::quiet_NaN());
  CHECK_THROWS_WITH(participation_ratio(x), Catch::Contains("NaN"));
  // Centring a window of one row, or of identical rows, leaves nothing.
  CHECK_THROWS_AS(participation_ratio(at::ones({1, 4}, at::kDouble), true), ShapeError);
  CHECK_THROWS_WITH(participation_ratio(at::ones({3, 4}, at::kDouble), true), Catch::Contains("centred"));
  // A prompt shorter than the window.
  const at::Tensor v = at::randn({2, 12, 2, 8});
  CHECK_THROWS_WITH(value_window(v, 16), Catch::Contains("12 positions") && Catch::Contains("16"));
  CHECK_THROWS_WITH(value_window(at::randn({2, 20, 2, 8}), 16, {20, 9}),
                    Catch::Contains("prompt 1 has 9 tokens"));
  CHECK(value_window(at::randn({2, 20, 2, 8}), 16, {20, 16}).sizes() == at::IntArrayRef({2, 16, 16}));
  CHECK_THROWS_AS(rv_from_values(at::randn({2, 4, 4}), at::randn({3, 4, 4})), ShapeError);
  CHECK_THROWS_AS(participation_ratio_per_head(at::randn({4, 10}), 3), ShapeError);
}
