// Whole-file reads refuse what is not a regular file before opening it (a FIFO with no writer
// blocked `open` forever; /dev/zero read forever), naming the file and what it is.
#include <sys/stat.h>

#include <mechlens/io/json.hpp>
#include <mechlens/io/npy.hpp>
#include <mechlens/io/read_file.hpp>

#include "io_test_util.hpp"

using namespace mechlens;
using mechlens_test::message_of;
using mechlens_test::TempDir;

TEST_CASE("read_file returns a regular file's bytes and refuses FIFOs, directories and devices by name") {
  TempDir dir;
  const std::string text = std::string("{\"a\": 1}\n") + std::string(1, '\0') + "tail";
  mechlens_test::write_bytes(dir.file("plain.json"), text);
  CHECK(io::read_file(dir.file("plain.json")) == text);
  CHECK(io::read_file(dir.file("plain.json"), "file", text.size()) == text);
  CHECK_THAT(message_of<IoError>([&] { io::read_file(dir.file("plain.json"), "config", text.size() - 1); }),
             Catch::Contains("config '" + dir.file("plain.json") + "' holds " + std::to_string(text.size()) + " bytes"));

  const std::string fifo = dir.file("pipe.json");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // No writer: opening it for reading would block. The check refuses it without opening.
  CHECK_THAT(message_of<IoError>([&] { io::read_file(fifo, "JSON file"); }),
             Catch::Contains("JSON file '" + fifo + "' is not a regular file (a FIFO"));
  CHECK_THAT(message_of<IoError>([&] { io::read_json_file(fifo); }), Catch::Contains(fifo) && Catch::Contains("FIFO"));
  CHECK_THAT(message_of<IoError>([&] { io::load_npy(fifo); }), Catch::Contains(fifo) && Catch::Contains("FIFO"));

  CHECK_THAT(message_of<IoError>([&] { io::read_file(dir.path(), "tokenizer.json"); }),
             Catch::Contains("is not a regular file (a directory)"));
  CHECK_THAT(message_of<IoError>([&] { io::read_json_file("/dev/zero"); }),
             Catch::Contains("'/dev/zero' is not a regular file (a device)"));
  CHECK_THAT(message_of<IoError>([&] { io::read_file(dir.file("absent.json"), "JSON file"); }),
             Catch::Contains("cannot open JSON file") && Catch::Contains("No such file"));
}
