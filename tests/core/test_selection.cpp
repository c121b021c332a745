// Layer ranges, positions and index sets: the half-open, 0-based selections every intervention
// and CLI flag takes, and their errors.
#include <mechlens/core/error.hpp>
#include <mechlens/core/selection.hpp>

using namespace mechlens;
using V = std::vector<int64_t>;

TEST_CASE("Layer ranges parse as half-open, 0-based, with open ends filled from the layer count") {
  REQUIRE(LayerRange::parse("16:32").begin == 16);
  REQUIRE(LayerRange::parse("16:32").end == 32);
  REQUIRE(LayerRange::parse("16:32").size() == 16);
  REQUIRE(LayerRange::parse("24").str() == "24:25");
  REQUIRE(LayerRange::parse(":8", 32).str() == "0:8");
  REQUIRE(LayerRange::parse("16:", 32).str() == "16:32");
  const LayerRange r = LayerRange::parse("16:32", 32);
  REQUIRE(r.contains(16));
  REQUIRE(r.contains(31));
  REQUIRE_FALSE(r.contains(32));
  REQUIRE_FALSE(r.contains(15));
}

TEST_CASE("Layer ranges that do not fit, or do not parse, name the text and the model's size") {
  REQUIRE_THROWS_WITH(LayerRange::parse("16:40", 32), Catch::Contains("16:40") && Catch::Contains("32 layers"));
  REQUIRE_THROWS_WITH(LayerRange::parse("8:8", 32), Catch::Contains("0 <= lo < hi <= 32"));
  REQUIRE_THROWS_WITH(LayerRange::parse("a:4"), Catch::Contains("'a' is not an integer"));
  REQUIRE_THROWS_WITH(LayerRange::parse("4x"), Catch::Contains("'4x' is not an integer"));
  REQUIRE_THROWS_WITH(LayerRange::parse("16:"), Catch::Contains("open end needs the model's layer count"));
  REQUIRE_THROWS_AS(LayerRange::parse("99999999999999999999:1"), ArgumentError);
  REQUIRE_THROWS_AS((LayerRange{-1, 2}.check(4)), ArgumentError);
}

TEST_CASE("Positions resolve against a sequence length") {
  REQUIRE(Positions::all().resolve(3, "h") == V{0, 1, 2});
  REQUIRE(Positions::all().is_all());
  REQUIRE(Positions::range(1, 3).resolve(5, "h") == V{1, 2});
  REQUIRE(Positions::last(2).resolve(5, "h") == V{3, 4});
  REQUIRE(Positions::last(5).resolve(5, "h") == V{0, 1, 2, 3, 4});
  REQUIRE(Positions::list({3, 1, 3}).resolve(5, "h") == V{3, 1, 3});  // a list keeps its order
  REQUIRE(Positions::range(1, 3).str() == "1:3");
  REQUIRE(Positions::last(4).str() == "last 4");
  REQUIRE(Positions::list({2, 5}).str() == "[2, 5]");
  REQUIRE(Positions::all().str() == "all");
}

TEST_CASE("Positions that do not fit name the hook, the selection and the length") {
  REQUIRE_THROWS_WITH(Positions::list({5}).resolve(5, "blocks.0.attn.hook_v"),
                      Catch::Contains("blocks.0.attn.hook_v") && Catch::Contains("position 5") && Catch::Contains("[0, 5)"));
  REQUIRE_THROWS_WITH(Positions::list({-1}).resolve(5, "h"), Catch::Contains("position -1"));
  REQUIRE_THROWS_WITH(Positions::range(3, 7).resolve(5, "h"), Catch::Contains("3:7"));
  REQUIRE_THROWS_AS(Positions::range(3, 3).resolve(5, "h"), ArgumentError);
  REQUIRE_THROWS_WITH(Positions::last(6).resolve(5, "h"), Catch::Contains("last 6"));
  REQUIRE_THROWS_AS(Positions::last(0).resolve(5, "h"), ArgumentError);
}

TEST_CASE("Index sets select heads or rows, all by default, and name what does not exist") {
  REQUIRE(IndexSet::all().resolve(3, "head", "h") == V{0, 1, 2});
  REQUIRE(IndexSet::only({2}).resolve(3, "head", "h") == V{2});
  REQUIRE_THROWS_WITH(IndexSet::only({3}).resolve(3, "head", "blocks.1.attn.hook_z"),
                      Catch::Contains("blocks.1.attn.hook_z") && Catch::Contains("head 3 does not exist") &&
                          Catch::Contains("0..2"));
  Selection s = Selection().at_layers({1, 3}).at_positions(Positions::last(2)).at_heads({0}).at_rows({1});
  REQUIRE(s.layers->str() == "1:3");
  REQUIRE(s.positions.str() == "last 2");
  REQUIRE(s.heads.indices == V{0});
  REQUIRE(s.rows.indices == V{1});
}
