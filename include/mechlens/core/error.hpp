#pragma once
/// \file
/// The one exception hierarchy of mechlens. Every message says what was expected, what arrived
/// and where (file, tensor key, hook name, argument, byte offset).

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace mechlens {

/// Base of every error mechlens throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A tensor, selection or hook output has a shape that does not fit.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A file is malformed (safetensors, JSON, tokenizer files, .npy).
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A model or tool configuration is missing a field or holds an unsupported value.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A named thing (hook, tensor key, token, file) does not exist.
class NotFoundError : public Error {
 public:
  using Error::Error;
};

/// A caller passed an argument outside its domain (layer 40 of 32, head 9 of 8...).
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// An I/O operation failed (open, read, write, rename).
class IoError : public Error {
 public:
  using Error::Error;
};

/// Throws E with a fmt-formatted message: `mechlens::raise<ArgumentError>("layer {} of {}", l, n)`.
/// For code outside the library (experiment programs, user tools) as much as inside it.
template <class E, class... Args>
[[noreturn]] void raise(fmt::format_string<Args...> f, Args&&... args) {
  throw E(fmt::format(f, std::forward<Args>(args)...));
}

namespace detail {
using ::mechlens::raise;  // the name the library's own code has always used
}  // namespace detail

}  // namespace mechlens

/// MECHLENS_CHECK(cond, ErrorType, "format {}", args...) throws ErrorType with the formatted
/// message when cond is false; MECHLENS_THROW(ErrorType, "format {}", args...) throws it always.
#define MECHLENS_CHECK(cond, ErrorType, ...)                 \
  do {                                                       \
    if (!(cond)) ::mechlens::detail::raise<ErrorType>(__VA_ARGS__); \
  } while (false)

#define MECHLENS_THROW(ErrorType, ...) ::mechlens::raise<ErrorType>(__VA_ARGS__)
