#pragma once
/// \file
/// A progress bar with a rate and an ETA on stderr, redrawn in place at most ten times a second:
///
///     phase 1  [##########..........]  300/600 generations  41.2/s  7 s  ETA 7 s
///
/// Quiet when stderr is not a terminal (logs and CI stay clean) unless forced on. Work resumed
/// from an earlier run (`skip`) counts towards the total but not towards the rate.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

#include <fmt/format.h>

namespace mechlens::experiments {

class Progress {
 public:
  enum class Mode { Auto, On, Off };

  explicit Progress(int64_t total = 0, std::string unit = "generations", Mode mode = Mode::Auto)
      : total_(total), unit_(std::move(unit)) {
    enabled_ = mode == Mode::On || (mode == Mode::Auto && ::isatty(::fileno(stderr)) == 1);
    start_ = last_draw_ = Clock::now();
  }

  bool enabled() const { return enabled_; }
  void set_label(std::string label) { label_ = std::move(label); draw(true); }
  void add_total(int64_t n) { total_ += n; }
  int64_t done() const { return done_ + skipped_; }

  /// n units finished now.
  void advance(int64_t n) {
    done_ += n;
    draw(false);
  }
  /// n units already done by an earlier run.
  void skip(int64_t n) {
    skipped_ += n;
    draw(false);
  }
  /// Final redraw and a newline.
  void finish() {
    if (!enabled_ || finished_) return;
    draw(true);
    std::fputc('\n', stderr);
    finished_ = true;
  }
  ~Progress() { finish(); }

  /// "12 s", "3 min 4 s", "1 h 2 min".
  static std::string duration(double s) {
    if (!(s >= 0) || s > 1e7) return "?";
    if (s < 60) return fmt::format("{:.0f} s", s);
    if (s < 3600) return fmt::format("{:.0f} min {:.0f} s", std::floor(s / 60), std::fmod(s, 60.0));
    return fmt::format("{:.0f} h {:.0f} min", std::floor(s / 3600), std::fmod(s, 3600.0) / 60);
  }

 private:
  using Clock = std::chrono::steady_clock;

  void draw(bool force) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (!force && now - last_draw_ < std::chrono::milliseconds(100) && done() < total_) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const int64_t all = done();
    const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(all) / static_cast<double>(total_)) : 0.0;
    const int width = 24;
    const int filled = static_cast<int>(frac * width + 0.5);
    std::string bar(static_cast<size_t>(filled), '#');
    bar += std::string(static_cast<size_t>(width - filled), '.');
    const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - all) / rate : -1.0;
    std::string line = fmt::format("\r{}{}[{}] {}/{} {}  {:.1f}/s  {}  ETA {}\x1b[K", label_, label_.empty() ? "" : "  ",
                                   bar, all, total_, unit_, rate, duration(elapsed), all >= total_ ? "0 s" : duration(eta));
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  }

  int64_t total_ = 0, done_ = 0, skipped_ = 0;
  std::string unit_, label_;
  bool enabled_ = false, finished_ = false;
  Clock::time_point start_, last_draw_;
};

}  // namespace mechlens::experiments
