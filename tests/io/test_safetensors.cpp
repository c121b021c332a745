// safetensors reading and writing (checkpoint folders: test_hf_checkpoint.cpp; the mapping
// itself: test_mapped_file.cpp). Expected layouts come from the format's
// specification (https://github.com/huggingface/safetensors#format), written out by hand here,
// never from the writer under test.

#include <mechlens/core/filesystem.hpp>
#include <sys/stat.h>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/io/safetensors.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::safetensors_bytes;
using mechlens_test::TempDir;
using mechlens_test::write_bytes;
namespace io = mechlens::io;

namespace {

// A small file written from the spec: the header JSON by hand, every value's bytes by hand.
const std::string kFixtureHeader =
    R"({"__metadata__":{"format":"pt","note":"hand-made"},)"
    R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},)"
    R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},)"
    R"("i":{"dtype":"I64","shape":[],"data_offsets":[24,32]},)"
    R"("m":{"dtype":"BOOL","shape":[3],"data_offsets":[32,35]},)"
    R"("u":{"dtype":"U8","shape":[1],"data_offsets":[35,36]},)"
    R"("e":{"dtype":"F64","shape":[0,3],"data_offsets":[36,36]}})";
const std::string kFixtureData = std::string(
    "\x00\x00\x80\x3F"  // w[0][0] =  1.0f
    "\x00\x00\x20\xC0"  // w[0][1] = -2.5f
    "\x00\x00\x00\x3F"  // w[1][0] =  0.5f
    "\x00\x00\x40\x40"  // w[1][1] =  3.0f
    "\x00\x3E"          // h[0] = 1.5  (f16 0x3E00)
    "\x00\xC0"          // h[1] = -2.0 (f16 0xC000)
    "\x80\x3F"          // b[0] = 1.0  (bf16 0x3F80)
    "\x00\xBF"          // b[1] = -0.5 (bf16 0xBF00)
    "\xFD\xFF\xFF\xFF\xFF\xFF\xFF\xFF"  // i = -3
    "\x01\x00\x01"      // m = true, false, true
    "\xC8",             // u = 200
    36);

std::string write_fixture(const TempDir& tmp, const std::string& header, const std::string& data,
                          const std::string& name = "bad.safetensors") {
  const auto path = tmp.file(name);
  write_bytes(path, safetensors_bytes(header, data));
  return path;
}

std::vector<at::ScalarType> all_scalar_types() {
  return {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
          at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};
}

// Values that exercise the whole byte pattern of each type (negative numbers, fractions).
at::Tensor sample(at::ScalarType type, at::IntArrayRef shape, int64_t seed) {
  at::manual_seed(seed);
  if (type == at::kBool) return at::rand(shape) > 0.5;
  if (type == at::kByte) return at::randint(0, 256, shape).to(type);
  if (at::isIntegralType(type, /*includeBool=*/false)) return at::randint(-100, 100, shape).to(type);
  return (at::randn(shape) * 10).to(type);
}

}  // namespace

TEST_CASE("A file written byte by byte from the spec decodes to the known values") {
  TempDir tmp;
  const auto path = write_fixture(tmp, kFixtureHeader, kFixtureData, "fixture.safetensors");
  const io::SafetensorsFile file(path);

  CHECK(file.path() == path);
  CHECK(file.keys() == std::vector<std::string>{"b", "e", "h", "i", "m", "u", "w"});
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "hand-made"}});
  CHECK(file.data_offset() == 8 + kFixtureHeader.size());

  const auto& w_info = file.info("w");
  CHECK(w_info.key == "w");
  CHECK(w_info.dtype == io::DType::F32);
  CHECK(w_info.shape == std::vector<int64_t>{2, 2});
  CHECK(w_info.begin == 0);
  CHECK(w_info.end == 16);

  const auto w = file.tensor("w");
  CHECK(w.scalar_type() == at::kFloat);
  CHECK(at::equal(w, at::tensor({1.0f, -2.5f, 0.5f, 3.0f}).reshape({2, 2})));

  const auto h = file.tensor("h");
  CHECK(h.scalar_type() == at::kHalf);
  CHECK(at::equal(h.to(at::kFloat), at::tensor({1.5f, -2.0f})));

  const auto b = file.tensor("b");
  CHECK(b.scalar_type() == at::kBFloat16);
  CHECK(at::equal(b.to(at::kFloat), at::tensor({1.0f, -0.5f})));

  const auto i = file.tensor("i");
  CHECK(i.scalar_type() == at::kLong);
  CHECK(i.dim() == 0);
  CHECK(i.item<int64_t>() == -3);

  const auto m = file.tensor("m");
  CHECK(m.scalar_type() == at::kBool);
  CHECK(at::equal(m, at::tensor({1, 0, 1}).to(at::kBool)));

  const auto u = file.tensor("u");
  CHECK(u.scalar_type() == at::kByte);
  CHECK(u.item<int64_t>() == 200);

  const auto e = file.tensor("e");
  CHECK(e.scalar_type() == at::kDouble);
  CHECK(e.sizes().vec() == std::vector<int64_t>{0, 3});
}

TEST_CASE("A fully literal file, length prefix included, is read without header padding") {
  TempDir tmp;
  const auto path = tmp.file("literal.safetensors");
  // 54 = 0x36 header bytes, not a multiple of 8: the format does not require padding.
  write_bytes(path, std::string("\x36\0\0\0\0\0\0\0", 8) +
                        R"({"x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})" +
                        std::string("\x07\x00\x00\x00", 4));
  const io::SafetensorsFile file(path);
  CHECK(file.tensor("x").scalar_type() == at::kInt);
  CHECK(file.tensor("x").item<int64_t>() == 7);
  CHECK(file.metadata().empty());
}

TEST_CASE("The writer produces exactly the bytes the spec prescribes, header padded with spaces to 8") {
  TempDir tmp;
  const auto path = tmp.file("x.safetensors");
  io::save_safetensors(path, {{"x", at::tensor({7}, at::kInt)}});
  const std::string header = R"({"x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";  // 54 bytes
  const std::string expected =
      std::string("\x38\0\0\0\0\0\0\0", 8) + header + "  " + std::string("\x07\x00\x00\x00", 4);
  CHECK(mechlens_test::read_bytes(path) == expected);
}

TEST_CASE("The writer lists metadata first and orders data by element size, then by name") {
  TempDir tmp;
  const auto path = tmp.file("x.safetensors");
  io::save_safetensors(path,
                       {{"b", at::tensor({std::int16_t{1}, std::int16_t{-2}}, at::kShort)},
                        {"a", at::tensor({0.25}, at::kDouble)}},
                       {{"k", "v"}});
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I16","shape":[2],"data_offsets":[8,12]}})";  // 133 bytes, padded to 136
  REQUIRE(header.size() == 133);
  const std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) + header + "   " +
                               std::string("\x00\x00\x00\x00\x00\x00\xD0\x3F", 8)  // 0.25
                               + std::string("\x01\x00\xFE\xFF", 4);              // 1, -2
  CHECK(mechlens_test::read_bytes(path) == expected);
}

TEST_CASE("Every dtype round-trips through save and load, including non-contiguous and sliced inputs") {
  TempDir tmp;
  for (const auto type : all_scalar_types()) {
    INFO("scalar type " << c10::toString(type));
    const auto base = sample(type, {6, 5}, 17);
    std::vector<std::pair<std::string, at::Tensor>> tensors = {
        {"plain", base},
        {"transposed", base.t()},                                  // non-contiguous
        {"sliced", base.slice(0, 1, 6, 2).slice(1, 1, 4)},          // strided view with an offset
        {"expanded", base.select(0, 2).unsqueeze(0).expand({3, 5})},  // zero stride
        {"scalar", base[1][1].clone()},
        {"empty", base.slice(0, 0, 0)},
    };
    REQUIRE_FALSE(tensors[1].second.is_contiguous());
    REQUIRE_FALSE(tensors[2].second.is_contiguous());
    const auto path = tmp.file(std::string("all_") + c10::toString(type) + ".safetensors");
    io::save_safetensors(path, tensors, {{"dtype", c10::toString(type)}});

    const auto loaded = io::load_safetensors(path);
    REQUIRE(loaded.size() == tensors.size());
    for (const auto& [key, original] : tensors) {
      INFO("key " << key);
      const auto& got = loaded.at(key);
      CHECK(got.scalar_type() == type);
      CHECK(got.sizes() == original.sizes());
      CHECK(got.is_contiguous());
      CHECK(at::equal(got, original));
    }
    CHECK(io::SafetensorsFile(path).metadata().at("dtype") == c10::toString(type));
  }
}

TEST_CASE("Written tensors start at offsets aligned to their element size") {
  TempDir tmp;
  const auto path = tmp.file("mixed.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  int64_t i = 0;
  for (const auto type : all_scalar_types()) {
    tensors.emplace_back("t" + std::to_string(i), sample(type, {3}, i));
    ++i;
  }
  io::save_safetensors(path, tensors);
  const io::SafetensorsFile file(path);
  CHECK(file.data_offset() % 8 == 0);
  for (const auto& key : file.keys()) {
    const auto& info = file.info(key);
    INFO(key << " " << io::to_string(info.dtype) << " begins at " << info.begin);
    CHECK(info.begin % io::element_size(info.dtype) == 0);
  }
}

TEST_CASE("Dtype names, element sizes and scalar types agree with each other") {
  for (const auto type : all_scalar_types()) {
    const auto dtype = io::dtype_from_scalar_type(type);
    CHECK(io::to_scalar_type(dtype) == type);
    CHECK(io::safetensors_dtype(io::to_string(dtype)) == dtype);
    CHECK(io::element_size(dtype) == at::elementSize(type));
  }
  CHECK_FALSE(io::safetensors_dtype("F8_E4M3").has_value());
  CHECK_FALSE(io::safetensors_dtype("f32").has_value());
  CHECK_THROWS_AS(io::dtype_from_scalar_type(at::kComplexFloat), mechlens::ArgumentError);
}

TEST_CASE("Saving replaces an existing file atomically and leaves no temporary file behind") {
  TempDir tmp;
  const auto path = tmp.file("w.safetensors");
  io::save_safetensors(path, {{"a", at::ones({4})}});
  io::save_safetensors(path, {{"b", at::zeros({2}, at::kLong)}});
  const io::SafetensorsFile file(path);
  CHECK(file.keys() == std::vector<std::string>{"b"});
  CHECK(mechlens::detail::list_directory(tmp.path()).size() == 1);
}

TEST_CASE("Saving refuses duplicate keys, the reserved __metadata__ key and undefined tensors") {
  TempDir tmp;
  const auto path = tmp.file("x.safetensors");
  CHECK_THAT(message_of<mechlens::ArgumentError>(
                 [&] { io::save_safetensors(path, {{"a", at::ones({1})}, {"a", at::ones({2})}}); }),
             Contains("'a' appears twice"));
  CHECK_THAT(message_of<mechlens::ArgumentError>(
                 [&] { io::save_safetensors(path, {{"__metadata__", at::ones({1})}}); }),
             Contains("reserved"));
  CHECK_THAT(message_of<mechlens::ArgumentError>([&] { io::save_safetensors(path, {{"u", at::Tensor()}}); }),
             Contains("'u' is undefined"));
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("Saving into a folder that does not exist is an IoError naming the path") {
  const std::string path = "/tmp/mechlens-no-such-folder-for-io-test/x.safetensors";
  CHECK_THAT(message_of<mechlens::IoError>([&] { io::save_safetensors(path, {{"a", at::ones({1})}}); }),
             Contains(path));
}

// ---- malformed files: each is refused at open with a message naming the file and the problem.

TEST_CASE("A file shorter than 8 bytes is reported as truncated") {
  TempDir tmp;
  const auto path = tmp.file("short.safetensors");
  write_bytes(path, std::string("\x10\0\0\0\0", 5));
  const auto msg = message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); });
  CHECK_THAT(msg, Contains("truncated") && Contains("5 bytes") && Contains(path));
  write_bytes(path, "");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("truncated") && Contains("0 bytes"));
}

TEST_CASE("A header length past the end of the file is refused with both numbers") {
  TempDir tmp;
  const auto path = tmp.file("long.safetensors");
  // Claims 1000 header bytes; the file has 8 + 2.
  write_bytes(path, mechlens_test::le_u64(1000) + "{}");
  const auto msg = message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); });
  CHECK_THAT(msg, Contains("header length 1000") && Contains("past the file's end (10)") && Contains(path));
  // A length so large that 8 + length overflows 64 bits.
  write_bytes(path, mechlens_test::le_u64(~uint64_t{0}) + "{}");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("past the file's end"));
}

TEST_CASE("A header that is not valid JSON is refused") {
  TempDir tmp;
  const auto path = write_fixture(tmp, R"({"a":{"dtype":"F32",)", "");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("not valid JSON") && Contains(path));
}

TEST_CASE("A header that is JSON but not an object is refused") {
  TempDir tmp;
  const auto path = write_fixture(tmp, "[1, 2, 3]", "");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("not a JSON object") && Contains(path));
  const auto path2 = write_fixture(tmp, R"({"a":[1,2]})", "", "entry.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path2); }),
             Contains("header entry 'a'") && Contains(path2));
}

TEST_CASE("An entry missing a field, or with a negative or fractional offset, is refused") {
  TempDir tmp;
  const auto p1 = write_fixture(tmp, R"({"a":{"dtype":"F32","shape":[1]}})", "abcd", "a.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(p1); }),
             Contains("'a' has no 'data_offsets'") && Contains(p1));
  const auto p2 = write_fixture(tmp, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "", "b.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(p2); }),
             Contains("non-negative integer"));
  const auto p3 = write_fixture(tmp, R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd", "c.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(p3); }),
             Contains("shape entry 1.5"));
}

TEST_CASE("An unknown dtype string is refused, naming the tensor and the dtype") {
  TempDir tmp;
  const auto path = write_fixture(tmp, R"({"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", "abcd");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("'q'") && Contains("'F8_E4M3'") && Contains(path));
}

TEST_CASE("A shape whose byte count differs from end minus begin is refused") {
  TempDir tmp;
  // 2 x 3 F32 = 24 bytes, but the offsets span 20.
  const auto path = write_fixture(tmp, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
                                  std::string(20, '\0'));
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("'w'") && Contains("24 bytes") && Contains("span 20 bytes") && Contains(path));
  // A shape whose element count overflows 64 bits.
  const auto path2 = write_fixture(
      tmp, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
      std::string(4, '\0'), "overflow.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path2); }),
             Contains("more than 2^64"));
}

TEST_CASE("Offsets with begin after end are refused") {
  TempDir tmp;
  const auto path = write_fixture(tmp, R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})",
                                  std::string(4, '\0'));
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("[4, 0]") && Contains("begin after end") && Contains(path));
}

TEST_CASE("A tensor ending past the data section is refused with the file offset") {
  TempDir tmp;
  const std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  const auto path = write_fixture(tmp, header, std::string(8, '\0'));
  const auto file_end = 8 + header.size() + 8;
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("'w' ends at byte 16 of the data section") &&
                 Contains(fmt::format("file byte {}", 8 + header.size() + 16)) &&
                 Contains(fmt::format("past the file's end ({})", file_end)) && Contains(path));
}

TEST_CASE("Overlapping tensors are refused, naming both") {
  TempDir tmp;
  const auto path = write_fixture(tmp,
                                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                  std::string(12, '\0'));
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("'b'") && Contains("overlaps tensor 'a'") && Contains(path));
  // A zero-sized tensor inside another one overlaps too (the reference refuses it as well).
  const auto path2 = write_fixture(tmp,
                                   R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                   std::string(8, '\0'), "zero.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path2); }),
             Contains("'z'") && Contains("overlaps"));
}

TEST_CASE("A hole between tensors or trailing bytes after them are refused, as the reference does") {
  TempDir tmp;
  const auto hole = write_fixture(tmp,
                                  R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                  std::string(12, '\0'), "hole.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(hole); }),
             Contains("hole: bytes 4 to 8") && Contains("'b'") && Contains(hole));
  const auto start = write_fixture(tmp, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                   std::string(8, '\0'), "start.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(start); }),
             Contains("hole: bytes 0 to 4"));
  const auto trailing = write_fixture(tmp, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                      std::string(7, '\0'), "trailing.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(trailing); }),
             Contains("3 trailing bytes") && Contains(trailing));
}

TEST_CASE("Metadata values that are not strings are refused") {
  TempDir tmp;
  const auto path = write_fixture(tmp, R"({"__metadata__":{"step":5}})", "");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("__metadata__ entry 'step'") && Contains(path));
}

TEST_CASE("A file with no tensors and an empty header object opens") {
  TempDir tmp;
  const auto path = write_fixture(tmp, "{}      ", "");  // padded with spaces, as writers do
  const io::SafetensorsFile file(path);
  CHECK(file.keys().empty());
  CHECK_THAT(message_of<mechlens::NotFoundError>([&] { (void)file.tensor("x"); }),
             Contains("holds no tensors"));
}

TEST_CASE("A misspelt key is a NotFoundError naming the file and the nearest keys") {
  TempDir tmp;
  const auto path = write_fixture(tmp, kFixtureHeader, kFixtureData, "fixture.safetensors");
  const io::SafetensorsFile file(path);
  const auto msg = message_of<mechlens::NotFoundError>([&] { (void)file.info("ww"); });
  CHECK_THAT(msg, Contains("'ww'") && Contains(path) && Contains("nearest keys: 'w'"));
  CHECK_FALSE(file.contains("ww"));
  CHECK(file.contains("w"));
}

TEST_CASE("Opening a file that does not exist is a NotFoundError naming it") {
  CHECK_THAT(message_of<mechlens::NotFoundError>([] { io::SafetensorsFile f("/tmp/mechlens-missing.safetensors"); }),
             Contains("/tmp/mechlens-missing.safetensors"));
}

TEST_CASE("Tensors copied out of a file outlive it and can be modified") {
  TempDir tmp;
  const auto path = tmp.file("x.safetensors");
  io::save_safetensors(path, {{"x", at::arange(6, at::kFloat)}});
  at::Tensor x;
  {
    const io::SafetensorsFile file(path);
    x = file.tensor("x");
  }
  std::filesystem::remove(path);
  x.add_(1);
  CHECK(at::equal(x, at::arange(1, 7, at::kFloat)));
}

TEST_CASE("Keys with non-ASCII characters and dots round-trip as UTF-8") {
  TempDir tmp;
  const auto path = tmp.file("u.safetensors");
  const std::string key = "model.слой.0.weight \xF0\x9F\x98\x80";
  io::save_safetensors(path, {{key, at::ones({2})}, {"", at::zeros({1})}});
  const io::SafetensorsFile file(path);
  CHECK(file.keys() == std::vector<std::string>{"", key});
  CHECK(at::equal(file.tensor(key), at::ones({2})));
  // A key that is not valid UTF-8 cannot be encoded in the JSON header.
  CHECK_THAT(message_of<mechlens::ArgumentError>(
                 [&] { io::save_safetensors(tmp.file("bad.safetensors"), {{std::string("\xFF\xFE"), at::ones({1})}}); }),
             Contains("cannot encode the header"));
}

TEST_CASE("A header nested a million levels deep, or with a number beyond double range, is a clear error") {
  TempDir tmp;
  // Before the depth limit this overflowed the stack (SIGSEGV) while walking or printing it.
  const std::string deep = R"({"a":{"dtype":"F32","shape":)" + std::string(1000000, '[') + std::string(1000000, ']') +
                           R"(,"data_offsets":[0,0]}})";
  const auto path = write_fixture(tmp, deep, "");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("nested deeper than 256 levels") && Contains(path));
  const auto huge = write_fixture(tmp, R"({"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}})", "abcd",
                                  "huge.safetensors");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(huge); }),
             Contains("not valid JSON") && Contains(huge));
}

TEST_CASE("The JSON depth check ignores brackets inside strings and allows the limit itself") {
  const std::string at_limit = std::string(256, '[') + std::string(256, ']');
  CHECK_NOTHROW(mechlens::io::parse_json(at_limit, "x"));
  CHECK_THROWS_AS(mechlens::io::parse_json("[" + at_limit + "]", "x"), mechlens::FormatError);
  const std::string in_string = "{\"k\": \"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"}";
  CHECK(mechlens::io::parse_json(in_string, "x").at("k").get<std::string>().size() == 2001);
}

TEST_CASE("A tensor named twice in one header is refused (the last entry used to win silently)") {
  TempDir tmp;
  const auto path = write_fixture(tmp,
                                  R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                  R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                  std::string(8, '\0'));
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsFile f(path); }),
             Contains("key 'a' appears twice") && Contains(path));
}

TEST_CASE("A FIFO named model.safetensors is refused at once (opening it used to wait for a writer forever)") {
  TempDir tmp;
  const auto fifo = tmp.file("model.safetensors");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THAT(message_of<mechlens::IoError>([&] { io::SafetensorsFile f(fifo); }),
             Contains(fifo) && Contains("not a regular file"));
}
