// CSV writing and reading (io/csv.hpp). RFC 4180 is the reference; every expected string below is
// what CPython 3.11's csv module gives for the same fields, written out literally (csv.writer
// with the default dialect for single fields, lineterminator="\n" for whole rows; csv.reader for
// parsing), never output of the code under test.

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/io/csv.hpp"
#include "mechlens/io/read_file.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::TempDir;
using mechlens_test::write_bytes;
namespace io = mechlens::io;
using Rows = std::vector<std::vector<std::string>>;

TEST_CASE("A CSV field is quoted exactly when it holds a comma, a double quote, CR or LF") {
  // Python: io.StringIO(); csv.writer(f).writerow([field]) for each field.
  CHECK(io::csv_field("plain") == "plain");
  CHECK(io::csv_field("with,comma") == "\"with,comma\"");
  CHECK(io::csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(io::csv_field("\"") == "\"\"\"\"");
  CHECK(io::csv_field("two\nlines") == "\"two\nlines\"");
  CHECK(io::csv_field("cr\rhere") == "\"cr\rhere\"");
  CHECK(io::csv_field("crlf\r\nend") == "\"crlf\r\nend\"");
  CHECK(io::csv_field(" spaced ") == " spaced ");  // spaces are data, not quoted
  CHECK(io::csv_field("caf\xC3\xA9;tab\there") == "caf\xC3\xA9;tab\there");
  CHECK(io::csv_field("") == "");
}

TEST_CASE("A CSV row joins its fields with commas and ends in LF; a lone empty field is written \"\"") {
  // Python: csv.writer(f, lineterminator="\n").writerow(row)
  CHECK(io::csv_row({"g0001", "He said \"observe, then observe again\"\nand stopped.", ""}) ==
        "g0001,\"He said \"\"observe, then observe again\"\"\nand stopped.\",\n");
  CHECK(io::csv_row({"plain", "with,comma", "say \"hi\"", "two\nlines", "", " spaced ", "\""}) ==
        "plain,\"with,comma\",\"say \"\"hi\"\"\",\"two\nlines\",, spaced ,\"\"\"\"\n");
  CHECK(io::csv_row({""}) == "\"\"\n");
  CHECK(io::csv_row({"", ""}) == ",\n");
}

TEST_CASE("CSV text parses into records with their starting lines, quotes and line ends as RFC 4180 says") {
  // Python: list(csv.reader(io.StringIO(text, newline=""))) gives
  // [['id', 'text'], ['1', 'a, "b"\nc'], [], ['2', ''], ['', 'x'], ['3', 'last']];
  // the blank line ([] in Python) is dropped here.
  const std::string text = "id,text\r\n1,\"a, \"\"b\"\"\nc\"\r\n\r\n2,\n\"\",x\n3,\"last\"";
  std::vector<std::size_t> lines;
  const auto rows = io::parse_csv(text, "t.csv", lines);
  CHECK(rows == Rows{{"id", "text"}, {"1", "a, \"b\"\nc"}, {"2", ""}, {"", "x"}, {"3", "last"}});
  // Counted by hand: the quoted field of record 2 spans lines 2-3, line 4 is blank.
  CHECK(lines == std::vector<std::size_t>{1, 2, 5, 6, 7});

  // A record of one quoted empty field is kept (Python: [['a'], [''], ['b']]).
  std::vector<std::size_t> lines2;
  CHECK(io::parse_csv("a\n\"\"\nb\n", "t.csv", lines2) == Rows{{"a"}, {""}, {"b"}});

  std::vector<std::size_t> lines3;
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::parse_csv("a,b\n1,\"open\n", "t.csv", lines3); }),
             Contains("t.csv") && Contains("line 2") && Contains("never closed"));
}

TEST_CASE("Rows written by csv_row read back as the same fields") {
  const Rows rows{{"item", "text", "rating"}, {"g0001", "a, \"quoted\"\r\nmulti-line text", ""}, {""}, {"x", "", "3"}};
  std::string text;
  for (const auto& r : rows) text += io::csv_row(r);
  std::vector<std::size_t> lines;
  CHECK(io::parse_csv(text, "round trip", lines) == rows);
}

TEST_CASE("A CSV file is read after its byte-order mark; a missing one is an IoError naming it") {
  TempDir tmp;
  const auto path = tmp.file("ratings.csv");
  write_bytes(path, "\xEF\xBB\xBFid,rating\r\na,1\r\n");
  std::vector<std::size_t> lines;
  CHECK(io::read_csv_file(path, "ratings CSV", lines) == Rows{{"id", "rating"}, {"a", "1"}});
  std::vector<std::size_t> more;
  const auto missing = tmp.file("nope.csv");
  CHECK(message_of<mechlens::IoError>([&] { io::read_csv_file(missing, "ratings CSV", more); }) ==
        "cannot open ratings CSV '" + missing + "': No such file or directory");
  CHECK(message_of<mechlens::IoError>([&] { io::read_file(missing); }) ==
        "cannot open file '" + missing + "': No such file or directory");
  CHECK(io::read_file(path, "ratings CSV").size() == 3 + 16);  // the mark is read too
}
