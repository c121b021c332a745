// Component rules checked against examples published with the rules themselves (HF tokenizers'
// documentation of SplitDelimiterBehavior; the Unicode Standard's U+FFFD substitution example).

#include <mechlens/tokenizer/pre_tokenizers.hpp>

#include "tokenizer_test_support.hpp"

namespace {

std::vector<std::string> split_dashes(const std::string& s, mechlens::tokenizer::SplitBehavior b) {
  using mechlens::tokenizer::detail::Range;
  std::vector<Range> matches;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '-') matches.emplace_back(i, i + 1);
  }
  std::vector<std::string> out;
  for (auto [lo, hi] : mechlens::tokenizer::detail::split_ranges(s.size(), matches, b, false)) {
    out.push_back(s.substr(lo, hi - lo));
  }
  return out;
}

}  // namespace

TEST_CASE("Split behaviours cut 'the-final--countdown' as HF's documentation shows", "[tokenizer]") {
  using B = mechlens::tokenizer::SplitBehavior;
  using V = std::vector<std::string>;
  const std::string s = "the-final--countdown";
  CHECK(split_dashes(s, B::kRemoved) == V{"the", "final", "countdown"});
  CHECK(split_dashes(s, B::kIsolated) == V{"the", "-", "final", "-", "-", "countdown"});
  CHECK(split_dashes(s, B::kMergedWithPrevious) == V{"the-", "final-", "-", "countdown"});
  CHECK(split_dashes(s, B::kMergedWithNext) == V{"the", "-final", "-", "-countdown"});
  CHECK(split_dashes(s, B::kContiguous) == V{"the", "-", "final", "--", "countdown"});
}

TEST_CASE("Invalid UTF-8 becomes U+FFFD per maximal subpart, as in the Unicode Standard's example", "[tokenizer]") {
  // Unicode 15, section 3.9, "U+FFFD Substitution of Maximal Subparts": 61 F1 80 80 E1 80 C2 62
  // 80 63 80 BF 64 decodes to a FFFD FFFD FFFD b FFFD c FFFD FFFD d (Rust's from_utf8_lossy agrees).
  const std::string bytes = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string r = "\xEF\xBF\xBD";
  CHECK(mechlens::tokenizer::detail::utf8_lossy(bytes) == "a" + r + r + r + "b" + r + "c" + r + r + "d");
  CHECK(mechlens::tokenizer::detail::utf8_lossy("\xF0\x9F\x98") == r);  // a 4-byte emoji cut short
  CHECK(mechlens::tokenizer::detail::utf8_lossy("ok\xF0\x9F\x98\x80") == "ok\xF0\x9F\x98\x80");
}

TEST_CASE("Oniguruma's \\s, which tokenizer.json patterns are written for, includes U+0085", "[tokenizer]") {
  const mechlens::tokenizer::detail::Regex space(R"(\s+)", "test");
  CHECK(space.find_all("a\xC2\x85 b").size() == 1);
  const mechlens::tokenizer::detail::Regex not_space(R"([^\s\p{L}]+)", "test");
  CHECK(not_space.find_all("\xC2\x85").empty());
  CHECK(mechlens::tokenizer::detail::oniguruma_to_pcre2(R"(\s+(?!\S)|[^\s\p{L}])") ==
        R"([\s\x{85}]+(?![^\s\x{85}])|[^\s\x{85}\p{L}])");
}
