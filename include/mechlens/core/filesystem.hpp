#pragma once
/// \file
/// Listing and removing directories with POSIX calls instead of std::filesystem's
/// directory_iterator / remove_all. NOTE: PyTorch's wheels carry their own copies of those
/// libstdc++ functions, built with an older GCC; a program built with a newer GCC (13 on the GPU
/// machine) and linked to that LibTorch can bind to them and crash inside them (seen: SIGSEGV in
/// remove_all). exists / status / is_directory are unaffected.

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "mechlens/core/error.hpp"

namespace mechlens::detail {

/// The entry names of `dir` (no "." or ".."), unsorted; empty when it cannot be opened.
inline std::vector<std::string> list_directory(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (const dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

/// Removes `path` and everything below it; a missing path is not an error.
inline void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  auto remove_one = [](const char* p, const struct stat*, int, struct FTW*) -> int { return std::remove(p); };
  MECHLENS_CHECK(::nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0, IoError,
                 "could not remove '{}' and its contents", path);
}

}  // namespace mechlens::detail
