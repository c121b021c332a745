// Descriptive statistics, effect sizes and t-tests against scipy/numpy (stats_reference.json).
#include <mechlens/metrics/descriptive.hpp>
#include <mechlens/metrics/effect_size.hpp>
#include <mechlens/metrics/t_test.hpp>

#include "reference.hpp"

using namespace mechlens::metrics;
using mechlens_test::sample;
using mechlens_test::stats_reference;

namespace {
constexpr double kRel = 1e-8;

void check_descriptive(const Sample& x, const nlohmann::json& e) {
  CHECK_REL(mean(x), e.at("mean").get<double>(), 1e-12);
  CHECK_REL(sd(x), e.at("sd").get<double>(), 1e-10);
  CHECK_REL(sem(x), e.at("sem").get<double>(), 1e-10);
  const auto s = summarize(x);
  CHECK(s.n == x.size());
  CHECK_REL(s.sd, e.at("sd").get<double>(), 1e-10);
}

void check_t(const TestResult& r, const nlohmann::json& e) {
  REQUIRE(r.defined);
  CHECK_REL(r.statistic, e.at("statistic").get<double>(), kRel);
  CHECK_REL(r.df, e.at("df").get<double>(), kRel);
  CHECK_REL(r.p_value, e.at("p_value").get<double>(), kRel);
}
}  // namespace

TEST_CASE("Mean, sd and sem of the reference samples match numpy and scipy") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("paired")) {
    INFO("paired case " << c.at("name").get<std::string>());
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    check_descriptive(x, c.at("x_stats"));
    check_descriptive(y, c.at("y_stats"));
  }
  for (const auto& c : ref.at("independent")) {
    INFO("independent case " << c.at("name").get<std::string>());
    check_descriptive(sample(c.at("x")), c.at("x_stats"));
    check_descriptive(sample(c.at("y")), c.at("y_stats"));
  }
}

TEST_CASE("Cohen's d (average and pooled), Hedges' g and d_z match the numpy formulas") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto* section : {"paired", "independent"}) {
    for (const auto& c : ref.at(section)) {
      INFO(section << " case " << c.at("name").get<std::string>());
      const auto x = sample(c.at("x")), y = sample(c.at("y"));
      const auto& e = c.at("effect_sizes");
      CHECK_REL(cohen_d_average(x, y).checked(), e.at("cohen_d_average").get<double>(), 1e-10);
      CHECK_REL(cohen_d_pooled(x, y).checked(), e.at("cohen_d_pooled").get<double>(), 1e-10);
      CHECK_REL(hedges_g(x, y).checked(), e.at("hedges_g").get<double>(), 1e-10);
      CHECK_REL(hedges_correction(static_cast<double>(x.size() + y.size() - 2)),
                e.at("hedges_correction").get<double>(), 1e-12);
      if (e.contains("cohen_dz")) CHECK_REL(cohen_dz(x, y).checked(), e.at("cohen_dz").get<double>(), 1e-10);
      CHECK_REL(cohen_d_average(summarize(x), summarize(y)).checked(), e.at("cohen_d_average").get<double>(), 1e-10);
    }
  }
}

TEST_CASE("Paired and one-sample t-tests match scipy's ttest_rel and ttest_1samp for every alternative") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("paired")) {
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    const auto d = x - y;
    for (const auto* alt : {"two-sided", "less", "greater"}) {
      INFO("case " << c.at("name").get<std::string>() << ", alternative " << alt);
      const auto a = parse_alternative(alt);
      check_t(paired_t_test(x, y, a), c.at("ttest_rel").at(alt));
      check_t(one_sample_t_test(Sample(d), 0.0, a), c.at("ttest_1samp_d").at(alt));
    }
  }
}

TEST_CASE("Student and Welch t-tests match scipy's ttest_ind for every alternative") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("independent")) {
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    for (const auto* alt : {"two-sided", "less", "greater"}) {
      INFO("case " << c.at("name").get<std::string>() << ", alternative " << alt);
      const auto a = parse_alternative(alt);
      check_t(student_t_test(x, y, a), c.at("ttest_student").at(alt));
      check_t(welch_t_test(x, y, a), c.at("ttest_welch").at(alt));
    }
  }
}
