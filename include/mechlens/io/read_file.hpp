#pragma once
/// \file
/// Reading a whole file into memory, with an error that names the file and what it was for.

#include <fstream>
#include <sstream>
#include <string>

#include "mechlens/core/error.hpp"

namespace mechlens::io {

/// The bytes of the file at `path`. IoError "cannot open <what> '<path>'" when it cannot be
/// opened; `what` says what the file is for ("JSON file", "ratings CSV"), or is empty.
inline std::string read_file(const std::string& path, const std::string& what = "") {
  std::ifstream in(path, std::ios::binary);
  MECHLENS_CHECK(in.good(), IoError, "cannot open {}{}'{}'", what, what.empty() ? "" : " ", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace mechlens::io
