// left_pad (generation/left_pad.hpp): the one left-padding of token rows, used by prefill, the
// single-pass patches' source runs and R_V.

#include <catch2/catch.hpp>

#include <mechlens/generation/left_pad.hpp>

using namespace mechlens;

namespace {
std::vector<std::vector<int64_t>> rows_of(const at::Tensor& t) {
  std::vector<std::vector<int64_t>> out;
  at::Tensor c = t.to(at::kLong).contiguous();
  for (int64_t r = 0; r < c.size(0); ++r) {
    std::vector<int64_t> row;
    for (int64_t i = 0; i < c.size(1); ++i) row.push_back(c[r][i].item<int64_t>());
    out.push_back(row);
  }
  return out;
}
}  // namespace

TEST_CASE("left_pad puts each row's tokens at the end, masks the padding and reports the lengths", "[generation][left_pad]") {
  const auto b = left_pad({{5, 6, 7}, {8}, {}, {9, 10}});
  CHECK(b.longest == 3);
  CHECK(b.lengths == std::vector<int64_t>{3, 1, 0, 2});
  CHECK(b.padded());
  CHECK(b.ids.scalar_type() == at::kLong);
  CHECK(b.live.scalar_type() == at::kBool);
  CHECK(rows_of(b.ids) == std::vector<std::vector<int64_t>>{{5, 6, 7}, {0, 0, 8}, {0, 0, 0}, {0, 9, 10}});
  CHECK(rows_of(b.live) == std::vector<std::vector<int64_t>>{{1, 1, 1}, {0, 0, 1}, {0, 0, 0}, {0, 1, 1}});
}

TEST_CASE("left_pad of rows of one length pads nothing; the pad id is the caller's", "[generation][left_pad]") {
  const auto same = left_pad({{1, 2}, {3, 4}});
  CHECK_FALSE(same.padded());
  CHECK(rows_of(same.ids) == std::vector<std::vector<int64_t>>{{1, 2}, {3, 4}});
  CHECK(rows_of(same.live) == std::vector<std::vector<int64_t>>{{1, 1}, {1, 1}});
  const auto padded = left_pad({{1, 2, 3}, {4}}, /*pad_id=*/-7);
  CHECK(rows_of(padded.ids) == std::vector<std::vector<int64_t>>{{1, 2, 3}, {-7, -7, 4}});
  const auto empty = left_pad({{}, {}});
  CHECK(empty.longest == 0);
  CHECK(empty.ids.sizes() == at::IntArrayRef({2, 0}));
  CHECK_FALSE(empty.padded());
  CHECK_THROWS_WITH(left_pad({}), Catch::Contains("no rows"));
}
