// Ablations, steering, scaling and selections checked against hand-computed expectations on tiny
// tensors, and the errors for selections that do not fit.
#include <mechlens/interventions/ablation.hpp>
#include <mechlens/interventions/steering.hpp>
#include <mechlens/interventions/swaps.hpp>

using namespace mechlens;

namespace {
struct Site {
  HookRegistry reg;
  HookPoint* v;
  HookPoint* resid;
  Site() {
    v = &reg.add_point("blocks.0.attn.hook_v", 0, {kDimBatch, kDimPos, 2, 3});
    resid = &reg.add_point("blocks.0.hook_resid_post", 0, {kDimBatch, kDimPos, 4});
    reg.add_point("blocks.1.hook_resid_post", 1, {kDimBatch, kDimPos, 4});
  }
};
}  // namespace

TEST_CASE("Zero ablation of one KV head at the last position zeroes exactly those entries") {
  Site s;
  Selection sel;
  sel.positions = Positions::last(1);
  sel.heads = IndexSet::only({1});
  auto scope = zero_ablate("blocks.0.attn.hook_v", sel).apply(s.reg);
  at::Tensor x = at::ones({1, 3, 2, 3});
  at::Tensor y = (*s.v)(x);
  at::Tensor expected = at::ones({1, 3, 2, 3});
  expected[0][2][1].fill_(0);
  REQUIRE(y.equal(expected));
}

TEST_CASE("Steering adds scale times the vector at the selected positions only") {
  Site s;
  at::Tensor dir = at::tensor({1.0f, 0.0f, -1.0f, 2.0f});
  Selection sel;
  sel.positions = Positions::list({0});
  auto scope = steer("blocks.0.hook_resid_post", dir, 0.5, sel).apply(s.reg);
  at::Tensor x = at::zeros({2, 2, 4});
  at::Tensor y = (*s.resid)(x);
  REQUIRE(y[0][0].equal(at::tensor({0.5f, 0.0f, -0.5f, 1.0f})));
  REQUIRE(y[1][0].equal(at::tensor({0.5f, 0.0f, -0.5f, 1.0f})));
  REQUIRE(y.select(1, 1).abs().sum().item<double>() == 0.0);
}

TEST_CASE("Scaling and mean ablation on chosen batch rows") {
  Site s;
  Selection rows;
  rows.rows = IndexSet::only({1});
  {
    auto scope = scale("blocks.0.hook_resid_post", 3.0, rows).apply(s.reg);
    at::Tensor y = (*s.resid)(at::ones({2, 1, 4}));
    REQUIRE(y[0].sum().item<double>() == 4.0);
    REQUIRE(y[1].sum().item<double>() == 12.0);
  }
  {
    at::Tensor mean = at::tensor({1.0f, 2.0f, 3.0f, 4.0f});
    auto scope = mean_ablate("blocks.0.hook_resid_post", mean, rows).apply(s.reg);
    at::Tensor y = (*s.resid)(at::zeros({2, 2, 4}));
    REQUIRE(y[1][1].equal(mean));
    REQUIRE(y[0].abs().sum().item<double>() == 0.0);
  }
}

TEST_CASE("A layer range expands over blocks and one past the model is an error naming the hook") {
  Site s;
  Selection sel;
  sel.layers = LayerRange{0, 2};
  auto scope = scale("blocks.*.hook_resid_post", 2.0, sel).apply(s.reg);
  REQUIRE((*s.resid)(at::ones({1, 1, 4})).sum().item<double>() == 8.0);
  sel.layers = LayerRange{0, 3};
  REQUIRE_THROWS_WITH(scale("blocks.*.hook_resid_post", 2.0, sel).apply(s.reg),
                      Catch::Contains("blocks.2.hook_resid_post"));
}

TEST_CASE("Selections that do not fit are errors naming the hook, the shape and the selection") {
  Site s;
  Selection head9;
  head9.heads = IndexSet::only({9});
  auto h = zero_ablate("blocks.0.attn.hook_v", head9).apply(s.reg);
  REQUIRE_THROWS_WITH((*s.v)(at::ones({1, 4, 2, 3})),
                      Catch::Contains("blocks.0.attn.hook_v") && Catch::Contains("head 9") && Catch::Contains("[1, 4, 2, 3]"));
  h.reset();
  Selection pos40;
  pos40.positions = Positions::list({40});
  auto h2 = zero_ablate("blocks.0.hook_resid_post", pos40).apply(s.reg);
  REQUIRE_THROWS_WITH((*s.resid)(at::ones({1, 20, 4})), Catch::Contains("position 40") && Catch::Contains("20"));
}

TEST_CASE("Patching from a source of another length needs an alignment, and right aligns the ends") {
  Site s;
  CacheOptions keep;
  keep.names = {"blocks.0.hook_resid_post"};
  auto src = ActivationCache::attach(s.reg, keep);
  at::Tensor source = at::arange(12, at::kFloat).view({1, 3, 4});
  (*s.resid)(source);
  src.detach();
  {
    auto scope = patch("blocks.0.hook_resid_post", src).apply(s.reg);
    REQUIRE_THROWS_WITH((*s.resid)(at::zeros({1, 5, 4})),
                        Catch::Contains("3 positions") && Catch::Contains("5") && Catch::Contains("alignment"));
  }
  auto scope = patch("blocks.0.hook_resid_post", src, {}, Align::Right).apply(s.reg);
  at::Tensor y = (*s.resid)(at::zeros({1, 5, 4}));
  REQUIRE(y.narrow(1, 0, 2).abs().sum().item<double>() == 0.0);
  REQUIRE(y.narrow(1, 2, 3).equal(source));
}

TEST_CASE("A patch from a left-padded source refuses to put padding into a real target token") {
  Site s;
  CacheOptions keep;
  keep.names = {"blocks.0.hook_resid_post"};
  auto src = ActivationCache::attach(s.reg, keep);
  // Source batch of 2 x 3 positions: row 1 is one token shorter (left padding at position 0).
  at::Tensor live = at::tensor(std::vector<int64_t>{1, 1, 1, 0, 1, 1}).view({2, 3}).to(at::kBool);
  s.reg.run_state().live = live;
  at::Tensor source = at::arange(24, at::kFloat).view({2, 3, 4});
  (*s.resid)(source);
  src.detach();
  REQUIRE(src.live("blocks.0.hook_resid_post").equal(live));

  s.reg.run_state().live = at::Tensor();  // the target: 2 rows of 3 real tokens
  {
    auto scope = patch("blocks.0.hook_resid_post", src).apply(s.reg);
    REQUIRE_THROWS_WITH((*s.resid)(at::zeros({2, 3, 4})),
                        Catch::Contains("row 1 position 0") && Catch::Contains("left padding") &&
                            Catch::Contains("blocks.0.hook_resid_post"));
  }
  {
    // Positions real in every source row patch as before.
    auto scope = patch("blocks.0.hook_resid_post", src, Selection().at_positions(Positions::last(2))).apply(s.reg);
    at::Tensor y = (*s.resid)(at::zeros({2, 3, 4}));
    REQUIRE(y.narrow(1, 1, 2).equal(source.narrow(1, 1, 2)));
    REQUIRE(y.narrow(1, 0, 1).abs().sum().item<double>() == 0.0);
  }
  // A target padded like the source: its padding may receive the source's padding.
  s.reg.run_state().live = live;
  auto scope = patch("blocks.0.hook_resid_post", src).apply(s.reg);
  REQUIRE((*s.resid)(at::zeros({2, 3, 4})).equal(source));
}
