// Attribution patching over activations (attribution/attribution_patch.hpp) against real patches
// of one site at a time. With a metric linear in the last layer's attention output z, patching
// that layer's values is linear (exact estimate), and patching its queries or keys changes only
// the pattern, in which the metric is then linear: AtP*'s recomputed softmax is exact there. Each
// within 1e-5 of the largest real effect; also with right-aligned prompts of different lengths,
// where a key patched before rotary is re-rotated to the target's position.
#include <mechlens/attribution/attribution_patch.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

at::Tensor ids_of(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong).view({1, static_cast<int64_t>(v.size())}); }

// The metric after replacing one (position, head) — or one position, for hooks without heads — of
// `hook` by `value`.
double patched_metric(Model& model, const at::Tensor& ids, const Metric& metric, const std::string& hook,
                      int64_t pos, int64_t head, const at::Tensor& value) {
  at::NoGradGuard no_grad;
  HookHandle h = model->hooks().add_hook(hook, [&](const at::Tensor& x, const HookContext&) -> std::optional<at::Tensor> {
    at::Tensor y = x.clone();
    if (head >= 0) y.select(1, pos).select(1, head).copy_(value);
    else y.select(1, pos).copy_(value);
    return y;
  });
  return metric(model->forward(ids.to(model->device()))).item<double>();
}
}  // namespace

TEST_CASE("Attribution patching is exact for values, and for queries and keys with the recomputed softmax, under a metric linear in z") {
  Model model = load_model(model_dir("llama_gqa_llama3"), {at::kFloat, test::device()});
  const int64_t last = model->config().n_layers() - 1;
  at::Tensor captured;
  HookHandle grab = model->hooks().add_hook(hook_name(last, "attn.hook_z"),
                                            [&](const at::Tensor& z, const HookContext&) -> std::optional<at::Tensor> {
                                              captured = z;
                                              return std::nullopt;
                                            });
  at::manual_seed(11);
  at::Tensor w = at::randn({model->config().n_heads(), model->config().d_head()}).to(model->device());
  Metric metric = [&](const at::Tensor&) { return (captured.select(1, captured.size(1) - 1) * w).sum(); };

  struct Case {
    std::vector<int64_t> target, source;
    Align align;
  };
  for (const Case& c : {Case{{1, 17, 99, 4, 250, 31, 8, 77, 120}, {1, 44, 5, 190, 23, 61, 200, 9, 140}, Align::Exact},
                        Case{{1, 17, 99, 4, 250, 31, 8, 77, 120}, {1, 61, 200, 9, 140, 3}, Align::Right}}) {
    INFO("align " << align_name(c.align));
    const at::Tensor target = ids_of(c.target), source = ids_of(c.source);
    AttributionOptions o;
    o.align = c.align;
    o.sites = {hook_name(last, "v"), hook_name(last, "k"), hook_name(last, "rot_k"), hook_name(last, "q"),
               hook_name(last, "rot_q")};
    Attribution a = attribution_patch(*model, target, source, metric, o);
    o.recompute_attention = false;
    Attribution plain = attribution_patch(*model, target, source, metric, o);
    const double base = a.metric_target.item<double>();

    CacheOptions co;
    co.names = o.sites;
    ActivationCache src = model->run_with_cache(source, co).second;
    const int64_t nt = target.size(1), ns = source.size(1), shift = c.align == Align::Right ? nt - ns : 0;
    for (const auto& site : o.sites) {
      INFO(site);
      const at::Tensor est = a.estimates.at(site);  // [1, pos, heads]
      REQUIRE(est.sizes() == at::IntArrayRef({1, nt, src.get(site).size(2)}));
      double scale = 0, worst = 0, worst_plain = 0;
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t s = t - shift;
        for (int64_t h = 0; h < est.size(2); ++h) {
          double real = 0;
          if (s >= 0 && s < ns) {
            // Before rotary the source's value is rotated at the target's position when it lands
            // there, as a patch does; after rotary it keeps the source's rotation.
            real = patched_metric(model, target, metric, site, t, h, src.get(site)[0][s][h]) - base;
          }
          scale = std::max(scale, std::abs(real));
          worst = std::max(worst, std::abs(est[0][t][h].item<double>() - real));
          worst_plain = std::max(worst_plain, std::abs(plain.estimates.at(site)[0][t][h].item<double>() - real));
        }
      }
      INFO("largest real effect " << scale << ", worst error " << worst << " (plain gradient " << worst_plain << ")");
      REQUIRE(scale > 1e-3);
      CHECK(worst <= 1e-5 * scale);
      if (site == hook_name(last, "v")) CHECK(worst_plain <= 1e-5 * scale);  // values: the plain estimate is exact
      else CHECK(worst_plain > 100 * worst);                                 // q / k: the correction matters
    }
    for (int64_t t = 0; t < nt; ++t) CHECK(a.aligned[t].item<bool>() == (t - shift >= 0));
  }
}

TEST_CASE("Attribution estimates are the metric's derivative along the patch at every site") {
  // A whole-position patch of a random model's residual stream is far from linear, so the
  // estimate is checked as what it is: the derivative of the metric along the patch. Moving the
  // target's activation a step eps toward the source's and away from it changes the metric by
  // 2 eps * estimate up to O(eps^3) (a central difference) and float32 rounding: within 1 % of
  // the largest estimate at eps = 1e-2.
  Model model = load_model(model_dir("llama_tied"), {at::kFloat, test::device()});
  const at::Tensor target = ids_of({1, 17, 99, 4, 250, 31, 8, 77, 120}), source = ids_of({1, 44, 5, 190, 23, 61, 200, 9, 140});
  Metric metric = logit_difference(17, 99);
  AttributionOptions o;
  o.sites = {"blocks.*.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.2.mlp.hook_post"};
  o.recompute_attention = false;
  Attribution a = attribution_patch(*model, target, source, metric, o);
  REQUIRE(a.estimates.size() == static_cast<size_t>(model->config().n_layers() + 2));
  CacheOptions co;
  co.names = o.sites;
  ActivationCache src = model->run_with_cache(source, co).second;
  ActivationCache tgt = model->run_with_cache(target, co).second;
  const double eps = 1e-2;
  for (const auto& [hook, est] : a.estimates) {
    INFO(hook);
    const bool heads = est.dim() == 3;
    double scale = 0, worst = 0;
    for (int64_t t = 0; t < target.size(1); ++t)
      for (int64_t h = 0; h < (heads ? est.size(2) : 1); ++h) {
        at::Tensor from = heads ? tgt.get(hook)[0][t][h] : tgt.get(hook)[0][t];
        at::Tensor to = heads ? src.get(hook)[0][t][h] : src.get(hook)[0][t];
        const int64_t head = heads ? h : -1;
        const double up = patched_metric(model, target, metric, hook, t, head, from + eps * (to - from));
        const double down = patched_metric(model, target, metric, hook, t, head, from - eps * (to - from));
        const double e = heads ? est[0][t][h].item<double>() : est[0][t].item<double>();
        scale = std::max(scale, std::abs(e));
        worst = std::max(worst, std::abs((up - down) / (2 * eps) - e));
      }
    INFO("largest estimate " << scale << ", worst |central difference - estimate| " << worst);
    REQUIRE(scale > 1e-2);
    CHECK(worst <= 0.01 * scale);
  }
  // Layer 0's first position is the BOS in both prompts: nothing to patch.
  CHECK(a.estimates.at("blocks.0.hook_resid_pre")[0][0].item<double>() == 0.0);
  CHECK(a.estimates.at("blocks.1.attn.hook_z").sizes() == at::IntArrayRef({1, target.size(1), model->config().n_heads()}));
}

TEST_CASE("Attribution patching refuses what cannot be estimated, naming it") {
  Model model = load_model(model_dir("llama_tied"), {at::kFloat, test::device()});
  AttributionOptions o;
  CHECK_THROWS_WITH(attribution_patch(*model, ids_of({1, 2, 3}), ids_of({1, 4, 5}), token_logprob(3), o),
                    Catch::Contains("no sites"));
  o.sites = {"blocks.*.hook_resid_prex"};
  CHECK_THROWS_WITH(attribution_patch(*model, ids_of({1, 2, 3}), ids_of({1, 4, 5}), token_logprob(3), o),
                    Catch::Contains("hook_resid_prex"));
  o.sites = {"blocks.0.hook_resid_pre"};
  CHECK_THROWS_WITH(attribution_patch(*model, ids_of({1, 2, 3}), ids_of({1, 4}), token_logprob(3), o),
                    Catch::Contains("need an alignment"));
  CHECK_FALSE(model->hooks().any_attached());
}

TEST_CASE("Attribution patching of a batch gives each row its own estimates; a batch-1 source serves every row") {
  Model model = load_model(model_dir("llama_gqa_llama3"), {at::kFloat, test::device()});
  const at::Tensor targets = at::tensor(std::vector<int64_t>{1, 17, 99, 4, 250, 31, 1, 60, 61, 62, 63, 64}, at::kLong).view({2, 6});
  const at::Tensor source = ids_of({1, 44, 5, 190, 23, 61});
  AttributionOptions o;
  o.sites = {"blocks.1.hook_resid_pre", "blocks.2.attn.hook_rot_k", "blocks.3.attn.hook_v"};
  Attribution both = attribution_patch(*model, targets, source, token_logprob(7), o);
  for (int64_t r = 0; r < 2; ++r) {
    INFO("row " << r);
    Attribution alone = attribution_patch(*model, targets.narrow(0, r, 1), source, token_logprob(7), o);
    for (const auto& site : o.sites) {
      INFO(site);
      CHECK(test::max_rel_diff(both.estimates.at(site).narrow(0, r, 1), alone.estimates.at(site)) <= 1e-5);
    }
  }
}
