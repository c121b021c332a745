#pragma once
// CLI11 checks shared by the mechlens CLI (examples/cli) and the DEC7 programs (examples/dec7).

#include <cmath>
#include <exception>
#include <limits>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

namespace mechlens::cli {

/// A CLI11 check: a finite number in [low, high] (or (low, high] with low_open). CLI11's own
/// range checks let "nan" through (every comparison with NaN is false).
inline CLI::Validator finite_number(double low, bool low_open, double high) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) return "'" + text + "' is not a number";
        } catch (const std::exception&) {
          return "'" + text + "' is not a number";
        }
        if (!std::isfinite(v)) return "'" + text + "' is not a finite number";
        if ((low_open ? v <= low : v < low) || v > high)
          return fmt::format("{} is outside {}{}, {}]", text, low_open ? "(" : "[", low,
                             std::isinf(high) ? std::string("inf") : fmt::format("{}", high));
        return {};
      },
      low_open ? "NUMBER in (low, high]" : "NUMBER in [low, high]");
}

}  // namespace mechlens::cli
