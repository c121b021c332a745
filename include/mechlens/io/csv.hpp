#pragma once
/// \file
/// CSV as RFC 4180 (https://www.rfc-editor.org/rfc/rfc4180) defines it: records of fields
/// separated by commas; a field holding a comma, a double quote, CR or LF is enclosed in double
/// quotes, with each double quote inside doubled. This is the one CSV writer and reader of
/// mechlens (summary.csv, the blind-rating sheet and key, ratings tables).
///
/// Writing: csv_field quotes exactly the fields that need it (Python's csv.QUOTE_MINIMAL with the
/// default dialect gives the same bytes); csv_row ends each record with LF, not RFC 4180's CRLF,
/// like Python's `csv.writer(f, lineterminator="\n")` — every CSV reader accepts both.
/// Reading: parse_csv takes LF, CRLF or CR line ends and quoted fields spanning lines;
/// read_csv_file also skips a UTF-8 byte-order mark (what spreadsheets put first).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "mechlens/core/error.hpp"
#include "mechlens/io/read_file.hpp"

namespace mechlens::io {

/// `field` as one CSV field: as it is, or in double quotes with inner double quotes doubled when
/// it holds a comma, a double quote, CR or LF.
inline std::string csv_field(std::string_view field) {
  if (field.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (const char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

/// One record: the fields (csv_field each) joined by commas, ending in LF. A record of a single
/// empty field is written `""`, so that it is not read back as a blank line (Python does the same).
inline std::string csv_row(const std::vector<std::string>& fields) {
  if (fields.size() == 1 && fields[0].empty()) return "\"\"\n";
  std::string out;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i) out += ',';
    out += csv_field(fields[i]);
  }
  return out + "\n";
}

/// Splits CSV text into records of fields (RFC 4180: commas, double quotes with "" escapes,
/// LF, CRLF or CR line ends, quoted fields may span lines). Blank lines are dropped (a record
/// of one empty field is kept only when written `""`). `where` names the text in errors (a
/// FormatError for a quoted field never closed); `line_of` receives each record's 1-based
/// starting line.
inline std::vector<std::vector<std::string>> parse_csv(std::string_view text, const std::string& where,
                                                       std::vector<std::size_t>& line_of) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, field_started_quoted = false;
  std::size_t line = 1, row_line = 1;
  auto end_row = [&] {
    row.push_back(field);
    field.clear();
    if (!(row.size() == 1 && row[0].empty() && !field_started_quoted)) {
      rows.push_back(row);
      line_of.push_back(row_line);
    }
    row.clear();
    field_started_quoted = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"' && field.empty()) {
      quoted = field_started_quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
      ++line;
      row_line = line;
    } else {
      field += c;
    }
  }
  MECHLENS_CHECK(!quoted, FormatError, "{}: a quoted field starting on line {} is never closed", where, row_line);
  if (!field.empty() || !row.empty()) end_row();
  return rows;
}

/// The records of the CSV file at `path` (parse_csv), after a UTF-8 byte-order mark if the file
/// starts with one. IoError "cannot open <what> '<path>'" when it cannot be read; FormatError
/// naming the file for an unclosed quote.
inline std::vector<std::vector<std::string>> read_csv_file(const std::string& path, const std::string& what,
                                                           std::vector<std::size_t>& line_of) {
  std::string text = read_file(path, what);
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
  return parse_csv(text, path, line_of);
}

}  // namespace mechlens::io
