#include <mechlens/core/error.hpp>
#include <mechlens/core/torch_compat.hpp>

TEST_CASE("MECHLENS_CHECK throws the named error type with the formatted message") {
  auto fails = [] { MECHLENS_CHECK(1 + 1 == 3, mechlens::ShapeError, "expected {} got {}", 3, 2); };
  REQUIRE_THROWS_AS(fails(), mechlens::ShapeError);
  REQUIRE_THROWS_WITH(fails(), "expected 3 got 2");
  REQUIRE_NOTHROW([] { MECHLENS_CHECK(true, mechlens::Error, "never"); }());
}

TEST_CASE("Torch version pairs compare as pairs, not field by field") {
  STATIC_REQUIRE(MECHLENS_TORCH_VERSION_PAIR(1, 13) < MECHLENS_TORCH_VERSION_PAIR(2, 0));
  STATIC_REQUIRE(MECHLENS_TORCH_VERSION_PAIR(2, 11) > MECHLENS_TORCH_VERSION_PAIR(2, 8));
  STATIC_REQUIRE(MECHLENS_TORCH_AT_LEAST(1, 13));
}

TEST_CASE("mechlens::raise and MECHLENS_THROW are public: programs throw the library's errors") {
  REQUIRE_THROWS_AS(mechlens::raise<mechlens::ArgumentError>("layer {} of {}", 40, 32), mechlens::ArgumentError);
  REQUIRE_THROWS_WITH(mechlens::raise<mechlens::ArgumentError>("layer {} of {}", 40, 32), "layer 40 of 32");
  auto always = [] { MECHLENS_THROW(mechlens::IoError, "cannot read '{}'", "x.bin"); };
  REQUIRE_THROWS_AS(always(), mechlens::IoError);
  REQUIRE_THROWS_WITH(always(), "cannot read 'x.bin'");
}
