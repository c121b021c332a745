#pragma once
/// \file
/// An allocator for the tokenizer's few large buffers (tokenizer.json's text, the vocabulary's
/// arena and hash table, the merge table: each one to nine megabytes for Llama-3) that asks Linux
/// for transparent huge pages (madvise(MADV_HUGEPAGE)). Memory that a process touches for the
/// first time costs one page fault per 4 KiB page; with huge pages, one per 2 MiB. Loading the
/// Llama-3 tokenizer touches about 25 MB, and on the development VM those faults were half the
/// load time. Where huge pages are unavailable (THP disabled, not Linux) this is plain memory;
/// where the kernel must first compact memory to find one (THP "defrag" set to "madvise" or
/// "always"), a fault can take longer, once per 2 MiB.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mechlens::tokenizer::detail {

template <class T>
struct HugePageAllocator {
  using value_type = T;
  /// Blocks of at least this many bytes are mapped on their own, 2 MiB-aligned, and advised to be
  /// backed by huge pages; smaller ones come from operator new.
  static constexpr std::size_t kMinBytes = std::size_t{1} << 20;
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / 2 / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= kMinBytes) {
      const std::size_t size = rounded(bytes);
      // Map 2 MiB more than needed and trim to a 2 MiB boundary, so every 2 MiB of the block can
      // be one huge page.
      void* p = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      const auto start = reinterpret_cast<std::uintptr_t>(p);
      const std::uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
      if (aligned > start) ::munmap(p, aligned - start);
      if (aligned + size < start + size + kHugePage) {
        ::munmap(reinterpret_cast<void*>(aligned + size), start + size + kHugePage - (aligned + size));
      }
      ::madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);  // advice only: failure is harmless
      return reinterpret_cast<T*>(aligned);
    }
#endif
    return static_cast<T*>(::operator new(bytes));
  }

  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= kMinBytes) {
      ::munmap(p, rounded(bytes));
      return;
    }
#endif
    ::operator delete(p);
  }

  /// Elements made without a value are default-initialised, not zeroed: a buffer resized to be
  /// written over (a file read into it, keys copied in) is not cleared first.
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }

  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const noexcept {
    return false;
  }

 private:
  static std::size_t rounded(std::size_t bytes) { return (bytes + kHugePage - 1) & ~(kHugePage - 1); }
};

}  // namespace mechlens::tokenizer::detail
