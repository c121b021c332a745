#pragma once
/// \file
/// TensorReader: safetensors tensors read straight into the tensors that will hold them, at the
/// speed of the page cache and the host-to-device link. load_model reads checkpoints through it.
///
/// - CPU destinations of the stored dtype: several threads pread the file into the destination's
///   own memory (one copy, no temporary tensor). Another dtype: through a host buffer of
///   `chunk_bytes`, converted chunk by chunk.
/// - CUDA destinations: several threads pread a chunk into one of `staging_buffers` pinned host
///   buffers, the chunk is copied to the device asynchronously on the current stream, and the
///   threads fill the next buffer meanwhile; a buffer is reused once an event says its copy has
///   landed. Another dtype is converted on the device (a bf16 checkpoint loaded as float32 crosses
///   the link as bf16). Host memory: the staging buffers (256 MB by default), never a second copy
///   of the checkpoint.
///
/// read() returns before the device copies are done: the destination is complete after finish()
/// (or the reader's destruction). Reads go through pread, not the mapping, so a file cut short
/// since it was opened is an IoError naming it, not a SIGBUS.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/io/safetensors.hpp"

namespace mechlens::io {

/// How a TensorReader moves bytes.
struct ReadOptions {
  /// Bytes per chunk: the size of each staging buffer (device destinations) and of the host
  /// buffer that converts dtypes (CPU destinations).
  std::size_t chunk_bytes = std::size_t(64) << 20;
  /// Pinned staging buffers for device destinations: while the link copies one, the threads fill
  /// the next. At least 2.
  int staging_buffers = 4;
  /// Threads that read at once (0: LibTorch's intra-op thread count). Copying out of the page
  /// cache is bound by host memory: measured on the 16-core H200 machine, pread of a cached
  /// checkpoint gave 6.7 GB/s with 1 thread, 13.5 with 4 and 8.2 with 16 (docs/performance.md).
  int threads = 4;
  /// The smallest piece one thread reads: a chunk is split among at most
  /// chunk / piece_bytes threads.
  std::size_t piece_bytes = std::size_t(1) << 20;
};

class TensorReader {
 public:
  /// A reader for destinations on `device` (CPU, CUDA, or another device through unpinned
  /// staging). ArgumentError for options out of range.
  explicit TensorReader(at::Device device, ReadOptions options = {}) : device_(device), options_(options) {
    MECHLENS_CHECK(options_.chunk_bytes >= 8 && options_.piece_bytes >= 1 && options_.staging_buffers >= 2 &&
                       options_.threads >= 0,
                   ArgumentError,
                   "TensorReader: chunk_bytes {} must be at least 8, piece_bytes {} at least 1, staging_buffers {} at "
                   "least 2, threads {} at least 0",
                   options_.chunk_bytes, options_.piece_bytes, options_.staging_buffers, options_.threads);
    options_.chunk_bytes -= options_.chunk_bytes % 8;  // whole elements of every dtype
  }
  TensorReader(const TensorReader&) = delete;
  TensorReader& operator=(const TensorReader&) = delete;
  /// Waits for the copies still in flight (their buffers must outlive them).
  ~TensorReader() {
    try {
      finish();
    } catch (...) {  // NOTE: a destructor must not throw; finish() only fails if the device does
    }
  }

  /// Copies tensor `info` of `file` into `dst`, converting the stored dtype to dst's. `dst` must
  /// be contiguous, on this reader's device and of the stored shape's element count
  /// (ArgumentError otherwise; the caller checks shapes with its own message). On a device the
  /// copy may still be in flight when this returns: see finish().
  void read(const SafetensorsFile& file, const TensorInfo& info, const at::Tensor& dst) {
    int64_t numel = 1;
    for (int64_t s : info.shape) numel *= s;
    // The device type, not the index: a reader made for "cuda" takes tensors on the current GPU.
    MECHLENS_CHECK(dst.defined() && dst.device().type() == device_.type() && dst.is_contiguous() && dst.numel() == numel,
                   ArgumentError,
                   "TensorReader: tensor '{}' of {} ({} elements) cannot be read into a destination {} on {} that is "
                   "{}contiguous, expected {} elements on {}",
                   info.key, file.path(), numel, dst.defined() ? shape_str(dst.sizes()) : std::string("(undefined)"),
                   dst.defined() ? dst.device().str() : std::string("-"),
                   dst.defined() && dst.is_contiguous() ? "" : "not ", numel, device_.str());
    if (numel == 0) return;
    const at::ScalarType stored = to_scalar_type(info.dtype);
    const std::size_t esize = element_size(info.dtype);
    at::Tensor flat = dst.view({-1});
    if (device_.is_cpu() && dst.scalar_type() == stored) {
      read_parallel(file, info, 0, info.nbytes(), static_cast<char*>(dst.data_ptr()));
      return;
    }
    const int64_t chunk_elems = static_cast<int64_t>(options_.chunk_bytes / esize);
    for (int64_t e0 = 0; e0 < numel; e0 += chunk_elems) {
      const int64_t ne = std::min(chunk_elems, numel - e0);
      const std::size_t n = static_cast<std::size_t>(ne) * esize;
      if (device_.is_cpu()) {
        if (!host_buffer_.defined()) host_buffer_ = at::empty({static_cast<int64_t>(options_.chunk_bytes)}, at::kByte);
        read_parallel(file, info, static_cast<uint64_t>(e0) * esize, n, static_cast<char*>(host_buffer_.data_ptr()));
        flat.narrow(0, e0, ne).copy_(at::from_blob(host_buffer_.data_ptr(), {ne}, at::TensorOptions().dtype(stored)));
        continue;
      }
      Slot& slot = next_slot();
      read_parallel(file, info, static_cast<uint64_t>(e0) * esize, n, static_cast<char*>(slot.buffer.data_ptr()));
      const at::Tensor staged = at::from_blob(slot.buffer.data_ptr(), {ne}, at::TensorOptions().dtype(stored));
      if (dst.scalar_type() == stored) {
        flat.narrow(0, e0, ne).copy_(staged, /*non_blocking=*/true);
      } else {
        // The stored dtype crosses the link; the conversion runs on the device. The scratch
        // tensor's memory is reused by the allocator in stream order, after the copy below.
        at::Tensor scratch = at::empty({ne}, dst.options().dtype(stored));
        scratch.copy_(staged, /*non_blocking=*/true);
        flat.narrow(0, e0, ne).copy_(scratch);
      }
      record(slot, dst.device());
    }
  }

  /// Waits until every copy issued by read() has landed in its destination.
  void finish() {
    for (Slot& slot : slots_) wait(slot);
  }

 private:
  struct Slot {
    at::Tensor buffer;              // [chunk_bytes] bytes, pinned for CUDA
    std::optional<c10::Event> done;  // recorded after the copies out of buffer
  };

  /// Bytes [offset, offset + n) of the tensor's data into out, one equal piece per thread.
  void read_parallel(const SafetensorsFile& file, const TensorInfo& info, uint64_t offset, std::size_t n,
                     char* out) const {
    const std::size_t threads = options_.threads > 0 ? options_.threads : std::max(1, at::get_num_threads());
    const std::size_t count = std::max<std::size_t>(1, std::min(threads, n / options_.piece_bytes));
    const std::size_t piece = (n + count - 1) / count;
    const auto pieces = static_cast<int64_t>((n + piece - 1) / piece);
    at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const std::size_t start = static_cast<std::size_t>(i) * piece;
        file.read_bytes(info, offset + start, out + start, std::min(piece, n - start));
      }
    });
  }

  /// The next staging buffer, once its previous copy has landed.
  Slot& next_slot() {
    if (slots_.empty()) {
      const auto options = at::TensorOptions().dtype(at::kByte).pinned_memory(device_.is_cuda());
      for (int i = 0; i < options_.staging_buffers; ++i)
        slots_.push_back({at::empty({static_cast<int64_t>(options_.chunk_bytes)}, options), std::nullopt});
    }
    Slot& slot = slots_[next_ % slots_.size()];
    ++next_;
    wait(slot);
    return slot;
  }

  /// Marks the slot's copies, just issued on `device`'s current stream.
  void record(Slot& slot, at::Device device) {
    const auto* impl = c10::impl::getDeviceGuardImpl(device.type());
    if (!slot.done) slot.done.emplace(device.type());
    slot.done->record(impl->getStream(device));
  }

  static void wait(const Slot& slot) {
    // NOTE: polled, not Event::synchronize (LibTorch 1.13's c10::Event has none); a copy of one
    // chunk takes a millisecond or two, so the poll costs nothing measurable.
    while (slot.done && !slot.done->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }

  at::Device device_;
  ReadOptions options_;
  std::vector<Slot> slots_;
  std::size_t next_ = 0;
  at::Tensor host_buffer_;  // CPU destinations of another dtype
};

}  // namespace mechlens::io
