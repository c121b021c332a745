// The UTF-8 decoder (core/utf8.hpp). Expected code points and lengths come from the Unicode
// Standard (15.0, section 3.9: Table 3-7, "Well-Formed UTF-8 Byte Sequences", and "U+FFFD
// Substitution of Maximal Subparts", Tables 3-8 to 3-11); the replacement sequences agree with
// CPython 3.11's bytes.decode("utf-8", "replace") on the same bytes.

#include <mechlens/core/utf8.hpp>

#include <ostream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

struct Decoded {
  char32_t cp;
  std::size_t length;
  bool valid;
  bool operator==(const Decoded& o) const { return cp == o.cp && length == o.length && valid == o.valid; }
};

// Every character of `s`, decoded one after the other.
std::vector<Decoded> decode_all(const std::string& s) {
  std::vector<Decoded> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = mechlens::utf8_decode_char(s, i);
    out.push_back({c.code_point, c.length, c.valid});
    i += c.length;
  }
  return out;
}

// Printed by Catch2 when a check fails (through glog's operator<< for vectors, hence not StringMaker).
std::ostream& operator<<(std::ostream& os, const Decoded& d) {
  return os << "{U+" << std::hex << static_cast<unsigned long>(d.cp) << std::dec << " len " << d.length
            << (d.valid ? "}" : " invalid}");
}

constexpr char32_t R = 0xFFFD;

}  // namespace

using V = std::vector<Decoded>;

TEST_CASE("Well-formed UTF-8 decodes to its code points, at each length's bounds") {
  CHECK(decode_all("A") == V{{0x41, 1, true}});
  CHECK(decode_all("\x7F") == V{{0x7F, 1, true}});
  CHECK(decode_all("\xC2\x80") == V{{0x80, 2, true}});             // smallest 2-byte value
  CHECK(decode_all("\xDF\xBF") == V{{0x7FF, 2, true}});
  CHECK(decode_all("\xE0\xA0\x80") == V{{0x800, 3, true}});        // smallest 3-byte value
  CHECK(decode_all("\xE2\x82\xAC") == V{{0x20AC, 3, true}});       // EURO SIGN
  CHECK(decode_all("\xED\x9F\xBF") == V{{0xD7FF, 3, true}});       // just below the surrogates
  CHECK(decode_all("\xEE\x80\x80") == V{{0xE000, 3, true}});       // just above them
  CHECK(decode_all("\xF0\x90\x80\x80") == V{{0x10000, 4, true}});  // smallest 4-byte value
  CHECK(decode_all("\xF0\x9F\x98\x80") == V{{0x1F600, 4, true}});  // GRINNING FACE
  CHECK(decode_all("\xF4\x8F\xBF\xBF") == V{{0x10FFFF, 4, true}}); // the last code point
  CHECK(mechlens::is_valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
}

TEST_CASE("Overlong forms, surrogates and values past U+10FFFF are U+FFFD per maximal subpart") {
  // C0, C1 and E0 80..9F / F0 80..8F would be overlong: no such prefix starts a well-formed
  // sequence, so every byte is its own maximal subpart (Table 3-8's rule, Table 3-9's example).
  CHECK(decode_all("\xC0\xAF") == V{{R, 1, false}, {R, 1, false}});
  CHECK(decode_all("\xE0\x80\xAF") == V{{R, 1, false}, {R, 1, false}, {R, 1, false}});
  CHECK(decode_all("\xF0\x80\x80\xAF") == V{{R, 1, false}, {R, 1, false}, {R, 1, false}, {R, 1, false}});
  // ED A0..BF would be a UTF-16 surrogate (Table 3-10's example: ED A0 80 is three U+FFFD).
  CHECK(decode_all("\xED\xA0\x80") == V{{R, 1, false}, {R, 1, false}, {R, 1, false}});
  // F4 90.. and F5..FF would be past U+10FFFF (Table 3-9: F4 90 80 80 is four U+FFFD).
  CHECK(decode_all("\xF4\x90\x80\x80") == V{{R, 1, false}, {R, 1, false}, {R, 1, false}, {R, 1, false}});
  CHECK(decode_all("\xF5\x80") == V{{R, 1, false}, {R, 1, false}});
  CHECK(decode_all("\xFF") == V{{R, 1, false}});
  // Stray continuation bytes.
  CHECK(decode_all("\x80\xBF") == V{{R, 1, false}, {R, 1, false}});
}

TEST_CASE("A sequence cut short is one U+FFFD for all the bytes it had") {
  CHECK(decode_all("a\xE2\x82") == V{{'a', 1, true}, {R, 2, false}});             // EURO SIGN without its last byte
  CHECK(decode_all("\xF0\x9F\x98x") == V{{R, 3, false}, {'x', 1, true}});         // an emoji cut short, then 'x'
  CHECK(decode_all("\xE2(") == V{{R, 1, false}, {'(', 1, true}});                 // the next byte is not a continuation
  CHECK(decode_all("\xC3") == V{{R, 1, false}});                                  // at the end of the text
  // Table 3-8's example: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d.
  CHECK(decode_all("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64") ==
        V{{'a', 1, true}, {R, 3, false}, {R, 2, false}, {R, 1, false}, {'b', 1, true}, {R, 1, false},
          {'c', 1, true}, {R, 1, false}, {R, 1, false}, {'d', 1, true}});
}

TEST_CASE("Validation reports the first ill-formed byte; lossy conversion replaces each subpart") {
  CHECK_FALSE(mechlens::first_invalid_utf8("plain ASCII").has_value());
  CHECK(mechlens::first_invalid_utf8("ok\xC3\xA9\xED\xA0\x80") == std::optional<std::size_t>(4));
  CHECK(mechlens::utf8_valid_length("\xE2\x82\xAC", 0) == 3);
  CHECK(mechlens::utf8_valid_length("\xE2\x82", 0) == 0);
  const std::string r = "\xEF\xBF\xBD";
  CHECK(mechlens::utf8_lossy("a\xE2\x82" "b\xC0\xAF") == "a" + r + "b" + r + r);
  CHECK(mechlens::utf8_encode(0x20AC) == "\xE2\x82\xAC");
  CHECK(mechlens::utf8_encode(0x10FFFF) == "\xF4\x8F\xBF\xBF");
}
