#pragma once
// Timing, peak-memory and prompt helpers shared by the GPU benchmarks.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#ifdef MECHLENS_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace mechlens::bench {

using Clock = std::chrono::steady_clock;

inline void sync(const at::Device& d) {
#ifdef MECHLENS_WITH_CUDA
  if (d.is_cuda()) c10::cuda::device_synchronize();
#endif
  (void)d;
}

inline void reset_peak(const at::Device& d) {
#ifdef MECHLENS_WITH_CUDA
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index() < 0 ? 0 : d.index());
#endif
  (void)d;
}

/// Peak bytes allocated on the GPU since the last reset (0 on the CPU).
inline double peak_gib(const at::Device& d) {
#ifdef MECHLENS_WITH_CUDA
  if (d.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index() < 0 ? 0 : d.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  (void)d;
  return 0.0;
}

inline double seconds_of(const at::Device& d, const std::function<void()>& fn) {
  sync(d);
  auto t0 = Clock::now();
  fn();
  sync(d);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

inline std::vector<std::vector<int64_t>> random_prompts(int64_t n, int64_t len, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> token(3, vocab - 1);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(n));
  for (auto& p : out)
    for (int64_t i = 0; i < len; ++i) p.push_back(token(rng));
  return out;
}

/// Measurements printed as they come and kept for --out (benchmarks/compare.py reads them).
struct Recorder {
  nlohmann::json rows = nlohmann::json::array();
  void add(const std::string& workload, const std::string& metric, double value, const std::string& unit,
           const std::string& note = "") {
    rows.push_back({{"workload", workload}, {"metric", metric}, {"value", value}, {"unit", unit}, {"note", note}});
    std::printf("%-16s %-26s %12.3f %s %s\n", workload.c_str(), metric.c_str(), value, unit.c_str(), note.c_str());
    std::fflush(stdout);
  }
};

}  // namespace mechlens::bench
