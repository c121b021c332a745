// Atomic file writes: the destination holds the old or the new bytes, never a mix, and no
// temporary file is left behind.

#include <mechlens/core/filesystem.hpp>
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/io/atomic_file.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::TempDir;
namespace io = mechlens::io;

namespace {
int count_entries(const std::string& dir) {
  return static_cast<int>(mechlens::detail::list_directory(dir).size());
}
}  // namespace

TEST_CASE("write_file_atomically creates and then replaces a file, leaving no temporary file") {
  TempDir tmp;
  const auto path = tmp.file("summary.json");
  io::write_file_atomically(path, "{\"a\": 1}\n");
  CHECK(mechlens_test::read_bytes(path) == "{\"a\": 1}\n");
  const std::string binary("\x00\x01\xFF tail", 7);
  io::write_file_atomically(path, binary);
  CHECK(mechlens_test::read_bytes(path) == binary);
  io::write_file_atomically(path, "");
  CHECK(mechlens_test::read_bytes(path).empty());
  CHECK(count_entries(tmp.path()) == 1);
}

TEST_CASE("write_file_atomically into a missing folder is an IoError naming the path, and leaves nothing") {
  TempDir tmp;
  const auto path = tmp.file("no/such/folder/out.json");
  CHECK_THAT(message_of<mechlens::IoError>([&] { io::write_file_atomically(path, "x"); }), Contains(path));
  CHECK(count_entries(tmp.path()) == 0);
}

TEST_CASE("An abandoned atomic write removes its temporary file and keeps the old content") {
  TempDir tmp;
  const auto path = tmp.file("keep.txt");
  io::write_file_atomically(path, "old");
  {
    mechlens::detail::AtomicFileWriter writer(path);
    writer.write("new content", 11);
    CHECK(writer.bytes_written() == 11);
    CHECK(count_entries(tmp.path()) == 2);  // the destination and the temporary
  }  // destroyed without commit(), as when an exception unwinds
  CHECK(mechlens_test::read_bytes(path) == "old");
  CHECK(count_entries(tmp.path()) == 1);
}

TEST_CASE("A relative path without a folder is written in the working directory's folder") {
  CHECK(mechlens::detail::parent_folder("out.json") == ".");
  CHECK(mechlens::detail::parent_folder("/out.json") == "/");
  CHECK(mechlens::detail::parent_folder("a/b/out.json") == "a/b");
}
