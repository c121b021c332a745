#pragma once
// What every fuzz target shares. A target feeds its input to one reader; a mechlens::Error is the
// expected answer to bad input and returns normally. Anything else — a foreign exception (a raw
// nlohmann, LibTorch or std exception), a crash, a hang, a sanitizer report — escapes and is a
// finding: libFuzzer stops, saves the input, and scripts/fuzz.sh reports it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <mechlens/core/error.hpp>

namespace mechlens_fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs f(); mechlens::Error is the expected refusal of bad input.
template <class F>
void refuse_or_run(F&& f) {
  try {
    f();
  } catch (const mechlens::Error&) {
  }
}

}  // namespace mechlens_fuzz
