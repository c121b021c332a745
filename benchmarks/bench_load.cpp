// Loading a checkpoint from disk, measured — never asserted: load_model (the staged path, and the
// plain per-tensor path it replaced) and the tokenizer beside it, in one process, the device
// already initialised so that only loading is timed. benchmarks/run_study_benchmarks.sh runs it
// on the GPU machine beside transformers' from_pretrained (benchmarks/hf_load.py).
//
//   bench_load --model /tmp/llama3-8b --device cuda --dtype bfloat16 --repeats 3
//
// Prints one JSON object: checkpoint bytes, each load's seconds, their median, GB/s, peak device
// memory over the weights (CUDA), the plain path's seconds (median; one load on CUDA), the
// tokenizer's load seconds.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mechlens/core/dtype.hpp>
#include <mechlens/io/hf_checkpoint.hpp>
#include <mechlens/models/load.hpp>
#include <mechlens/tokenizer/tokenizer.hpp>

#ifdef MECHLENS_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

using namespace mechlens;
using Clock = std::chrono::steady_clock;

namespace {

void sync(const at::Device& d) {
#ifdef MECHLENS_WITH_CUDA
  if (d.is_cuda()) c10::cuda::device_synchronize();
#endif
  (void)d;
}

/// Peak bytes allocated on the GPU since the last reset (0 on the CPU), in GiB.
double take_peak_gib(const at::Device& d) {
#ifdef MECHLENS_WITH_CUDA
  if (d.is_cuda()) {
    const int index = d.index() < 0 ? 0 : d.index();
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    const double peak = static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(index);
    return peak;
  }
#endif
  (void)d;
  return 0.0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, device_name = "cpu", dtype_name = "bfloat16";
  int repeats = 3, threads = -1;
  bool plain = true, breakdown = false;
  std::string only;
  CLI::App app{"Times load_model (staged and plain) and the tokenizer on a checkpoint folder"};
  app.add_option("--model", dir, "checkpoint folder (config.json + safetensors)")->required();
  app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  app.add_option("--dtype", dtype_name, "float32, bfloat16 or float16")->capture_default_str();
  app.add_option("--repeats", repeats, "loads of the staged path (median reported)")->capture_default_str();
  app.add_flag("!--no-plain", plain, "skip the plain per-tensor path (one load)");
  app.add_option("--only", only, "time one path alone, --repeats times: staged or plain (with --repeats 1 in fresh "
                                 "processes, the first load of a process, as a program sees it)")
      ->check(CLI::IsMember({"staged", "plain"}));
  app.add_option("--threads", threads, "reading threads (LoadOptions::read.threads; default: the library's)");
  app.add_flag("--breakdown", breakdown, "time load_model's steps, and reading and copying apart");
  CLI11_PARSE(app, argc, argv);

  const at::Device device(device_name);
  const at::ScalarType dtype = parse_dtype(dtype_name);
  at::empty({1}, at::TensorOptions().device(device));  // the device's start-up is not loading
  sync(device);
  take_peak_gib(device);

  double bytes = 0;
  {
    const io::SafetensorsCheckpoint checkpoint(dir);
    for (const auto& shard : checkpoint.shards()) bytes += static_cast<double>(std::filesystem::file_size(shard.path()));
  }
  auto time_load = [&](WeightCopy copy, double* peak) {
    LoadOptions options{dtype, device};
    options.weight_copy = copy;
    if (threads >= 0) options.read.threads = threads;
    const auto t0 = Clock::now();
    Model model = load_model(dir, options);
    sync(device);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    double weights = 0;
    for (const auto& p : model->parameters()) weights += static_cast<double>(p.numel()) * p.element_size();
    model = Model{nullptr};
    const double peak_total = take_peak_gib(device);
    if (peak) *peak = peak_total - weights / (1ull << 30);
    return s;
  };

  nlohmann::json out;
  out["model"] = dir;
  out["device"] = device.str();
  out["dtype"] = dtype_name;
  out["checkpoint_gb"] = bytes / 1e9;
  // The two paths alternate, so that both see the same machine (on the GPU the plain path runs
  // once: it is the slow one).
  std::vector<double> staged, plain_s;
  double peak_over = 0, plain_peak = 0;
  if (only == "plain") {
    for (int r = 0; r < repeats; ++r) plain_s.push_back(time_load(WeightCopy::PerTensor, &plain_peak));
    out["plain_runs_s"] = plain_s;
    out["plain_s"] = median(plain_s);
    out["plain_peak_over_weights_gib"] = plain_peak;
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  if (only == "staged") plain = false;
  for (int r = 0; r < repeats; ++r) {
    staged.push_back(time_load(WeightCopy::Staged, &peak_over));
    if (plain && (r == 0 || !device.is_cuda())) plain_s.push_back(time_load(WeightCopy::PerTensor, &plain_peak));
  }
  out["staged_s"] = staged;
  out["staged_median_s"] = median(staged);
  out["staged_gb_per_s"] = bytes / 1e9 / median(staged);
  out["staged_peak_over_weights_gib"] = peak_over;
  if (plain) {
    out["plain_runs_s"] = plain_s;
    out["plain_s"] = median(plain_s);
    out["plain_peak_over_weights_gib"] = plain_peak;
  }
  if (breakdown) {
    // load_model's steps one by one, then the two halves of the staged copy alone: reading the
    // files into pinned host memory (no device), and host-to-device copies of one pinned buffer.
    auto secs = [&](auto&& fn) {
      sync(device);
      const auto t0 = Clock::now();
      fn();
      sync(device);
      return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    nlohmann::json b;
    ModelConfig cfg;
    b["config_s"] = secs([&] { cfg = ModelConfig::from_file(dir); });
    std::optional<io::SafetensorsCheckpoint> checkpoint;
    b["open_checkpoint_s"] = secs([&] { checkpoint.emplace(dir); });
    Model model{nullptr};
    b["build_model_s"] = secs([&] { model = Model(cfg, at::TensorOptions().dtype(dtype).device(device), Projections::Fused); });
    b["load_weights_s"] = secs([&] { load_weights(*model, *checkpoint); });
    model = Model{nullptr};
    take_peak_gib(device);
    const auto pinned = at::TensorOptions().dtype(at::kByte).pinned_memory(device.is_cuda());
    const int64_t chunk = int64_t(64) << 20;
    at::Tensor host = at::empty({chunk}, pinned);
    // t threads, each reading whole 64 MB chunks (taken in turn) into its own pinned buffer: how
    // TensorReader's workers read, without the device.
    std::vector<std::pair<const io::SafetensorsFile*, const io::TensorInfo*>> chunks_of;
    std::vector<uint64_t> chunk_offsets;
    for (const auto& key : checkpoint->keys()) {
      const auto& file = checkpoint->file_of(key);
      for (uint64_t off = 0; off < file.info(key).nbytes(); off += chunk) {
        chunks_of.emplace_back(&file, &file.info(key));
        chunk_offsets.push_back(off);
      }
    }
    for (int t : {1, 2, 4, 8, 16}) {
      std::vector<at::Tensor> buffers;
      for (int k = 0; k < t; ++k) buffers.push_back(at::empty({chunk}, pinned));
      std::atomic<size_t> next{0};
      const double read_s = secs([&] {
        std::vector<std::thread> pool;
        for (int k = 0; k < t; ++k)
          pool.emplace_back([&, k] {
            for (size_t i = next++; i < chunks_of.size(); i = next++) {
              const auto& [file, info] = chunks_of[i];
              const uint64_t off = chunk_offsets[i];
              file->read_bytes(*info, off, buffers[k].data_ptr(), std::min<uint64_t>(chunk, info->nbytes() - off));
            }
          });
        for (auto& th : pool) th.join();
      });
      b["read_to_pinned_gb_per_s_threads" + std::to_string(t)] = bytes / 1e9 / read_s;
    }
    if (device.is_cuda()) {
      at::Tensor dev = at::empty({chunk}, at::TensorOptions().dtype(at::kByte).device(device));
      const int64_t reps = static_cast<int64_t>(bytes / chunk);
      const double copy_s = secs([&] {
        for (int64_t r = 0; r < reps; ++r) dev.copy_(host, /*non_blocking=*/true);
      });
      b["pinned_to_device_gb_per_s"] = reps * chunk / 1e9 / copy_s;
    }
    b["threads"] = at::get_num_threads();
    out["breakdown"] = b;
  }
  if (std::filesystem::exists(dir + "/tokenizer.json")) {
    std::vector<double> tok;
    for (int r = 0; r < std::max(repeats, 3); ++r) {
      const auto t0 = Clock::now();
      Tokenizer t = Tokenizer::from_file(dir);
      tok.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    out["tokenizer_s"] = tok;
    out["tokenizer_median_s"] = median(tok);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
