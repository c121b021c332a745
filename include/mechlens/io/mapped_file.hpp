#pragma once
/// \file
/// A whole file memory-mapped read-only (POSIX open / fstat / mmap), with errors that name the
/// file: NotFoundError when it does not exist, IoError when it cannot be opened, is not a regular
/// file or cannot be mapped. io/safetensors.hpp reads checkpoints through it.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "mechlens/core/error.hpp"

namespace mechlens::io {

/// A whole file mapped read-only. The mapping stays valid while this object lives; it sees the
/// inode that was opened, so replacing the file by rename (as the atomic writers do) is safe,
/// while truncating it in place would make later reads fault (SIGBUS), as with any mmap. An
/// empty file maps to data() == nullptr, size() == 0. Not copyable (share it by pointer).
class MappedFile {
 public:
  /// Maps `path`. `what` starts every error message ("safetensors" gives "safetensors: file 'x'
  /// does not exist"); empty for none.
  explicit MappedFile(const std::string& path, const std::string& what = "") : path_(path) {
    const std::string prefix = what.empty() ? std::string() : what + ": ";
    // O_NONBLOCK: opening a FIFO with no writer would otherwise block forever before fstat
    // could refuse it (regular files ignore the flag).
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) ::mechlens::detail::raise<NotFoundError>("{}file '{}' does not exist", prefix, path);
      ::mechlens::detail::raise<IoError>("{}cannot open '{}': {}", prefix, path, std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      ::mechlens::detail::raise<IoError>("{}cannot stat '{}': {}", prefix, path, std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      ::mechlens::detail::raise<IoError>("{}'{}' is not a regular file", prefix, path);
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      MECHLENS_CHECK(p != MAP_FAILED, IoError, "{}cannot memory-map '{}' ({} bytes): {}", prefix, path, size_,
                     std::strerror(err));
      data_ = static_cast<const uint8_t*>(p);
    } else {
      ::close(fd);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }

  const uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mechlens::io
