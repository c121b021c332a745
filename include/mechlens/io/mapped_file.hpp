#pragma once
/// \file
/// A whole file memory-mapped read-only (POSIX open / fstat / mmap), with errors that name the
/// file: NotFoundError when it does not exist, IoError when it cannot be opened, is not a regular
/// file or cannot be mapped. io/safetensors.hpp reads checkpoints through it. The descriptor stays
/// open beside the mapping, so bulk reads (read(), thread-safe) can copy straight from the page
/// cache into any buffer, and a file cut short after opening is an error, not a SIGBUS.

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
      if (p == MAP_FAILED) ::close(fd);
      MECHLENS_CHECK(p != MAP_FAILED, IoError, "{}cannot memory-map '{}' ({} bytes): {}", prefix, path, size_,
                     std::strerror(err));
      data_ = static_cast<const uint8_t*>(p);
    }
    fd_ = fd;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }

  const uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  /// Copies bytes [offset, offset + n) of the file into `out` with pread (no page faults on the
  /// mapping; safe from several threads at once). IoError naming the file when the range is past
  /// the size it had when opened, or when the file now ends sooner (truncated in place) or a read
  /// fails.
  void read(std::size_t offset, void* out, std::size_t n) const {
    MECHLENS_CHECK(offset <= size_ && n <= size_ - offset, IoError,
                   "'{}': bytes [{}, {}) are past the file's end ({})", path_, offset, offset + n, size_);
    auto* dst = static_cast<char*>(out);
    while (n > 0) {
      const ssize_t got = ::pread(fd_, dst, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        const int err = errno;
        ::mechlens::detail::raise<IoError>("'{}': cannot read bytes [{}, {}): {}", path_, offset, offset + n,
                                           got == 0 ? "the file ends sooner than when it was opened (truncated?)"
                                                    : std::strerror(err));
      }
      dst += got;
      offset += static_cast<std::size_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace mechlens::io
