// The read-only file mapping (io/mapped_file.hpp) under the safetensors reader.

#include <cstring>
#include <string>

#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/io/mapped_file.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::TempDir;
using mechlens_test::write_bytes;
namespace io = mechlens::io;

TEST_CASE("A mapped file shows the file's bytes and size; an empty file maps to no bytes") {
  TempDir tmp;
  const std::string bytes("ab\0cd", 5);
  write_bytes(tmp.file("f.bin"), bytes);
  const io::MappedFile f(tmp.file("f.bin"));
  REQUIRE(f.size() == 5);
  CHECK(std::memcmp(f.data(), bytes.data(), 5) == 0);
  CHECK(f.path() == tmp.file("f.bin"));

  write_bytes(tmp.file("empty"), "");
  const io::MappedFile empty(tmp.file("empty"));
  CHECK(empty.size() == 0);
  CHECK(empty.data() == nullptr);
}

TEST_CASE("Mapping a missing file or a folder is an error naming the path, after the caller's prefix") {
  TempDir tmp;
  const auto missing = tmp.file("missing.safetensors");
  CHECK(message_of<mechlens::NotFoundError>([&] { io::MappedFile f(missing, "safetensors"); }) ==
        "safetensors: file '" + missing + "' does not exist");
  CHECK(message_of<mechlens::NotFoundError>([&] { io::MappedFile f(missing); }) ==
        "file '" + missing + "' does not exist");
  CHECK_THAT(message_of<mechlens::IoError>([&] { io::MappedFile f(tmp.path(), "safetensors"); }),
             Contains("safetensors: '" + tmp.path() + "'") && Contains("not a regular file"));
}
