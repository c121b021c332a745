// Bootstrap intervals, the paired permutation test, Holm / Benjamini-Hochberg and transfer
// efficiency against scipy/numpy (bootstrap_reference.json, stats_reference.json), plus the
// DEC7 study's published numbers as a sanity table.
#include <mechlens/metrics/bootstrap.hpp>
#include <mechlens/metrics/corrections.hpp>
#include <mechlens/metrics/descriptive.hpp>
#include <mechlens/metrics/effect_size.hpp>
#include <mechlens/metrics/permutation.hpp>
#include <mechlens/metrics/transfer_efficiency.hpp>

#include <algorithm>
#include <random>

#include "reference.hpp"

using namespace mechlens::metrics;
using mechlens_test::sample;
using mechlens_test::stats_reference;

namespace {

double median_of(const Sample& s) {
  std::vector<double> v(s.begin(), s.end());
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

MultiSampleStatistic statistic_named(const std::string& name) {
  if (name == "mean") return [](const std::vector<Sample>& s) { return mean(s[0]); };
  if (name == "median") return [](const std::vector<Sample>& s) { return median_of(s[0]); };
  if (name == "difference_of_means") return [](const std::vector<Sample>& s) { return mean(s[0]) - mean(s[1]); };
  if (name == "transfer_efficiency")
    return [](const std::vector<Sample>& s) {
      const double b = mean(s[0]);
      return (mean(s[2]) - b) / (mean(s[1]) - b);
    };
  FAIL("unknown statistic " << name);
  return {};
}

ResampleIndices indices_from(const nlohmann::json& j) {
  ResampleIndices out;
  for (const auto& m : j) {
    const std::size_t rows = m.size(), cols = m.at(0).size();
    xt::xtensor<std::size_t, 2> idx = xt::empty<std::size_t>({rows, cols});
    for (std::size_t b = 0; b < rows; ++b)
      for (std::size_t i = 0; i < cols; ++i) idx(b, i) = m[b][i].get<std::size_t>();
    out.push_back(std::move(idx));
  }
  return out;
}

}  // namespace

TEST_CASE("Bootstrap percentile and BCa intervals on numpy's resamples match scipy.stats.bootstrap") {
  const auto& ref = stats_reference("bootstrap_reference.json");
  REQUIRE(ref.at("cases").size() == 4);
  for (const auto& c : ref.at("cases")) {
    const std::string name = c.at("name");
    std::vector<Sample> samples;
    for (const auto& s : c.at("samples")) samples.push_back(sample(s));
    const auto idx = indices_from(c.at("indices"));
    const bool paired = c.at("paired");
    const auto stat = statistic_named(c.at("statistic"));
    for (const auto& iv : c.at("intervals")) {
      const double level = iv.at("confidence_level");
      const std::string method = iv.at("method");
      INFO("case " << name << ", " << method << " at " << level);
      const auto ci = bootstrap_ci_from_indices(samples, paired, stat, idx, level,
                                                method == "bca" ? BootstrapMethod::BCa : BootstrapMethod::Percentile);
      REQUIRE(ci.defined);
      CHECK_REL(ci.estimate, c.at("estimate").get<double>(), 1e-12);
      CHECK_REL(ci.standard_error, c.at("standard_error").get<double>(), 1e-10);
      CHECK_REL(ci.low, iv.at("low").get<double>(), 1e-10);
      CHECK_REL(ci.high, iv.at("high").get<double>(), 1e-10);
      // numpy's re-implementation above and scipy itself agree on these resamples.
      CHECK_REL(ci.low, iv.at("scipy").at("low").get<double>(), 1e-10);
      CHECK_REL(ci.high, iv.at("scipy").at("high").get<double>(), 1e-10);
      CHECK_REL(ci.standard_error, iv.at("scipy").at("standard_error").get<double>(), 1e-10);
      CHECK(ci.n_resamples == c.at("n_resamples").get<std::size_t>());
    }
  }
}

TEST_CASE("A seeded bootstrap is reproducible and covers the mean like the normal interval") {
  std::mt19937_64 gen(5);
  std::normal_distribution<double> normal(10.0, 2.0);
  Sample x = xt::empty<double>({400});
  for (auto& v : x) v = normal(gen);
  BootstrapOptions opt;
  opt.seed = 42;
  opt.n_resamples = 4000;
  const auto mean_fn = [](const Sample& s) { return mechlens::metrics::mean(s); };
  const auto a = bootstrap_ci(x, mean_fn, opt);
  const auto b = bootstrap_ci(x, mean_fn, opt);
  REQUIRE(a.defined);
  CHECK(a.low == b.low);
  CHECK(a.high == b.high);
  opt.seed = 43;
  const auto c = bootstrap_ci(x, mean_fn, opt);
  CHECK(c.low != a.low);
  // For the mean of 400 normal values the bootstrap SE is close to sd/sqrt(n) and the 95 %
  // interval close to mean ± 1.96 SE (Monte Carlo error of B = 4000 is about 2 %).
  const double se = mechlens::metrics::sem(x);
  CHECK(std::abs(a.standard_error / se - 1.0) < 0.06);
  CHECK(std::abs((a.high - a.low) / (2 * 1.959963984540054 * se) - 1.0) < 0.08);
  CHECK(a.low < mechlens::metrics::mean(x));
  CHECK(a.high > mechlens::metrics::mean(x));
  opt.method = BootstrapMethod::Percentile;
  const auto p = bootstrap_ci(x, mean_fn, opt);
  CHECK(p.method == BootstrapMethod::Percentile);
  CHECK(std::abs((p.high - p.low) / (a.high - a.low) - 1.0) < 0.1);
}

TEST_CASE("Bootstrap indices are uniform over each sample and drawn sample by sample") {
  const auto idx = bootstrap_indices({3, 5}, 3000, 7);
  REQUIRE(idx.size() == 2);
  CHECK(idx[0].shape()[0] == 3000);
  CHECK(idx[0].shape()[1] == 3);
  CHECK(idx[1].shape()[1] == 5);
  std::vector<int> counts(5, 0);
  for (auto v : idx[1]) ++counts.at(v);
  for (int cnt : counts) CHECK(std::abs(cnt - 3000) < 250);  // 15000 draws over 5 values
  const auto again = bootstrap_indices({3, 5}, 3000, 7);
  CHECK(again[1] == idx[1]);
}

TEST_CASE("The paired permutation test matches scipy's exact sign-flip p-values") {
  const auto& ref = stats_reference("stats_reference.json");
  int checked = 0;
  for (const auto& c : ref.at("paired")) {
    if (c.at("permutation_mean").empty()) continue;
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    for (const auto* alt : {"two-sided", "less", "greater"}) {
      INFO("case " << c.at("name").get<std::string>() << ", alternative " << alt);
      PermutationOptions opt;
      opt.alternative = parse_alternative(alt);
      opt.n_resamples = std::size_t{1} << 14;  // exact for n <= 14
      const auto r = paired_permutation_test(x, y, opt);
      REQUIRE(r.defined);
      CHECK(r.method.find("exact") == 0);
      CHECK_REL(r.statistic, c.at("permutation_mean").at(alt).at("statistic").get<double>(), 1e-12);
      CHECK_REL(r.p_value, c.at("permutation_mean").at(alt).at("p_value").get<double>(), 1e-12);
      ++checked;
    }
  }
  CHECK(checked >= 12);
}

TEST_CASE("The Monte Carlo permutation test agrees with the exact one within its sampling error") {
  const auto& ref = stats_reference("stats_reference.json");
  const auto& c = ref.at("paired").at(0);  // small_normal_n8
  REQUIRE(c.at("name") == "small_normal_n8");
  const auto x = sample(c.at("x")), y = sample(c.at("y"));
  PermutationOptions opt;
  opt.n_resamples = 200;  // below 2^8 = 256, so the test samples sign patterns at random
  const auto mc = paired_permutation_test(x, y, opt);
  CHECK(mc.method.find("Monte Carlo") == 0);
  const double exact_p = c.at("permutation_mean").at("two-sided").at("p_value").get<double>();
  // Binomial standard error of a p-value from 200 draws: sqrt(p(1-p)/200) <= 0.036.
  CHECK(std::abs(mc.p_value - exact_p) < 4 * 0.036);
  // The same seed gives the same p; the p of a Monte Carlo test is (k + 1)/(B + 1).
  CHECK(paired_permutation_test(x, y, opt).p_value == mc.p_value);
  const double k = mc.p_value * 201.0 / 2.0;  // two-sided: 2 (k + 1)/201 with k + 1 integral
  CHECK(std::abs(k - std::round(k)) < 1e-9);
}

TEST_CASE("Holm and Benjamini-Hochberg adjusted p-values match numpy, scipy and statsmodels") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("corrections")) {
    INFO("case " << c.at("name").get<std::string>());
    const auto p = sample(c.at("p"));
    const auto h = holm(p), bh = benjamini_hochberg(p);
    REQUIRE(h.size() == p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
      CHECK_REL(h(i), c.at("holm").at(i).get<double>(), 1e-12);
      CHECK_REL(bh(i), c.at("bh").at(i).get<double>(), 1e-12);
      if (c.contains("bh_scipy")) CHECK_REL(bh(i), c.at("bh_scipy").at(i).get<double>(), 1e-12);
      if (c.contains("holm_statsmodels")) CHECK_REL(h(i), c.at("holm_statsmodels").at(i).get<double>(), 1e-12);
    }
  }
  CHECK_THROWS_AS(holm(mechlens_test::sample({0.1, 1.5})), mechlens::ArgumentError);
  CHECK_THROWS_AS(benjamini_hochberg(Sample(xt::empty<double>({0}))), mechlens::ArgumentError);
}

TEST_CASE("Transfer efficiency of the reference pairs matches numpy with scipy's paired BCa interval") {
  const auto& ref = stats_reference("bootstrap_reference.json");
  const auto& c = ref.at("cases").at(3);
  REQUIRE(c.at("name") == "transfer_efficiency_n30");
  const auto b = sample(c.at("samples").at(0)), r = sample(c.at("samples").at(1)), p = sample(c.at("samples").at(2));
  BootstrapOptions opt;
  opt.n_resamples = 2000;
  opt.seed = 11;
  const auto te = transfer_efficiency(b, r, p, opt);
  REQUIRE(te.value.defined);
  CHECK_REL(te.value.value, c.at("estimate").get<double>(), 1e-12);
  REQUIRE(te.ci.defined);
  CHECK(te.ci.method == BootstrapMethod::BCa);
  CHECK(te.n_pairs == 30);
  // Our own resamples differ from numpy's, so the interval agrees with scipy's only within
  // Monte Carlo error; the exact agreement on numpy's resamples is tested above.
  const auto& bca95 = c.at("intervals").at(1);
  REQUIRE(bca95.at("method") == "bca");
  CHECK(std::abs(te.ci.low - bca95.at("low").get<double>()) < 0.1);
  CHECK(std::abs(te.ci.high - bca95.at("high").get<double>()) < 0.1);
}

TEST_CASE("The study's sanity table: d from its means and sds, and transfer efficiency") {
  const auto& s = stats_reference("stats_reference.json").at("study_sanity");
  // Sufficiency: patched (4.11 ± 4.38) vs baseline (0.35 ± 1.11), reported delta 3.78.
  const auto d = cohen_d_average_from_summary(3.78, 4.38, 1.11).checked();
  CHECK_REL(d, s.at("sufficiency").at("d_average").get<double>(), 1e-12);
  CHECK(d == Approx(1.18).margin(0.005));
  // From the table's rounded means: delta 3.76.
  Summary patched{100, 4.11, 4.38}, baseline{100, 0.35, 1.11};
  CHECK(cohen_d_average(patched, baseline).checked() == Approx(3.76 / std::sqrt((4.38 * 4.38 + 1.11 * 1.11) / 2)));
  const auto te = transfer_efficiency_from_means(0.35, 6.27, 4.11).checked();
  CHECK_REL(te, s.at("transfer_efficiency").at("value").get<double>(), 1e-12);
  CHECK(te == Approx(0.635).margin(0.0005));
  // The necessity row recomputed from the table (the write-up's -5.42 / -1.43 do not follow
  // from its own means and sds).
  Summary blocked{100, 1.50, 4.41}, recursive{100, 6.27, 4.76};
  CHECK_REL(cohen_d_average(blocked, recursive).checked(),
            s.at("necessity_from_table").at("d_average").get<double>(), 1e-12);
}
