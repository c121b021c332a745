#pragma once
/// \file
/// Writing a file so that readers see either the old file or the complete new one, never a
/// half-written one: the bytes go to a temporary file in the same folder, which is flushed to
/// disk (fsync) and then renamed over the destination (rename is atomic within a file system).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include "mechlens/core/error.hpp"

namespace mechlens::detail {

/// The folder holding `path` ("." when it has none), for the temporary file and the folder fsync.
inline std::string parent_folder(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

/// A temporary file beside `path` that becomes `path` on commit() and is removed otherwise.
/// The temporary name is `<path>.tmp.<pid>.<counter>`, created with O_EXCL and mode 0666 (so the
/// final file gets the usual permissions under the process umask, unlike mkstemp's 0600).
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path) : path_(std::move(path)) {
    MECHLENS_CHECK(!path_.empty(), IoError, "cannot write a file with an empty path");
    static std::atomic<unsigned long> counter{0};
    for (int attempt = 0; attempt < 100; ++attempt) {
      tmp_path_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
      fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    MECHLENS_CHECK(fd_ >= 0, IoError, "cannot create temporary file '{}' to write '{}': {}",
                   tmp_path_, path_, std::strerror(errno));
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_path_.c_str());
  }

  /// Appends `n` bytes. Throws IoError naming the destination on failure (disk full...).
  void write(const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t written = ::write(fd_, p, n);
      if (written < 0 && errno == EINTR) continue;
      MECHLENS_CHECK(written > 0, IoError, "cannot write {} bytes to '{}' (temporary '{}'): {}", n,
                     path_, tmp_path_, written < 0 ? std::strerror(errno) : "no progress");
      p += written;
      n -= static_cast<std::size_t>(written);
      bytes_written_ += static_cast<std::size_t>(written);
    }
  }

  std::size_t bytes_written() const { return bytes_written_; }

  /// Flushes the bytes to disk and renames the temporary file over the destination; afterwards
  /// flushes the folder so the rename itself survives a crash.
  void commit() {
    MECHLENS_CHECK(!committed_, IoError, "'{}' was already committed", path_);
    MECHLENS_CHECK(::fsync(fd_) == 0, IoError, "cannot flush '{}' (temporary '{}') to disk: {}",
                   path_, tmp_path_, std::strerror(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    MECHLENS_CHECK(rc == 0, IoError, "cannot close '{}' (temporary '{}'): {}", path_, tmp_path_,
                   std::strerror(errno));
    MECHLENS_CHECK(::rename(tmp_path_.c_str(), path_.c_str()) == 0, IoError,
                   "cannot rename temporary '{}' to '{}': {}", tmp_path_, path_, std::strerror(errno));
    committed_ = true;
    // Best effort: some file systems do not allow fsync on a folder, and the data is already
    // safe under its final name in every case that matters to readers of this process.
    const int dir_fd = ::open(parent_folder(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
      (void)::fsync(dir_fd);
      ::close(dir_fd);
    }
  }

 private:
  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
  std::size_t bytes_written_ = 0;
};

}  // namespace mechlens::detail

namespace mechlens::io {

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// Readers see the old content or the new one, never a mix. Throws IoError naming the path.
inline void write_file_atomically(const std::string& path, const std::string& bytes) {
  detail::AtomicFileWriter writer(path);
  writer.write(bytes.data(), bytes.size());
  writer.commit();
}

}  // namespace mechlens::io
