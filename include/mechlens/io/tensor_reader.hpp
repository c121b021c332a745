#pragma once
/// \file
/// TensorReader: safetensors tensors read straight into the tensors that will hold them, at the
/// speed of the page cache and the host-to-device link. load_model reads checkpoints through it.
///
/// The tensors are cut into chunks of `chunk_bytes`, and `threads` workers each take the next
/// chunk and read it with one pread, the way a checkpoint is fastest read out of the page cache
/// (long sequential reads, no barrier between threads):
/// - CPU destinations of the stored dtype: the chunk is read into the destination's own memory
///   (one copy, no temporary tensor). Another dtype: through the worker's host buffer, converted.
/// - CUDA destinations: the chunk is read into one of the worker's `staging_buffers` pinned host
///   buffers and copied to the device asynchronously while the worker reads its next chunk into
///   the other buffer; a buffer is reused once an event says its copy has landed. Another dtype
///   is converted on the device (a bf16 checkpoint loaded as float32 crosses the link as bf16).
///   Host memory: threads x staging_buffers x chunk_bytes (512 MB by default), never a second
///   copy of the checkpoint.
///
/// read() returns when every byte has landed. Reads go through pread, not the mapping, so a file
/// cut short since it was opened is an IoError naming it, not a SIGBUS.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/io/safetensors.hpp"

namespace mechlens::io {

/// How a TensorReader moves bytes.
struct ReadOptions {
  /// Bytes per chunk: what one worker reads with one pread, and the size of each staging buffer.
  std::size_t chunk_bytes = std::size_t(64) << 20;
  /// Pinned staging buffers per worker for device destinations (while the link copies one, the
  /// worker fills another). At least 2.
  int staging_buffers = 2;
  /// Workers reading at once (0: LibTorch's intra-op thread count). Copying out of the page cache
  /// is bound by host memory, so a few long readers beat many: measured on the 16-core H200
  /// machine, 64 MB preads of a cached checkpoint gave 6.7 GB/s with 1 thread, 13.5 with 4 and
  /// 8.2 with 16 (docs/performance.md).
  int threads = 4;
};

/// One tensor to read: entry `info` of `file` into `dst`.
struct ReadJob {
  const SafetensorsFile* file;
  const TensorInfo* info;
  at::Tensor dst;
};

class TensorReader {
 public:
  /// A reader for destinations on `device`'s type (CPU, CUDA, or another device through
  /// unpinned staging). ArgumentError for options out of range.
  explicit TensorReader(at::Device device, ReadOptions options = {}) : device_(device), options_(options) {
    MECHLENS_CHECK(options_.chunk_bytes >= 8 && options_.staging_buffers >= 2 && options_.threads >= 0, ArgumentError,
                   "TensorReader: chunk_bytes {} must be at least 8, staging_buffers {} at least 2, threads {} at "
                   "least 0",
                   options_.chunk_bytes, options_.staging_buffers, options_.threads);
    options_.chunk_bytes -= options_.chunk_bytes % 8;  // whole elements of every dtype
  }

  /// Copies each job's tensor into its destination, converting the stored dtype to the
  /// destination's, and returns once all of it has landed. A destination must be contiguous, on
  /// this reader's device type and of the stored shape's element count (ArgumentError otherwise,
  /// raised before anything is read; callers check shapes with their own message). IoError
  /// naming the file if one was cut short since it was opened.
  void read(const std::vector<ReadJob>& jobs) {
    struct Chunk {
      std::size_t job;
      int64_t e0, ne;  // elements [e0, e0 + ne) of the tensor
    };
    std::vector<Chunk> chunks;
    uint64_t total = 0;
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      total += jobs[j].info->nbytes();
      const int64_t numel = checked_numel(jobs[j]);
      const int64_t step = static_cast<int64_t>(options_.chunk_bytes / element_size(jobs[j].info->dtype));
      for (int64_t e0 = 0; e0 < numel; e0 += step) chunks.push_back({j, e0, std::min(step, numel - e0)});
    }
    const std::size_t wanted = options_.threads > 0 ? options_.threads : std::max(1, at::get_num_threads());
    // A thread per chunk's worth of bytes at most: a small model is read on this thread alone.
    const auto chunks_worth = static_cast<std::size_t>((total + options_.chunk_bytes - 1) / options_.chunk_bytes);
    const std::size_t workers = std::min({wanted, chunks.size(), std::max<std::size_t>(1, chunks_worth)});
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&] {
      // Grad mode is per thread: the destinations (parameters, views of them) take no gradient.
      at::NoGradGuard no_grad;
      Worker worker(device_, options_);
      try {
        for (std::size_t i = next++; i < chunks.size() && !failed; i = next++) {
          const Chunk& c = chunks[i];
          worker.read(jobs[c.job], c.e0, c.ne);
        }
        worker.finish();
      } catch (...) {
        failed = true;
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        worker.finish_quietly();
      }
    };
    if (workers <= 1) {
      work();
    } else {
      std::vector<std::thread> pool;
      for (std::size_t w = 0; w < workers; ++w) pool.emplace_back(work);
      for (auto& t : pool) t.join();
    }
    if (error) std::rethrow_exception(error);
  }

  /// One tensor: read({{&file, &info, dst}}).
  void read(const SafetensorsFile& file, const TensorInfo& info, const at::Tensor& dst) { read({{&file, &info, dst}}); }

 private:
  /// The element count of the job's tensor, once its destination is checked.
  int64_t checked_numel(const ReadJob& job) const {
    int64_t numel = 1;
    for (int64_t s : job.info->shape) numel *= s;
    const at::Tensor& dst = job.dst;
    // The device type, not the index: a reader made for "cuda" takes tensors on any GPU.
    MECHLENS_CHECK(dst.defined() && dst.device().type() == device_.type() && dst.is_contiguous() && dst.numel() == numel,
                   ArgumentError,
                   "TensorReader: tensor '{}' of {} ({} elements) cannot be read into a destination {} on {} that is "
                   "{}contiguous, expected {} elements on {}",
                   job.info->key, job.file->path(), numel,
                   dst.defined() ? shape_str(dst.sizes()) : std::string("(undefined)"),
                   dst.defined() ? dst.device().str() : std::string("-"),
                   dst.defined() && dst.is_contiguous() ? "" : "not ", numel, device_.str());
    return numel;
  }

  /// One reading thread and its buffers.
  class Worker {
   public:
    Worker(at::Device device, const ReadOptions& options) : device_(device), options_(options) {}
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() { finish_quietly(); }

    /// Elements [e0, e0 + ne) of the job's tensor into its destination.
    void read(const ReadJob& job, int64_t e0, int64_t ne) {
      const at::ScalarType stored = to_scalar_type(job.info->dtype);
      const std::size_t esize = element_size(job.info->dtype);
      const uint64_t offset = static_cast<uint64_t>(e0) * esize;
      const std::size_t n = static_cast<std::size_t>(ne) * esize;
      const at::Tensor& dst = job.dst;
      if (device_.is_cpu() && dst.scalar_type() == stored) {
        job.file->read_bytes(*job.info, offset, static_cast<char*>(dst.data_ptr()) + offset, n);
        return;
      }
      at::Tensor part = dst.view({-1}).narrow(0, e0, ne);
      if (device_.is_cpu()) {
        if (!host_buffer_.defined() || static_cast<std::size_t>(host_buffer_.numel()) < n)
          host_buffer_ = at::empty({static_cast<int64_t>(n)}, at::kByte);  // at most chunk_bytes
        job.file->read_bytes(*job.info, offset, host_buffer_.data_ptr(), n);
        part.copy_(at::from_blob(host_buffer_.data_ptr(), {ne}, at::TensorOptions().dtype(stored)));
        return;
      }
      Slot& slot = next_slot();
      job.file->read_bytes(*job.info, offset, slot.buffer.data_ptr(), n);
      const at::Tensor staged = at::from_blob(slot.buffer.data_ptr(), {ne}, at::TensorOptions().dtype(stored));
      if (dst.scalar_type() == stored) {
        part.copy_(staged, /*non_blocking=*/true);
      } else {
        // The stored dtype crosses the link; the conversion runs on the device. The scratch
        // tensor's memory is reused by the allocator in stream order, after the copy below.
        at::Tensor scratch = at::empty({ne}, dst.options().dtype(stored));
        scratch.copy_(staged, /*non_blocking=*/true);
        part.copy_(scratch);
      }
      const auto* impl = c10::impl::getDeviceGuardImpl(dst.device().type());
      if (!slot.done) slot.done.emplace(dst.device().type());
      slot.done->record(impl->getStream(dst.device()));
    }

    /// Waits until this worker's copies have landed.
    void finish() {
      for (Slot& slot : slots_) wait(slot);
    }
    /// finish() for the error path and the destructor: the buffers must outlive their copies.
    void finish_quietly() noexcept {
      try {
        finish();
      } catch (...) {  // NOTE: only a failing device gets here; its error is reported elsewhere
      }
    }

   private:
    struct Slot {
      at::Tensor buffer;              // [chunk_bytes] bytes, pinned for CUDA
      std::optional<c10::Event> done;  // recorded after the copies out of buffer
    };

    /// The next staging buffer, once its previous copy has landed.
    Slot& next_slot() {
      if (slots_.empty()) {
        const auto options = at::TensorOptions().dtype(at::kByte).pinned_memory(device_.is_cuda());
        for (int i = 0; i < options_.staging_buffers; ++i)
          slots_.push_back({at::empty({static_cast<int64_t>(options_.chunk_bytes)}, options), std::nullopt});
      }
      Slot& slot = slots_[next_++ % slots_.size()];
      wait(slot);
      return slot;
    }

    static void wait(const Slot& slot) {
      // NOTE: polled, not Event::synchronize (LibTorch 1.13's c10::Event has none); a chunk's
      // copy takes about a millisecond, so the poll costs nothing measurable.
      while (slot.done && !slot.done->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }

    at::Device device_;
    const ReadOptions& options_;
    std::vector<Slot> slots_;
    std::size_t next_ = 0;
    at::Tensor host_buffer_;  // CPU destinations of another dtype
  };

  at::Device device_;
  ReadOptions options_;
};

}  // namespace mechlens::io
