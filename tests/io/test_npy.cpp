// .npy reading and writing. Expected bytes follow NumPy's format description
// (numpy.lib.format), written out by hand, never produced by the writer under test.

#include <cstdint>
#include <string>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/io/npy.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::TempDir;
using mechlens_test::write_bytes;
namespace io = mechlens::io;

namespace {

// Preamble of a version 1.0 file: magic, version, u16 little-endian header length.
std::string v1(const std::string& header) {
  const auto n = header.size();
  return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(n & 0xFF) + static_cast<char>(n >> 8) + header;
}

}  // namespace

TEST_CASE("save_npy writes the bytes NumPy writes: header padded to 64 bytes and ending in a newline") {
  TempDir tmp;
  const auto path = tmp.file("a.npy");
  io::save_npy(path, at::tensor({1.5f, -2.0f}));
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";  // 57 bytes
  REQUIRE(header.size() == 57);
  // 10 preamble bytes + 57 + 60 spaces + '\n' = 128; the length field holds 118 = 0x76.
  const std::string expected = std::string("\x93NUMPY\x01\x00\x76\x00", 10) + header + std::string(60, ' ') +
                               "\n" + std::string("\x00\x00\xC0\x3F\x00\x00\x00\xC0", 8);
  CHECK(mechlens_test::read_bytes(path) == expected);
}

TEST_CASE("A hand-written C-order int64 file decodes to the known values") {
  TempDir tmp;
  const auto path = tmp.file("i.npy");
  std::string data;
  for (int64_t v : {0, -1, 2, 300, -40000, 5}) data += mechlens_test::le_u64(static_cast<uint64_t>(v));
  write_bytes(path, v1("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }          \n") + data);
  const auto t = io::load_npy(path);
  CHECK(t.scalar_type() == at::kLong);
  CHECK(at::equal(t, at::tensor({0, -1, 2, 300, -40000, 5}, at::kLong).reshape({2, 3})));
}

TEST_CASE("A Fortran-order file is read into a C-order tensor with the same element values") {
  TempDir tmp;
  const auto path = tmp.file("f.npy");
  // a[i][j] = 10 i + j for shape (2, 3), stored column by column: a00 a10 a01 a11 a02 a12.
  std::string data;
  for (double v : {0.0, 10.0, 1.0, 11.0, 2.0, 12.0}) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    data += mechlens_test::le_u64(bits);
  }
  write_bytes(path, v1("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n") + data);
  const auto t = io::load_npy(path);
  CHECK(t.scalar_type() == at::kDouble);
  CHECK(t.is_contiguous());
  CHECK(at::equal(t, at::tensor({0.0, 1.0, 2.0, 10.0, 11.0, 12.0}, at::kDouble).reshape({2, 3})));
}

TEST_CASE("A version 2.0 file with a 4-byte header length, double quotes and reordered keys is read") {
  TempDir tmp;
  const auto path = tmp.file("v2.npy");
  const std::string header = R"({"shape": (3,), "fortran_order": False, "descr": "|u1"})";
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  bytes += static_cast<char>(header.size());
  bytes += std::string(3, '\0');
  write_bytes(path, bytes + header + std::string("\x07\xFF\x00", 3));
  const auto t = io::load_npy(path);
  CHECK(t.scalar_type() == at::kByte);
  CHECK(at::equal(t, at::tensor({7, 255, 0}, at::kByte)));
}

TEST_CASE("Every supported type round-trips through save_npy and load_npy, strided and 0-d inputs included") {
  TempDir tmp;
  for (const auto type : {at::kDouble, at::kFloat, at::kHalf, at::kLong, at::kInt, at::kShort, at::kChar,
                          at::kByte, at::kBool}) {
    INFO("scalar type " << c10::toString(type));
    at::manual_seed(3);
    const auto base = type == at::kBool ? at::rand({4, 5}) > 0.5 : (at::randn({4, 5}) * 50).to(type);
    int n = 0;
    for (const auto& t : {base, base.t(), base.slice(1, 1, 5, 2), base[2][3], base.slice(0, 0, 0)}) {
      const auto path = tmp.file(std::string(c10::toString(type)) + std::to_string(n++) + ".npy");
      io::save_npy(path, t);
      const auto got = io::load_npy(path);
      CHECK(got.scalar_type() == type);
      CHECK(got.sizes() == t.sizes());
      CHECK(at::equal(got, t));
      // The data starts at a multiple of 64 bytes, as NumPy aligns it.
      const auto bytes = mechlens_test::read_bytes(path);
      CHECK((bytes.size() - static_cast<std::size_t>(t.numel()) * t.element_size()) % 64 == 0);
    }
  }
}

TEST_CASE("Saving a bfloat16 tensor is refused with advice to convert") {
  TempDir tmp;
  CHECK_THAT(message_of<mechlens::ArgumentError>([&] { io::save_npy(tmp.file("b.npy"), at::ones({2}, at::kBFloat16)); }),
             Contains("BFloat16") && Contains("float32"));
}

TEST_CASE("Malformed .npy files are refused with a message naming the file and the problem") {
  TempDir tmp;
  const auto path = tmp.file("bad.npy");
  const std::string f4 = std::string("\x00\x00\x80\x3F", 4);
  auto load_error = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    return message_of<mechlens::FormatError>([&] { (void)io::load_npy(path); });
  };
  CHECK_THAT(load_error("\x93NUM"), Contains("truncated") && Contains(path));
  CHECK_THAT(load_error("PK\x03\x04 not an npy file"), Contains("magic") && Contains(path));
  CHECK_THAT(load_error(std::string("\x93NUMPY\x04\x00\x10\x00", 10) + std::string(16, ' ')),
             Contains("version 4.0"));
  CHECK_THAT(load_error(std::string("\x93NUMPY\x01\x00\xFF\x00{}", 12)),
             Contains("255-byte header") && Contains("past the file's end (12)"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'shape': (1,), }\n") + f4), Contains("lacks 'fortran_order'"));
  CHECK_THAT(load_error(v1("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n") + f4 + f4),
             Contains("unsupported descr '<c8'"));
  CHECK_THAT(load_error(v1("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n") + f4),
             Contains("big-endian"));
  CHECK_THAT(load_error(v1("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n") + f4),
             Contains("structured"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }\n") + f4),
             Contains("non-negative size"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': [1], }\n") + f4),
             Contains("expected '('"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }\n") + f4),
             Contains("True or False"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}\n") + f4),
             Contains("unexpected key 'x'"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n") + f4),
             Contains("8 bytes") && Contains("holds 4 data bytes"));
  CHECK_THAT(load_error(v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n") + f4 + "x"),
             Contains("holds 5 data bytes"));
}

TEST_CASE("Loading a .npy file that does not exist is a NotFoundError naming it") {
  CHECK_THAT(message_of<mechlens::NotFoundError>([] { (void)io::load_npy("/tmp/mechlens-missing.npy"); }),
             Contains("/tmp/mechlens-missing.npy"));
}
