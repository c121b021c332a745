// Hook points, registries, handles, Hooked<M> and the activation cache on small hand-built cases.
#include <torch/nn/modules/linear.h>

#include <mechlens/hooks/activation_cache.hpp>
#include <mechlens/hooks/hooked.hpp>
#include <mechlens/hooks/intervention.hpp>

using namespace mechlens;

TEST_CASE("Globs match any run of characters and exact names must exist") {
  REQUIRE(mechlens::detail::glob_match("blocks.*.attn.hook_v", "blocks.12.attn.hook_v"));
  REQUIRE_FALSE(mechlens::detail::glob_match("blocks.*.attn.hook_v", "blocks.12.attn.hook_rot_k"));
  REQUIRE(mechlens::detail::glob_match("*", "hook_embed"));
  REQUIRE(mechlens::detail::glob_match("blocks.1?.hook_resid_post", "blocks.13.hook_resid_post"));
  REQUIRE_FALSE(mechlens::detail::glob_match("blocks.1?.hook_resid_post", "blocks.1.hook_resid_post"));
}

TEST_CASE("A hook handle detaches its hooks when it goes out of scope") {
  HookRegistry reg;
  HookPoint& p = reg.add_point("site", 0, {kDimBatch, kDimPos});
  {
    auto h = reg.add_hook("site", [](const at::Tensor& x, const HookContext&) { return std::optional<at::Tensor>(x * 2); });
    REQUIRE(p.active());
    REQUIRE(p(at::ones({1, 2})).sum().item<double>() == 4.0);
  }
  REQUIRE_FALSE(p.active());
  REQUIRE(p(at::ones({1, 2})).sum().item<double>() == 2.0);
}

TEST_CASE("A hook returning the wrong shape is an error naming the hook and both shapes") {
  HookRegistry reg;
  HookPoint& p = reg.add_point("blocks.0.hook_resid_pre", 0);
  auto h = reg.add_hook("blocks.0.hook_resid_pre",
                        [](const at::Tensor&, const HookContext&) { return std::optional<at::Tensor>(at::ones({3})); });
  REQUIRE_THROWS_WITH(p(at::ones({1, 2})), Catch::Contains("blocks.0.hook_resid_pre") && Catch::Contains("[3]") &&
                                               Catch::Contains("[1, 2]"));
}

TEST_CASE("Interventions compose left to right at a shared hook point") {
  HookRegistry reg;
  HookPoint& p = reg.add_point("x");
  Intervention add_one("x", [](const at::Tensor& x, const HookContext&) { return std::optional<at::Tensor>(x + 1); });
  Intervention times_three("x", [](const at::Tensor& x, const HookContext&) { return std::optional<at::Tensor>(x * 3); });
  {
    auto scope = (add_one | times_three).apply(reg);
    REQUIRE(p(at::full({1}, 2.0)).item<double>() == 9.0);  // (2 + 1) * 3
  }
  {
    auto scope = (times_three | add_one).apply(reg);
    REQUIRE(p(at::full({1}, 2.0)).item<double>() == 7.0);  // 2 * 3 + 1
  }
  REQUIRE(p(at::full({1}, 2.0)).item<double>() == 2.0);
}

namespace {
// Tells the registry that the next forward covers columns [first, first + n) of a sequence whose
// prompt has `prompt` columns (what Model::forward does from prefill / decode).
void columns(HookRegistry& reg, int64_t first, int64_t n, int64_t prompt) {
  reg.run_state().first_column = first;
  reg.run_state().columns = n;
  reg.run_state().prompt_columns = prompt;
}
// Which of a [1, n] activation's positions the attached hooks zeroed.
std::vector<int64_t> zeroed(HookPoint& p, int64_t n) {
  at::Tensor out = p(at::ones({1, n}));
  std::vector<int64_t> z;
  for (int64_t j = 0; j < n; ++j)
    if (out[0][j].item<double>() == 0.0) z.push_back(j);
  return z;
}
}  // namespace

TEST_CASE("Interventions act in their scope: the whole prompt by default, the pending token included") {
  HookRegistry reg;
  HookPoint& p = reg.add_point("x", -1, {kDimBatch, kDimPos});
  Intervention zero("x", [](const at::Tensor& x, const HookContext&) { return std::optional<at::Tensor>(x * 0); });
  using V = std::vector<int64_t>;
  // A 5-column prompt: prefill holds columns 0..3, the first decoding step the pending column 4,
  // then generated tokens 1, 2, ... at columns 5, 6, ...
  auto run = [&](const Intervention& iv) {
    auto scope = iv.apply(reg);
    std::vector<V> seen;
    columns(reg, 0, 4, 5);
    seen.push_back(zeroed(p, 4));
    for (int64_t c = 4; c < 9; ++c) {
      columns(reg, c, 1, 5);
      seen.push_back(zeroed(p, 1));
    }
    return seen;
  };
  const V all4{0, 1, 2, 3}, one{0}, none{};
  CHECK(run(zero) == std::vector<V>{all4, one, none, none, none, none});
  CHECK(run(zero.scope(Scope::Prompt)) == std::vector<V>{all4, one, none, none, none, none});
  CHECK(run(zero.scope(Scope::Generated)) == std::vector<V>{none, none, one, one, one, one});
  CHECK(run(zero.scope(Scope::Both)) == std::vector<V>{all4, one, one, one, one, one});
  CHECK(run(zero.during_decoding()) == std::vector<V>{all4, one, one, one, one, one});
  CHECK(run(zero.at_steps(2, 4)) == std::vector<V>{none, none, none, one, one, none});
  CHECK(run(zero.at_steps(0, 2)) == std::vector<V>{all4, one, one, none, none, none});
  CHECK(run(zero.at_steps(3)) == std::vector<V>{none, none, none, none, one, one});

  // One forward over prompt + continuation (teacher forcing: 5 prompt columns of 7) splits.
  auto teacher_forced = [&](const Intervention& iv) {
    auto scope = iv.apply(reg);
    columns(reg, 0, 7, 5);
    return zeroed(p, 7);
  };
  CHECK(teacher_forced(zero) == V{0, 1, 2, 3, 4});
  CHECK(teacher_forced(zero.scope(Scope::Generated)) == V{5, 6});
  CHECK(teacher_forced(zero.at_steps(2)) == V{6});
  CHECK(teacher_forced(zero.scope(Scope::Both)) == V{0, 1, 2, 3, 4, 5, 6});

  // Scopes stay with each part of a composition; one set on the whole applies to every part.
  Intervention both = zero.scope(Scope::Generated) | zero;
  CHECK(both.parts()[0].steps == Steps::generated());
  CHECK(both.parts()[1].steps == Steps::prompt());
  CHECK(both.scope_str() == "mixed");
  CHECK(both.at_steps(1, 3).scope_str() == "steps 1:3");
  CHECK_THROWS_AS(zero.at_steps(3, 3), ArgumentError);

  // Hooks see the step and the columns.
  std::vector<int64_t> steps;
  Intervention seen("x", [&](const at::Tensor&, const HookContext& ctx) {
    steps.push_back(ctx.run.step_of(ctx.run.first_column));
    return std::optional<at::Tensor>();
  });
  auto scope = seen.scope(Scope::Both).apply(reg);
  columns(reg, 0, 4, 5);
  p(at::ones({1, 4}));
  for (int64_t c = 4; c < 7; ++c) {
    columns(reg, c, 1, 5);
    p(at::ones({1, 1}));
  }
  CHECK(steps == std::vector<int64_t>{0, 0, 1, 2});
  // A hook point outside any model (nothing sets the columns) is a prompt: every hook runs there.
  HookRegistry bare;
  HookPoint& q = bare.add_point("y");
  auto s2 = Intervention("y", [](const at::Tensor& x, const HookContext&) { return std::optional<at::Tensor>(x * 0); })
                .apply(bare);
  CHECK(q(at::ones({2})).sum().item<double>() == 0.0);
}

TEST_CASE("Hooked wraps a user's torch::nn::Linear so its input and output are hook points") {
  HookRegistry reg;
  Hooked<torch::nn::Linear> lin(reg, "proj", torch::nn::Linear(3, 2));
  REQUIRE(reg.names() == std::vector<std::string>{"proj.hook_in", "proj.hook_out"});
  CacheOptions opts;
  opts.names = {"proj.*"};
  auto cache = ActivationCache::attach(reg, opts);
  at::Tensor x = at::randn({4, 3});
  at::Tensor y = lin(x);
  REQUIRE(cache.get("proj.hook_in").equal(x));
  REQUIRE(cache.get("proj.hook_out").equal(y));
  // Zeroing the input through a hook gives the bias alone.
  auto scope = reg.add_hook("proj.hook_in", [](const at::Tensor& v, const HookContext&) {
    return std::optional<at::Tensor>(at::zeros_like(v));
  });
  REQUIRE(at::allclose(lin(x), lin.module()->bias.expand({4, 2})));
}

TEST_CASE("The activation cache slices positions, converts dtype and enforces its memory limit") {
  HookRegistry reg;
  HookPoint& a = reg.add_point("blocks.0.hook_resid_pre", 0, {kDimBatch, kDimPos, 8});
  reg.add_point("blocks.0.attn.hook_pattern", 0, {kDimBatch, 4, kDimPos, kDimKeyPos});
  CacheOptions opts;
  opts.names = {"blocks.0.hook_resid_pre"};
  opts.positions = Positions::last(2);
  opts.dtype = at::kDouble;
  auto cache = ActivationCache::attach(reg, opts);
  at::Tensor x = at::arange(2 * 5 * 8, at::kFloat).view({2, 5, 8});
  a(x);
  REQUIRE(cache.get("blocks.0.hook_resid_pre").sizes() == at::IntArrayRef({2, 2, 8}));
  REQUIRE(cache.get("blocks.0.hook_resid_pre").scalar_type() == at::kDouble);
  REQUIRE(cache.get("blocks.0.hook_resid_pre").equal(x.narrow(1, 3, 2).to(at::kDouble)));
  REQUIRE_THROWS_WITH(cache.get("blocks.0.hook_resid_pr"), Catch::Contains("blocks.0.hook_resid_pre"));

  CacheOptions all;
  // [2, 5, 8] + [2, 4, 5, 5] floats = 80 + 200 = 280 floats = 1120 bytes.
  REQUIRE(ActivationCache::estimate_bytes(reg, all, 2, 5, 5, at::kFloat) == 1120);
  all.max_bytes = 1000;
  REQUIRE_THROWS_WITH(ActivationCache::check_budget(reg, all, 2, 5, 5, at::kFloat), Catch::Contains("max_bytes"));
}

TEST_CASE("graph_steps_begin: the first step from which the acting hooks stay the same and all are capturable") {
  HookRegistry reg;
  reg.add_point("x", -1, {kDimBatch, kDimPos});
  reg.add_point("blocks.0.attn.hook_pattern", 0, {kDimBatch, 4, kDimPos, kDimKeyPos});
  auto noop = [](const at::Tensor&, const HookContext&) { return std::optional<at::Tensor>(); };
  const Intervention eager("x", noop), graph = Intervention("x", noop).capturable();
  CHECK(graph.is_capturable());
  CHECK_FALSE(eager.is_capturable());
  CHECK_FALSE((graph | eager).is_capturable());
  auto begin_with = [&](const Intervention& iv) {
    auto scope = iv.apply(reg);
    return reg.graph_steps_begin();
  };
  CHECK(reg.graph_steps_begin() == 1);                                  // nothing attached
  CHECK(begin_with(eager) == 1);                                        // the prompt scope ends at step 1
  CHECK(begin_with(eager.scope(Scope::Generated)) == Steps::kOpen);     // acts at every step, not capturable
  CHECK(begin_with(graph.scope(Scope::Generated)) == 1);
  CHECK(begin_with(graph.scope(Scope::Both)) == 1);                     // the prompt (step 0) is never replayed
  CHECK(begin_with(graph.at_steps(3)) == 3);                            // starts acting at step 3
  CHECK(begin_with(graph.at_steps(2, 5)) == 5);                         // stops acting at step 5
  CHECK(begin_with(eager.at_steps(2, 5)) == 5);
  CHECK(begin_with(graph.at_steps(2) | eager.at_steps(1, 6)) == 6);
  CHECK(begin_with(graph.at_steps(2) | eager.at_steps(4)) == Steps::kOpen);
  // A pattern spans the cache's capacity inside a graph: hooks there never run in one.
  CHECK(begin_with(Intervention("blocks.0.attn.hook_pattern", noop).capturable().scope(Scope::Generated)) ==
        Steps::kOpen);
  CHECK(reg.graph_steps_begin() == 1);  // everything detached again
}

TEST_CASE("An activation cache with a reserve records each forward at a device-side offset, as accumulate does") {
  HookRegistry reg;
  HookPoint& a = reg.add_point("blocks.0.hook_resid_pre", 0, {kDimBatch, kDimPos, 3});
  reg.add_point("blocks.0.attn.hook_pattern", 0, {kDimBatch, 4, kDimPos, kDimKeyPos});
  const std::string name = "blocks.0.hook_resid_pre";
  CacheOptions grow;
  grow.names = {name};
  grow.accumulate = true;
  CacheOptions held = grow;
  held.reserve = 6;
  held.dtype = at::kDouble;
  ActivationCache grown = ActivationCache::attach(reg, grow);
  ActivationCache reserved = ActivationCache::attach(reg, held);
  REQUIRE(reg.graph_steps_begin() == Steps::kOpen);  // the growing cache is not capturable
  // A 5-column prompt, row 1 left-padded by one: prefill (columns 0..3), then columns 4 and 5.
  at::Tensor x = at::randn({2, 6, 3});
  reg.run_state().live = at::tensor(std::vector<int64_t>{1, 1, 1, 1, 0, 1, 1, 1}).to(at::kBool).view({2, 4});
  columns(reg, 0, 4, 5);
  a(x.narrow(1, 0, 4));
  reg.run_state().live = at::Tensor();
  for (int64_t c = 4; c < 6; ++c) {
    columns(reg, c, 1, 5);
    a(x.narrow(1, c, 1));
  }
  REQUIRE(reserved.get(name).sizes() == at::IntArrayRef({2, 6, 3}));
  REQUIRE(reserved.get(name).scalar_type() == at::kDouble);
  REQUIRE(reserved.get(name).equal(grown.get(name).to(at::kDouble)));
  REQUIRE(reserved.get(name).equal(x.to(at::kDouble)));
  REQUIRE(reserved.live(name).equal(grown.live(name)));
  REQUIRE(reserved.prompt_columns(name) == 5);
  REQUIRE(reserved.bytes() == 2 * 7 * 3 * 8);  // the whole reserve, with its spare slot
  const ActivationCache before = reserved.snapshot();
  // A seventh position is past the reserve: reading the cache then says so.
  columns(reg, 6, 1, 5);
  a(at::ones({2, 1, 3}));
  REQUIRE(before.get(name).equal(x.to(at::kDouble)));  // the snapshot kept its own copy
  REQUIRE_THROWS_WITH(reserved.get(name), Catch::Contains(name) && Catch::Contains("saw 7 positions") &&
                                              Catch::Contains("reserve is 6") && Catch::Contains("at least 7"));
  reserved.clear();
  grown.detach();
  reserved.detach();

  // What a reserve cannot do is refused before anything is attached.
  CacheOptions no_accumulate;
  no_accumulate.names = {name};
  no_accumulate.reserve = 4;
  REQUIRE_THROWS_WITH(ActivationCache::attach(reg, no_accumulate), Catch::Contains("needs accumulate"));
  CacheOptions sliced = held;
  sliced.positions = Positions::last(2);
  REQUIRE_THROWS_WITH(ActivationCache::attach(reg, sliced), Catch::Contains("no positions slice"));
  CacheOptions pattern = held;
  pattern.names = {"blocks.0.attn.hook_pattern"};
  REQUIRE_THROWS_WITH(ActivationCache::attach(reg, pattern),
                      Catch::Contains("blocks.0.attn.hook_pattern") && Catch::Contains("key positions"));
  REQUIRE_THROWS_WITH(ActivationCache::attach_gradients(reg, held), Catch::Contains("reserve"));
  REQUIRE_FALSE(reg.any_attached());
}
