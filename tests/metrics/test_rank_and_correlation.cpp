// Wilcoxon signed-rank, Mann-Whitney U, Pearson and Spearman against scipy (stats_reference.json).
// p-values of exact and permutation distributions agree to 1e-12 relative; normal
// approximations and t/beta distributions to 1e-8.
#include <mechlens/metrics/correlation.hpp>
#include <mechlens/metrics/mann_whitney.hpp>
#include <mechlens/metrics/wilcoxon.hpp>

#include "reference.hpp"

using namespace mechlens::metrics;
using mechlens_test::sample;
using mechlens_test::stats_reference;

namespace {
constexpr double kExact = 1e-12;
constexpr double kApprox = 1e-8;

bool scipy_at_least_1_15(const nlohmann::json& ref) {
  const auto v = ref.at("scipy_version").get<std::string>();
  int major = 0, minor = 0;
  std::sscanf(v.c_str(), "%d.%d", &major, &minor);
  return std::make_pair(major, minor) >= std::make_pair(1, 15);
}
}  // namespace

TEST_CASE("The reference was made with a scipy whose wilcoxon 'auto' rule mechlens follows") {
  // scipy 1.15 added the exact permutation branch for n <= 13 with ties or zeros; the auto
  // comparisons below assume it.
  CHECK(scipy_at_least_1_15(stats_reference("stats_reference.json")));
}

TEST_CASE("Wilcoxon signed-rank matches scipy's exact, asymptotic, permutation and auto p-values") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("paired")) {
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    const bool clean = !c.at("has_zeros").get<bool>() && !c.at("has_ties").get<bool>();
    for (const auto* alt : {"two-sided", "less", "greater"}) {
      INFO("case " << c.at("name").get<std::string>() << ", alternative " << alt);
      const auto a = parse_alternative(alt);
      const auto& w = c.at("wilcoxon").at(alt);

      const auto asym = wilcoxon_signed_rank(x, y, a, PValueMethod::Asymptotic);
      REQUIRE(asym.defined);
      CHECK_REL(asym.statistic, w.at("asymptotic").at("statistic").get<double>(), 1e-12);
      CHECK_REL(asym.p_value, w.at("asymptotic").at("p_value").get<double>(), kApprox);
      // scipy reports z = -|z| for two-sided tests.
      const double z_expected = w.at("asymptotic").at("z").get<double>();
      CHECK_REL(a == Alternative::TwoSided ? -std::abs(asym.z) : asym.z, z_expected, kApprox);

      if (w.contains("exact")) {
        REQUIRE(clean);
        const auto ex = wilcoxon_signed_rank(x, y, a, PValueMethod::Exact);
        CHECK_REL(ex.statistic, w.at("exact").at("statistic").get<double>(), 1e-12);
        CHECK_REL(ex.p_value, w.at("exact").at("p_value").get<double>(), kExact);
        CHECK(ex.method == "exact");
      }
      if (w.contains("permutation_p")) {
        const auto perm = wilcoxon_signed_rank(x, y, a, PValueMethod::Permutation);
        CHECK_REL(perm.p_value, w.at("permutation_p").get<double>(), kExact);
      }
      const auto au = wilcoxon_signed_rank(x, y, a);
      CHECK_REL(au.statistic, w.at("auto").at("statistic").get<double>(), 1e-12);
      const bool auto_is_exact = x.size() <= 50 && (clean || x.size() <= 13);
      CHECK_REL(au.p_value, w.at("auto").at("p_value").get<double>(), auto_is_exact ? kExact : kApprox);
      CHECK(au.n == x.size());
    }
  }
}

TEST_CASE("Wilcoxon auto picks the exact, permutation or normal method by scipy's rule") {
  // n = 8, no ties: exact. Ties with n <= 13: permutation. n = 20 with ties: normal.
  const auto clean = wilcoxon_signed_rank(mechlens_test::sample({1.5, -0.25, 2.0, 3.5, 4.0, -1.0, 0.75, 5.0}));
  CHECK(clean.method == "exact");
  const auto tied = wilcoxon_signed_rank(mechlens_test::sample({1, 1, 2, -2, 3, 0, 4}));
  CHECK(tied.method.find("permutation") != std::string::npos);
  Sample big = xt::empty<double>({20});
  for (std::size_t i = 0; i < 20; ++i) big(i) = static_cast<double>(i % 5) - 1.0;
  const auto normal = wilcoxon_signed_rank(big);
  CHECK(normal.method.find("normal approximation with tie correction") != std::string::npos);
}

TEST_CASE("Mann-Whitney U matches scipy's exact, asymptotic and auto p-values") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("independent")) {
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    const bool ties = c.at("has_ties").get<bool>();
    for (const auto* alt : {"two-sided", "less", "greater"}) {
      INFO("case " << c.at("name").get<std::string>() << ", alternative " << alt);
      const auto a = parse_alternative(alt);
      const auto& m = c.at("mannwhitneyu").at(alt);
      const auto asym = mann_whitney_u(x, y, a, PValueMethod::Asymptotic);
      CHECK_REL(asym.statistic, m.at("asymptotic").at("statistic").get<double>(), 1e-12);
      CHECK_REL(asym.p_value, m.at("asymptotic").at("p_value").get<double>(), kApprox);
      const auto nocc = mann_whitney_u(x, y, a, PValueMethod::Asymptotic, false);
      CHECK_REL(nocc.p_value, m.at("asymptotic_no_continuity").at("p_value").get<double>(), kApprox);
      if (m.contains("exact")) {
        const auto ex = mann_whitney_u(x, y, a, PValueMethod::Exact);
        CHECK_REL(ex.p_value, m.at("exact").at("p_value").get<double>(), kExact);
      }
      const auto au = mann_whitney_u(x, y, a);
      const bool auto_exact = std::min(x.size(), y.size()) <= 8 && !ties;
      CHECK(au.method == (auto_exact ? std::string("exact") : au.method));
      CHECK_REL(au.p_value, m.at("auto").at("p_value").get<double>(), auto_exact ? kExact : kApprox);
      CHECK(au.n == x.size());
      CHECK(au.n2 == y.size());
    }
  }
}

TEST_CASE("Pearson and Spearman correlations and p-values match scipy") {
  const auto& ref = stats_reference("stats_reference.json");
  for (const auto& c : ref.at("correlation")) {
    const auto x = sample(c.at("x")), y = sample(c.at("y"));
    for (const auto* alt : {"two-sided", "less", "greater"}) {
      INFO("case " << c.at("name").get<std::string>() << ", alternative " << alt);
      const auto a = parse_alternative(alt);
      const auto p = pearson(x, y, a);
      REQUIRE(p.defined);
      CHECK_REL(p.statistic, c.at("pearson").at(alt).at("statistic").get<double>(), 1e-12);
      CHECK_REL(p.p_value, c.at("pearson").at(alt).at("p_value").get<double>(), kApprox);
      const auto s = spearman(x, y, a);
      REQUIRE(s.defined);
      CHECK_REL(s.statistic, c.at("spearman").at(alt).at("statistic").get<double>(), 1e-12);
      CHECK_REL(s.p_value, c.at("spearman").at(alt).at("p_value").get<double>(), kApprox);
      CHECK(s.df == static_cast<double>(x.size()) - 2.0);
    }
  }
}
