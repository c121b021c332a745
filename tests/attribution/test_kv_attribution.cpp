// Attribution over the KV cache (attribution/kv_attribution.hpp) against real splices of one entry
// at a time. With a metric linear in the last layer's attention output (hook_z), the value
// estimates are exact (attention is linear in values) and so are the AtP*-corrected key estimates
// (the metric is then linear in the pattern, and the correction recomputes the softmax): both
// within 1e-5 of the largest real effect. Alignment and errors are those of splice_kv.
#include <mechlens/attribution/kv_attribution.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

// The metric of a target state after an edit of its cache: one forward over the pending token.
double metric_after(Model& model, const PromptState& state, const Metric& metric) {
  at::NoGradGuard no_grad;
  PromptState s = state.clone(state.cache.length() + 1);
  ForwardOptions opt = mechlens::detail::pending_forward_options(s, s.cache, 1, false);
  return metric(model->forward(s.pending.view({s.batch(), 1}), opt)).item<double>();
}

enum class Part { Key, Value };

// The real effect of splicing one entry (layer l, KV head h, slot j) of `source` into `target`.
double real_effect(Model& model, const PromptState& target, const KVCache& source, const Metric& metric, Part part,
                   int64_t l, int64_t h, int64_t j, double base) {
  PromptState s = target.clone();
  at::Tensor dst = part == Part::Key ? s.cache.key_storage() : s.cache.value_storage();
  const at::Tensor& src = part == Part::Key ? source.key_storage() : source.value_storage();
  dst.select(0, l).select(1, h).select(1, j).copy_(src.select(0, l).select(1, h).select(1, j));
  return metric_after(model, s, metric) - base;
}
}  // namespace

TEST_CASE("KV attribution is exact for values, and for keys with the recomputed softmax, when the metric is linear in the attention output") {
  for (const char* name : {"llama_gqa_llama3", "mistral_swa"}) {
    INFO(name);
    Model model = load_model(model_dir(name), {at::kFloat, test::device()});
    const int64_t L = model->config().n_layers(), last = L - 1;
    const std::vector<int64_t> target_ids = {1, 17, 99, 4, 250, 31, 8, 77, 120};
    const std::vector<int64_t> source_ids = {1, 44, 5, 190, 23, 61, 200, 9, 140};
    PromptState target = prefill(*model, target_ids, 0);
    PromptState source = prefill(*model, source_ids, 0);

    // metric = w · (the last layer's attention output z of the pending token)
    at::Tensor captured;
    HookHandle grab = model->hooks().add_hook(hook_name(last, "attn.hook_z"),
                                              [&](const at::Tensor& z, const HookContext&) -> std::optional<at::Tensor> {
                                                captured = z;
                                                return std::nullopt;
                                              });
    at::manual_seed(7);
    at::Tensor w = at::randn({model->config().n_heads(), model->config().d_head()},
                             at::TensorOptions().dtype(at::kFloat)).to(model->device());
    Metric metric = [&](const at::Tensor&) { return (captured.select(1, captured.size(1) - 1) * w).sum(); };

    KVAttribution a = kv_attribution(*model, target, source.cache, metric);
    const int64_t n = target.cache.length();
    REQUIRE(a.keys.sizes() == at::IntArrayRef({L, 1, model->config().n_kv_heads(), n}));
    REQUIRE(a.spliced.all().item<bool>());
  REQUIRE(a.spliced.sizes() == at::IntArrayRef({1, n}));
    CHECK(at::allclose(a.both, a.keys + a.values));
    const double base = metric_after(model, target, metric);
    CHECK(std::abs(base - a.metric.item<double>()) <= 1e-5 * std::max(1.0, std::abs(base)));

    std::vector<double> real_k, real_v, est_k, est_v, est_k_linear;
    for (int64_t h = 0; h < model->config().n_kv_heads(); ++h)
      for (int64_t j = 0; j < n; ++j) {
        real_k.push_back(real_effect(model, target, source.cache, metric, Part::Key, last, h, j, base));
        real_v.push_back(real_effect(model, target, source.cache, metric, Part::Value, last, h, j, base));
        est_k.push_back(a.keys[last][0][h][j].item<double>());
        est_k_linear.push_back(a.keys_linear[last][0][h][j].item<double>());
        est_v.push_back(a.values[last][0][h][j].item<double>());
      }
    double scale = 0, worst_k = 0, worst_v = 0, worst_linear = 0;
    for (size_t i = 0; i < real_k.size(); ++i) scale = std::max({scale, std::abs(real_k[i]), std::abs(real_v[i])});
    for (size_t i = 0; i < real_k.size(); ++i) {
      worst_k = std::max(worst_k, std::abs(est_k[i] - real_k[i]));
      worst_v = std::max(worst_v, std::abs(est_v[i] - real_v[i]));
      worst_linear = std::max(worst_linear, std::abs(est_k_linear[i] - real_k[i]));
    }
    INFO("largest real effect " << scale << "; worst key error " << worst_k << " (plain gradient: " << worst_linear
                                << "), worst value error " << worst_v);
    REQUIRE(scale > 1e-3);  // the splices do something
    CHECK(worst_v <= 1e-5 * scale);
    CHECK(worst_k <= 1e-5 * scale);
    // The plain gradient is first order in the score shift only: the correction matters here.
    CHECK(worst_linear > 100 * worst_k);
  }
}

TEST_CASE("KV attribution aligns the source as splice_kv does, and refuses what it refuses") {
  Model model = load_model(model_dir("llama_tied"), {at::kFloat, test::device()});
  PromptState target = prefill(*model, std::vector<int64_t>{1, 17, 99, 4, 250, 31, 8}, 0);
  PromptState shorter = prefill(*model, std::vector<int64_t>{1, 44, 5, 190, 23}, 0);
  CHECK_THROWS_WITH(kv_attribution(*model, target, shorter.cache, token_logprob(3)),
                    Catch::Contains("need an alignment"));
  KVAttributionOptions o;
  o.splice.align = Align::Right;
  KVAttribution a = kv_attribution(*model, target, shorter.cache, token_logprob(3), o);
  // Target slots 0..5, source slots 0..3: right alignment pairs target 2..5 with source 0..3.
  REQUIRE(a.spliced.sizes() == at::IntArrayRef({1, 6}));
  CHECK_FALSE(a.spliced[0][0].item<bool>());
  CHECK_FALSE(a.spliced[0][1].item<bool>());
  for (int64_t j = 2; j < 6; ++j) CHECK(a.spliced[0][j].item<bool>());
  CHECK(a.both.narrow(3, 0, 2).abs().max().item<double>() == 0.0);
  CHECK(a.both.narrow(3, 2, 4).abs().max().item<double>() > 0.0);
  // The gradients cover every slot, aligned or not.
  CHECK(a.key_gradients.select(3, 0).abs().max().item<double>() > 0.0);

  // A teacher-forced continuation scores more tokens: its gradients differ from the first token's.
  o.continuation = at::tensor(std::vector<int64_t>{7, 9}, at::kLong);
  KVAttribution c = kv_attribution(*model, target, shorter.cache, continuation_logprob(o.continuation), o);
  CHECK_FALSE(at::allclose(c.value_gradients, a.value_gradients));
  o.continuation = at::tensor(std::vector<int64_t>{}, at::kLong);
  CHECK_THROWS_WITH(kv_attribution(*model, target, shorter.cache, token_logprob(3), o), Catch::Contains("continuation"));
  CHECK_FALSE(model->hooks().any_attached());
}

TEST_CASE("KV attribution of a batch, padded or not, gives each row its own estimates") {
  Model model = load_model(model_dir("llama_gqa_llama3"), {at::kFloat, test::device()});
  struct Case {
    std::vector<std::vector<int64_t>> targets, sources;
  };
  for (const Case& c : {Case{{{1, 17, 99, 4, 250, 31, 8}, {1, 60, 61, 62, 63, 64, 65}},
                              {{1, 44, 5, 190, 23, 61, 200}, {1, 90, 91, 92, 93, 94, 95}}},
                         // rows of different lengths: left-padded, aligned row by row on the right
                         Case{{{1, 17, 99, 4, 250, 31, 8, 77, 120}, {1, 60, 61, 62, 63}},
                              {{1, 44, 5, 190, 23, 61}, {1, 90, 91, 92, 93, 94, 95, 96}}}}) {
    const at::Tensor cont = at::tensor(std::vector<int64_t>{7, 9, 11, 13}, at::kLong).view({2, 2});
    KVAttributionOptions o;
    o.continuation = cont;
    o.splice.align = Align::Right;
    PromptState tb = prefill(*model, c.targets, 0), sb = prefill(*model, c.sources, 0);
    const int64_t n = tb.cache.length();
    KVAttribution rows = kv_attribution(*model, tb, sb.cache, continuation_logprob(cont), o);
    REQUIRE(rows.spliced.sizes() == at::IntArrayRef({2, n}));
    double metric_sum = 0;
    for (int64_t r = 0; r < 2; ++r) {
      INFO("row " << r << ", batch slots " << n);
      KVAttributionOptions one = o;
      one.continuation = cont.select(0, r);
      PromptState t = prefill(*model, c.targets[static_cast<size_t>(r)], 0);
      PromptState s = prefill(*model, c.sources[static_cast<size_t>(r)], 0);
      KVAttribution alone = kv_attribution(*model, t, s.cache, continuation_logprob(one.continuation), one);
      metric_sum += alone.metric.item<double>();
      // The row's real slots are the batch's last ones (left padding first).
      const int64_t m = t.cache.length();
      CHECK(test::max_rel_diff(rows.keys.select(1, r).narrow(2, n - m, m), alone.keys.select(1, 0)) <= 1e-5);
      CHECK(test::max_rel_diff(rows.values.select(1, r).narrow(2, n - m, m), alone.values.select(1, 0)) <= 1e-5);
      CHECK(test::max_rel_diff(rows.key_gradients.select(1, r).narrow(2, n - m, m), alone.key_gradients.select(1, 0)) <= 1e-5);
      CHECK(at::equal(rows.spliced[r].narrow(0, n - m, m), alone.spliced[0]));
      if (n > m) {  // padding: no estimate, no gradient
        CHECK_FALSE(rows.spliced[r].narrow(0, 0, n - m).any().item<bool>());
        CHECK(rows.both.select(1, r).narrow(2, 0, n - m).abs().max().item<double>() == 0.0);
        CHECK(rows.value_gradients.select(1, r).narrow(2, 0, n - m).abs().max().item<double>() == 0.0);
      }
    }
    // Rows are summed, so the batch's metric is the sum of the rows' own.
    CHECK(std::abs(rows.metric.item<double>() - metric_sum) <= 1e-5 * std::abs(metric_sum));
  }
}
