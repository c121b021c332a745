#pragma once
/// \file
/// Reading a whole file that must be a regular file. A FIFO with no writer blocks `open` forever
/// and a character device (/dev/zero) reads forever, so every file mechlens reads whole (JSON,
/// JSONL, templates, .npy) is checked with `stat` first and refused by name otherwise, and sizes
/// are bounded before anything is allocated.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "mechlens/core/error.hpp"

namespace mechlens::io {

/// Files read whole are at most this large (config and tokenizer files are megabytes; a
/// record log of a very large study a few hundred).
inline constexpr uint64_t kMaxReadBytes = uint64_t{4} << 30;

/// Size of the regular file at `path`; IoError naming `what` and the path when it is missing,
/// unreadable, or not a regular file (directory, FIFO, socket, device).
inline uint64_t regular_file_size(const std::string& path, std::string what) {
  if (what.empty()) what = "file";
  struct stat st;
  MECHLENS_CHECK(::stat(path.c_str(), &st) == 0, IoError, "cannot open {} '{}': {}", what, path, std::strerror(errno));
  MECHLENS_CHECK(S_ISREG(st.st_mode), IoError, "{} '{}' is not a regular file ({}); mechlens reads only files", what,
                 path,
                 S_ISDIR(st.st_mode)    ? "a directory"
                 : S_ISFIFO(st.st_mode) ? "a FIFO, whose reader would wait for a writer"
                 : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                             : "a socket or other special file");
  return static_cast<uint64_t>(st.st_size);
}

/// The whole contents of the regular file at `path` (`what` names it in errors: "JSON file",
/// "chat template"...). At most `max_bytes`.
inline std::string read_file(const std::string& path, std::string what = "file",
                             uint64_t max_bytes = kMaxReadBytes);

/// read_file into another byte container with resize() and data() (a std::vector<char> with an
/// allocator of its own, say); the same checks and errors.
template <class Buffer>
Buffer read_file_as(const std::string& path, std::string what = "file", uint64_t max_bytes = kMaxReadBytes) {
  if (what.empty()) what = "file";
  const uint64_t size = regular_file_size(path, what);
  MECHLENS_CHECK(size <= max_bytes, IoError, "{} '{}' holds {} bytes, more than the {} mechlens reads", what, path,
                 size, max_bytes);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  MECHLENS_CHECK(fd >= 0, IoError, "cannot open {} '{}': {}", what, path, std::strerror(errno));
  Buffer out;
  out.resize(static_cast<size_t>(size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      MECHLENS_CHECK(n == 0, IoError, "cannot read {} '{}': {}", what, path, std::strerror(err));
      break;  // the file shrank while being read: keep what is there
    }
    got += static_cast<size_t>(n);
  }
  if (got == out.size()) ::close(fd);
  out.resize(got);
  return out;
}

inline std::string read_file(const std::string& path, std::string what, uint64_t max_bytes) {
  return read_file_as<std::string>(path, std::move(what), max_bytes);
}

}  // namespace mechlens::io
