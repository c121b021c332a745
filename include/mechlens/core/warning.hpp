#pragma once
/// \file
/// Warnings: things mechlens accepts (as transformers does) but a user should know about, e.g.
/// NaN or Inf in a checkpoint's weights. By default each is one line on stderr,
/// "mechlens: warning: ..."; `set_warning_handler` replaces that (a test collects them, a GUI
/// shows them) and returns the previous handler.

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace mechlens {

using WarningHandler = std::function<void(const std::string&)>;

namespace detail {
struct WarningState {
  std::mutex mutex;
  WarningHandler handler;
};
inline WarningState& warning_state() {
  static WarningState state;
  return state;
}
}  // namespace detail

/// Installs `handler` (empty: back to stderr) and returns the one it replaces.
inline WarningHandler set_warning_handler(WarningHandler handler) {
  auto& s = detail::warning_state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return std::exchange(s.handler, std::move(handler));
}

/// Formats the warning (fmt syntax) and reports it through the handler (stderr when none is
/// installed). A runtime string goes in as warn("{}", text).
template <class... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  const std::string message = fmt::format(format, std::forward<Args>(args)...);
  auto& s = detail::warning_state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.handler) {
    s.handler(message);
  } else {
    std::fprintf(stderr, "mechlens: warning: %s\n", message.c_str());
  }
}

}  // namespace mechlens
