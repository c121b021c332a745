// The sampler's draws against the distribution they must follow, softmax(logits / T) restricted
// by top-k / top-p and written out here by its definition (exp and sums in double), with
// Pearson's chi-square test; and the property the per-row streams exist for: a row's tokens
// depend only on its seed and its own logits, not on the batch around it.
//
// Chi-square critical values at alpha = 1e-4 are scipy.stats.chi2.ppf(1 - 1e-4, df): 18.4207
// (df 2), 21.1075 (df 3), 29.8775 (df 7), 44.2632 (df 15). The seeds are fixed, so each test
// draws the same numbers on every run: it cannot flicker, and a pass means the draws of this
// sampler fit the distribution at that level.
#include <cmath>
#include <numeric>
#include <vector>

#include <catch2/catch.hpp>

#include <mechlens/generation/generate.hpp>
#include <mechlens/generation/sampler.hpp>
#include <mechlens/models/init.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {

/// softmax(logits / T) in double, over the tokens `keep` says (all when empty).
std::vector<double> softmax(const std::vector<double>& logits, double t, std::vector<bool> keep = {}) {
  if (keep.empty()) keep.assign(logits.size(), true);
  double hi = -INFINITY;
  for (size_t v = 0; v < logits.size(); ++v)
    if (keep[v]) hi = std::max(hi, logits[v] / t);
  std::vector<double> p(logits.size(), 0.0);
  double z = 0.0;
  for (size_t v = 0; v < logits.size(); ++v)
    if (keep[v]) z += (p[v] = std::exp(logits[v] / t - hi));
  for (double& x : p) x /= z;
  return p;
}

/// Pearson's statistic of `counts` against probabilities `p` (cells with p = 0 must be empty).
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& p) {
  const double n = static_cast<double>(std::accumulate(counts.begin(), counts.end(), int64_t{0}));
  double x2 = 0.0;
  for (size_t v = 0; v < p.size(); ++v) {
    if (p[v] == 0.0) {
      REQUIRE(counts[v] == 0);
      continue;
    }
    const double e = n * p[v];
    x2 += (counts[v] - e) * (counts[v] - e) / e;
  }
  return x2;
}

/// `batch` copies of `logits`, float32, on the test device (MECHLENS_TEST_DEVICE).
at::Tensor rows_of(const std::vector<double>& logits, int64_t batch) {
  return at::tensor(logits, at::TensorOptions().dtype(at::kDouble))
      .to(at::kFloat)
      .view({1, -1})
      .expand({batch, -1})
      .contiguous()
      .to(test::device());
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.cpu().contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

TEST_CASE("Draws across rows follow softmax(logits / T)") {
  const std::vector<double> logits = {1.0, 0.2, -0.5, 2.0, 0.0, -1.5, 0.7, 1.3};
  SamplingOptions o;
  o.temperature = 0.8;
  o.seed = 7;
  const int64_t n = 40000;
  Sampler s(o, test::device());
  std::vector<int64_t> counts(logits.size(), 0);
  for (int64_t id : to_vector(s(rows_of(logits, n)))) ++counts[id];
  const double x2 = chi_square(counts, softmax(logits, o.temperature));
  INFO("chi-square " << x2 << " (df 7)");
  CHECK(x2 < 29.8775);
}

TEST_CASE("Draws across the steps of each row follow the distribution, and consecutive steps are independent") {
  const std::vector<double> logits = {0.3, -0.4, 1.1, 0.0};
  SamplingOptions o;
  o.temperature = 1.0;
  o.seed = 12345;
  const int64_t rows = 100, steps = 200;
  Sampler s(o, test::device());
  const at::Tensor x = rows_of(logits, rows);
  std::vector<std::vector<int64_t>> drawn;
  for (int64_t t = 0; t < steps; ++t) drawn.push_back(to_vector(s(x)));
  const auto p = softmax(logits, 1.0);
  std::vector<int64_t> counts(4, 0), pairs(16, 0);
  std::vector<double> joint(16);
  for (int64_t t = 0; t < steps; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      ++counts[drawn[t][r]];
      if (t > 0) ++pairs[drawn[t - 1][r] * 4 + drawn[t][r]];
    }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) joint[i * 4 + j] = p[i] * p[j];
  const double marginal = chi_square(counts, p), consecutive = chi_square(pairs, joint);
  INFO("chi-square marginal " << marginal << " (df 3), consecutive pairs " << consecutive << " (df 15)");
  CHECK(marginal < 21.1075);
  CHECK(consecutive < 44.2632);
}

TEST_CASE("Top-k and top-p draw only from the kept tokens, in proportion") {
  const std::vector<double> logits = {0.5, 2.0, -1.0, 1.5, 1.0, -0.2};
  const int64_t n = 30000;
  SECTION("top-k 3 keeps tokens 1, 3, 4") {
    SamplingOptions o;
    o.temperature = 1.0;
    o.top_k = 3;
    o.seed = 3;
    Sampler s(o, test::device());
    std::vector<int64_t> counts(logits.size(), 0);
    for (int64_t id : to_vector(s(rows_of(logits, n)))) ++counts[id];
    const double x2 = chi_square(counts, softmax(logits, 1.0, {false, true, false, true, true, false}));
    INFO("chi-square " << x2 << " (df 2)");
    CHECK(x2 < 18.4207);
  }
  SECTION("top-p 0.85 keeps the smallest set reaching 0.85") {
    SamplingOptions o;
    o.temperature = 1.0;
    o.top_p = 0.85;
    o.seed = 4;
    // Sorted probabilities at T = 1: token 1 (0.424), 3 (0.257), 4 (0.156), 0 (0.095), 5 (0.047),
    // 2 (0.021): the first three sum to 0.837 < 0.85, so token 0 is kept too, and the first four
    // reach 0.932.
    const auto full = softmax(logits, 1.0);
    REQUIRE(full[1] + full[3] + full[4] < 0.85);
    REQUIRE(full[1] + full[3] + full[4] + full[0] >= 0.85);
    Sampler s(o, test::device());
    std::vector<int64_t> counts(logits.size(), 0);
    for (int64_t id : to_vector(s(rows_of(logits, n)))) ++counts[id];
    const double x2 = chi_square(counts, softmax(logits, 1.0, {true, true, false, true, true, false}));
    INFO("chi-square " << x2 << " (df 3)");
    CHECK(x2 < 21.1075);
  }
}

TEST_CASE("A row's draws depend on its seed and logits alone, not on the batch around it") {
  const at::Tensor logits = (at::randn({6, 50}, at::TensorOptions().dtype(at::kFloat)) * 2.0).to(test::device());
  const std::vector<uint64_t> seeds = {11, 99, 11, 5, 123456789, 0};
  SamplingOptions o;
  o.temperature = 0.9;
  o.top_p = 0.95;
  o.row_seeds = seeds;
  Sampler batch(o, test::device());
  std::vector<std::vector<int64_t>> together;
  for (int t = 0; t < 12; ++t) together.push_back(to_vector(batch(logits)));
  for (int64_t r = 0; r < 6; ++r) {
    SamplingOptions alone_o = o;
    alone_o.row_seeds = {seeds[r]};
    Sampler alone(alone_o, test::device());
    for (int t = 0; t < 12; ++t) {
      INFO("row " << r << " step " << t);
      REQUIRE(to_vector(alone(logits.narrow(0, r, 1)))[0] == together[t][r]);
    }
  }
  // Rows 0 and 2 share a seed but not logits; the default seeds are row_seed(seed, r).
  SamplingOptions by_index = o;
  by_index.row_seeds.clear();
  by_index.seed = 77;
  SamplingOptions explicit_seeds = o;
  explicit_seeds.row_seeds.clear();
  for (int64_t r = 0; r < 6; ++r) explicit_seeds.row_seeds.push_back(row_seed(77, r));
  Sampler a(by_index, test::device()), b(explicit_seeds, test::device());
  for (int t = 0; t < 5; ++t) REQUIRE(to_vector(a(logits)) == to_vector(b(logits)));
  // A different seed gives a different stream.
  SamplingOptions other = explicit_seeds;
  other.row_seeds[0] ^= 1;
  Sampler c(other, test::device()), d(explicit_seeds, test::device());
  int differ = 0;
  for (int t = 0; t < 20; ++t) differ += to_vector(c(logits))[0] != to_vector(d(logits))[0];
  CHECK(differ > 0);
}

TEST_CASE("Sampler errors name the argument") {
  SamplingOptions o;
  o.temperature = 1.0;
  o.row_seeds = {1, 2};
  Sampler s(o, test::device());
  const auto on = at::TensorOptions().device(test::device());
  CHECK_THROWS_WITH(s(at::zeros({3, 5}, on)), Catch::Contains("2 row_seeds for a batch of 3 rows"));
  Sampler t(SamplingOptions{1.0, 0, 1.0, 0, {}}, test::device());
  (void)t(at::zeros({2, 5}, on));
  CHECK_THROWS_WITH(t(at::zeros({3, 5}, on)), Catch::Contains("batch changed"));
  CHECK_THROWS_WITH(t(at::zeros({5}, on)), Catch::Contains("[batch, vocab]"));
}

TEST_CASE("In a generated batch, each row samples as the same prompt alone with its row seed") {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = 1000.0;
  Model m(c, at::TensorOptions().dtype(at::kFloat));
  init_weights(*m, 5, 0.3);
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9, 10}};
  GenerationOptions g;
  g.max_new_tokens = 10;
  g.use_model_eos = false;
  g.sampling.temperature = 1.2;
  g.sampling.seed = 2024;
  const auto batched = generate(*m, prompts, g);
  for (size_t r = 0; r < prompts.size(); ++r) {
    GenerationOptions alone = g;
    alone.sampling.row_seeds = {row_seed(2024, static_cast<int64_t>(r))};
    INFO("row " << r);
    CHECK(generate(*m, {prompts[r]}, alone).tokens[0] == batched.tokens[r]);
  }
}
