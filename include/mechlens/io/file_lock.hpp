#pragma once
/// \file
/// An advisory, exclusive lock on a file (flock(2)), taken without waiting: a second process
/// that asks for the same lock gets an IoError at once, naming the file and the pid of the
/// process that holds it (the holder writes its pid into the file). The lock lasts as long as
/// the FileLock object, and the kernel drops it when the process ends in any way (exit, crash,
/// SIGKILL), so a lock is never left behind by a killed process. The file itself stays (removing
/// it would let two processes lock two different files of the same name).
///
/// Advisory: only processes that ask for the lock are kept out; it does not stop a plain write.
/// flock locks are per open file: a second FileLock on the same file in the same process is
/// refused too. The descriptor is close-on-exec, so programs the holder starts do not inherit it.
///
///   auto lock = mechlens::io::FileLock::acquire(out + "/.lock", "run folder '" + out + "'");

#include <fcntl.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "mechlens/core/error.hpp"

namespace mechlens::io {

class FileLock {
 public:
  FileLock() = default;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}
  FileLock& operator=(FileLock&& other) noexcept {
    if (this != &other) {
      release();
      fd_ = std::exchange(other.fd_, -1);
      path_ = std::move(other.path_);
    }
    return *this;
  }
  ~FileLock() { release(); }

  /// Locks `path` (created when missing) or throws IoError. `what` names the thing the lock
  /// protects in the message, e.g. "run folder 'runs/demo'".
  static FileLock acquire(const std::string& path, const std::string& what) {
    FileLock lock;
    lock.path_ = path;
    lock.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    MECHLENS_CHECK(lock.fd_ >= 0, IoError, "cannot open the lock file '{}' of the {}: {}", path, what,
                   std::strerror(errno));
    int rc;
    do {
      rc = ::flock(lock.fd_, LOCK_EX | LOCK_NB);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int err = errno;
      MECHLENS_CHECK(err == EWOULDBLOCK, IoError, "cannot lock '{}' (the {}): {}", path, what, std::strerror(err));
      const long holder = read_pid(lock.fd_);
      ::mechlens::detail::raise<IoError>(
          "the {} is in use by another process ({}), which holds the lock '{}'; wait for it to finish (or stop it), "
          "or use another folder",
          what, holder > 0 ? "pid " + std::to_string(holder) : std::string("pid not yet written"), path);
    }
    // Ours: the pid goes in for the next one who asks.
    const std::string pid = std::to_string(static_cast<long>(::getpid())) + "\n";
    MECHLENS_CHECK(::ftruncate(lock.fd_, 0) == 0 && ::pwrite(lock.fd_, pid.data(), pid.size(), 0) ==
                                                       static_cast<ssize_t>(pid.size()),
                   IoError, "cannot write the pid into the lock file '{}': {}", path, std::strerror(errno));
    return lock;
  }

  /// Whether this object holds a lock.
  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

  /// Drops the lock now (the destructor does it otherwise).
  void release() {
    if (fd_ >= 0) ::close(fd_);  // closing the only descriptor of the open file drops the flock
    fd_ = -1;
  }

  /// The pid written in an open lock file (0 when none can be read).
  static long read_pid(int fd) {
    char buf[32] = {0};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    long pid = 0;
    for (ssize_t i = 0; i < n && i < 18 && buf[i] >= '0' && buf[i] <= '9'; ++i) pid = pid * 10 + (buf[i] - '0');
    return pid;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace mechlens::io
