// Degenerate input never yields a silent number: NaN/inf throw ArgumentError naming the
// argument; too few values, zero variance or all-zero differences give undefined results.
#include <mechlens/metrics/statistics.hpp>

#include <limits>

#include "reference.hpp"

using namespace mechlens::metrics;
using mechlens::ArgumentError;
using mechlens_test::sample;

namespace {
const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();
}  // namespace

TEST_CASE("A NaN or infinity in any input throws ArgumentError naming the argument and index") {
  const auto good = sample({1, 2, 3, 4});
  const auto bad = sample({1, kNan, 3, 4});
  const auto inf = sample({1, 2, kInf, 4});
  CHECK_THROWS_WITH(mechlens::metrics::mean(bad), Catch::Contains("'x'") && Catch::Contains("element 1"));
  CHECK_THROWS_AS(paired_t_test(good, bad), ArgumentError);
  CHECK_THROWS_WITH(welch_t_test(good, inf), Catch::Contains("'y'") && Catch::Contains("element 2"));
  CHECK_THROWS_AS(wilcoxon_signed_rank(bad, good), ArgumentError);
  CHECK_THROWS_AS(mann_whitney_u(good, bad), ArgumentError);
  CHECK_THROWS_AS(spearman(good, inf), ArgumentError);
  CHECK_THROWS_AS(pearson(bad, good), ArgumentError);
  CHECK_THROWS_AS(cohen_d_average(good, bad), ArgumentError);
  CHECK_THROWS_AS(paired_permutation_test(bad, good), ArgumentError);
  CHECK_THROWS_AS(holm(bad), ArgumentError);
  CHECK_THROWS_AS(transfer_efficiency(good, good, bad), ArgumentError);
  CHECK_THROWS_AS(bootstrap_ci(bad, [](const Sample& s) { return mechlens::metrics::mean(s); }), ArgumentError);
}

TEST_CASE("Paired routines refuse samples of different lengths and say both lengths") {
  CHECK_THROWS_WITH(paired_t_test(sample({1, 2, 3}), sample({1, 2})),
                    Catch::Contains("same length") && Catch::Contains("3 and 2"));
  CHECK_THROWS_AS(wilcoxon_signed_rank(sample({1, 2, 3}), sample({1, 2})), ArgumentError);
  CHECK_THROWS_AS(cohen_dz(sample({1, 2, 3}), sample({1, 2})), ArgumentError);
  CHECK_THROWS_AS(pearson(sample({1, 2, 3}), sample({1, 2})), ArgumentError);
}

TEST_CASE("Scalar statistics throw for too few values instead of returning NaN") {
  CHECK_THROWS_AS(mechlens::metrics::mean(Sample(xt::empty<double>({0}))), ArgumentError);
  CHECK_THROWS_WITH(sd(sample({3})), Catch::Contains("at least 2"));
  CHECK_THROWS_AS(sem(sample({3})), ArgumentError);
  CHECK_THROWS_AS(summarize(sample({3})), ArgumentError);
  CHECK_THROWS_AS(hedges_correction(1.0), ArgumentError);
}

TEST_CASE("Tests on too few values or zero variance are undefined, with a reason, and never silent") {
  const auto one = sample({1.0});
  const auto flat = sample({2, 2, 2, 2});
  const auto other = sample({1, 2, 3, 5});

  auto r = paired_t_test(flat, sample({1, 1, 1, 1}));  // differences all equal: zero variance
  CHECK_FALSE(r.defined);
  CHECK(std::isnan(r.p_value));
  CHECK(r.reason.find("zero variance") != std::string::npos);
  CHECK_THROWS_WITH(r.checked_p_value(), Catch::Contains("zero variance"));

  CHECK_FALSE(one_sample_t_test(one).defined);
  CHECK_FALSE(student_t_test(one, other).defined);
  CHECK_FALSE(welch_t_test(flat, flat).defined);
  CHECK(student_t_test(flat, other).defined);  // one flat sample is fine

  CHECK_FALSE(wilcoxon_signed_rank(flat, flat).defined);
  CHECK(wilcoxon_signed_rank(flat, flat).reason.find("zero") != std::string::npos);
  CHECK_FALSE(mann_whitney_u(flat, flat, Alternative::TwoSided, PValueMethod::Asymptotic).defined);
  CHECK_FALSE(mann_whitney_u(Sample(xt::empty<double>({0})), other).defined);
  CHECK_FALSE(pearson(flat, other).defined);
  CHECK_FALSE(spearman(flat, other).defined);
  CHECK_FALSE(pearson(sample({1, 2}), sample({2, 1})).defined);
  CHECK_FALSE(paired_permutation_test(flat, flat).defined);

  CHECK_FALSE(cohen_d_average(flat, flat).defined);
  CHECK_FALSE(cohen_d_pooled(one, other).defined);
  CHECK_FALSE(hedges_g(flat, flat).defined);
  CHECK_FALSE(cohen_dz(other, other + 1.0).defined);
  CHECK_THROWS_AS(cohen_dz(other, other + 1.0).checked(), ArgumentError);
  CHECK_FALSE(cohen_d_average_from_summary(1.0, 0.0, 0.0).defined);
}

TEST_CASE("Transfer efficiency is undefined when recursive and baseline do not differ") {
  CHECK_FALSE(transfer_efficiency_from_means(1.0, 1.0, 2.0).defined);
  const auto same = sample({1, 2, 3, 4});
  const auto te = transfer_efficiency(same, same, sample({2, 3, 4, 5}));
  CHECK_FALSE(te.value.defined);
  CHECK_FALSE(te.ci.defined);
  CHECK_FALSE(te.ci.reason.empty());
}

TEST_CASE("A bootstrap whose statistic is undefined on some resample says so") {
  // Ratio of means with a denominator sample that resamples to all zeros now and then.
  BootstrapOptions opt;
  opt.n_resamples = 500;
  const auto ci = bootstrap_ci(sample({1, 2, 3}), sample({0, 0, 1}),
                               [](const Sample& a, const Sample& b) {
                                 return mechlens::metrics::mean(a) / mechlens::metrics::mean(b);
                               },
                               opt);
  CHECK_FALSE(ci.defined);
  CHECK(ci.reason.find("not finite") != std::string::npos);
  CHECK(std::isnan(ci.low));
  // A constant sample: BCa undefined (all replicates equal the estimate's side).
  const auto flat = bootstrap_ci(sample({2, 2, 2, 2}), [](const Sample& s) { return mechlens::metrics::mean(s); }, opt);
  CHECK_FALSE(flat.defined);
  CHECK_THROWS_AS(bootstrap_ci(sample({1}), [](const Sample& s) { return s(0); }), ArgumentError);
  opt.confidence_level = 1.0;
  CHECK_THROWS_AS(bootstrap_ci(sample({1, 2, 3}), [](const Sample& s) { return s(0); }, opt), ArgumentError);
}

TEST_CASE("Exact methods refuse sizes whose distributions would be too costly") {
  Sample big = xt::empty<double>({600});
  for (std::size_t i = 0; i < big.size(); ++i) big(i) = static_cast<double>(i) - 299.5;
  CHECK_THROWS_WITH(wilcoxon_signed_rank(big, Alternative::TwoSided, PValueMethod::Exact),
                    Catch::Contains("Asymptotic"));
  CHECK(wilcoxon_signed_rank(big).defined);  // auto: normal approximation
  CHECK_THROWS_AS(mann_whitney_u(big, big + 0.25, Alternative::TwoSided, PValueMethod::Exact), ArgumentError);
  CHECK_THROWS_AS(mann_whitney_u(big, big, Alternative::TwoSided, PValueMethod::Permutation), ArgumentError);
  CHECK_THROWS_AS(parse_alternative("two_sided"), ArgumentError);
}
