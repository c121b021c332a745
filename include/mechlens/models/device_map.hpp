#pragma once
/// \file
/// DeviceMap: which device each decoder layer of a model lives on, for a model larger than one
/// device (LoadOptions::device_map). Explicit ranges, `{{0, 16, cuda:0}, {16, 32, cuda:1}}` or the
/// text "0:16=cuda:0,16:32=cpu" (what a command line passes), or "auto": layers in order fill
/// each GPU's free memory (less a reserve for activations and the KV cache), then the CPU, as
/// accelerate's "auto" does. The token embedding, the final norm and the unembedding stay with
/// the first layer (the model's device(): where ids go in and logits come out); hidden states
/// move from device to device between layers, and each layer's KV cache is on its layer's device.

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "mechlens/core/dtype.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/kernels/cuda_driver_api.hpp"
#include "mechlens/models/model_config.hpp"

namespace mechlens {

struct DeviceMap {
  /// Layers [begin, end) on `device`.
  struct Range {
    int64_t begin = 0;
    int64_t end = 0;
    at::Device device = at::kCPU;
  };
  /// Explicit placement: ranges covering every layer exactly once (any order).
  std::vector<Range> ranges;
  /// Place by free memory ("auto"); `ranges` must then be empty.
  bool automatic = false;
  /// With automatic: the fraction of each GPU's free memory the weights may take (the rest is
  /// left to activations, the KV cache and the CUDA graph).
  double gpu_fraction = 0.9;

  /// No map: the whole model on LoadOptions::device.
  bool empty() const { return ranges.empty() && !automatic; }

  static DeviceMap automatic_map() {
    DeviceMap m;
    m.automatic = true;
    return m;
  }

  /// "auto", or comma-separated "begin:end=device" ranges ("0:16=cuda:0,16:32=cpu"); "" is no map.
  static DeviceMap parse(const std::string& text) {
    DeviceMap m;
    if (text.empty()) return m;
    if (text == "auto") return automatic_map();
    std::stringstream all(text);
    std::string item;
    while (std::getline(all, item, ',')) {
      const auto colon = item.find(':'), eq = item.find('=');
      MECHLENS_CHECK(colon != std::string::npos && eq != std::string::npos && colon < eq, ArgumentError,
                     "device map '{}': '{}' is not begin:end=device (e.g. 0:16=cuda:0)", text, item);
      auto layer = [&](const std::string& digits) {
        MECHLENS_CHECK(!digits.empty() && digits.size() <= 9 &&
                           digits.find_first_not_of("0123456789") == std::string::npos,
                       ArgumentError, "device map '{}': '{}' is not begin:end=device with whole layer numbers", text,
                       item);
        return static_cast<int64_t>(std::stoll(digits));
      };
      Range r;
      r.begin = layer(item.substr(0, colon));
      r.end = layer(item.substr(colon + 1, eq - colon - 1));
      r.device = parse_device(item.substr(eq + 1));
      m.ranges.push_back(r);
    }
    return m;
  }

  /// Explicit ranges checked against a model of `n_layers` layers: one device per layer.
  std::vector<at::Device> layer_devices(int64_t n_layers) const {
    MECHLENS_CHECK(!automatic, ArgumentError, "DeviceMap::layer_devices: an automatic map is planned by plan()");
    std::vector<int> owner(static_cast<size_t>(n_layers), -1);
    std::vector<at::Device> out(static_cast<size_t>(n_layers), at::kCPU);
    for (size_t i = 0; i < ranges.size(); ++i) {
      const Range& r = ranges[i];
      MECHLENS_CHECK(r.begin >= 0 && r.begin < r.end && r.end <= n_layers, ArgumentError,
                     "device map: layers {}:{} are not a range within the model's {} layers", r.begin, r.end, n_layers);
      for (int64_t l = r.begin; l < r.end; ++l) {
        MECHLENS_CHECK(owner[static_cast<size_t>(l)] < 0, ArgumentError,
                       "device map: layer {} is placed twice ({}:{} and {}:{})", l,
                       ranges[static_cast<size_t>(owner[static_cast<size_t>(l)])].begin,
                       ranges[static_cast<size_t>(owner[static_cast<size_t>(l)])].end, r.begin, r.end);
        owner[static_cast<size_t>(l)] = static_cast<int>(i);
        out[static_cast<size_t>(l)] = r.device;
      }
    }
    for (int64_t l = 0; l < n_layers; ++l)
      MECHLENS_CHECK(owner[static_cast<size_t>(l)] >= 0, ArgumentError,
                     "device map: layer {} of {} is on no device (the ranges must cover 0:{})", l, n_layers, n_layers);
    return out;
  }

  /// A device and the bytes of weights it may take.
  struct Budget {
    at::Device device = at::kCPU;
    double bytes = 0;
  };
  /// Places layers in order: the first layer, with the embedding and head (`head_bytes`), on the
  /// first device with room for both; each further layer on the current device while it fits,
  /// else the next. Layers that fit nowhere are an error naming what is needed.
  static std::vector<at::Device> plan(int64_t n_layers, double layer_bytes, double head_bytes,
                                      const std::vector<Budget>& budgets) {
    std::vector<at::Device> out;
    size_t d = 0;
    double used = 0;
    for (int64_t l = 0; l < n_layers; ++l) {
      const double need = layer_bytes + (l == 0 ? head_bytes : 0.0);
      while (d < budgets.size() && used + need > budgets[d].bytes) {
        ++d;
        used = 0;
      }
      if (d == budgets.size()) {
        std::string where;
        for (const Budget& b : budgets)
          where += fmt::format("{}{} {:.3g} GiB", where.empty() ? "" : ", ", b.device.str(), b.bytes / 1073741824.0);
        detail::raise<ArgumentError>("device map auto: {} layers of {:.3g} GiB (+ {:.3g} GiB embedding and head) do not "
                                     "fit the memory available ({}); layer {} has no room",
                                     n_layers, layer_bytes / 1073741824.0, head_bytes / 1073741824.0, where, l);
      }
      used += need;
      out.push_back(budgets[d].device);
    }
    return out;
  }
};

namespace detail {
/// CUDA devices this process sees (0 without CUDA), asked without CUDA headers.
inline int64_t cuda_device_count() {
  return at::hasCUDA() ? c10::impl::getDeviceGuardImpl(at::kCUDA)->deviceCount() : 0;
}

/// Free bytes on each CUDA device (the driver's cuMemGetInfo: no CUDA header needed). The
/// thread's current device is the same afterwards.
inline std::vector<double> cuda_free_bytes() {
  std::vector<double> out;
  const int64_t n = cuda_device_count();
  if (n == 0) return out;
  std::string why;
  const kernels::driver::Api* cu = kernels::driver::api(&why);
  MECHLENS_CHECK(cu && cu->mem_get_info, ArgumentError,
                 "device map auto: the free memory of the GPUs cannot be asked ({}); give the layer ranges explicitly",
                 cu ? "the driver lacks cuMemGetInfo_v2" : why);
  // The driver asks the thread's current context: each device's primary context in turn (the one
  // LibTorch's runtime works in), then the current device's again.
  auto make_current = [&](int64_t index) {
    kernels::driver::Device dev = 0;
    kernels::driver::Context context = nullptr;
    kernels::driver::Result r = cu->device_get(&dev, static_cast<int>(index));
    if (r == kernels::driver::kSuccess) r = cu->primary_context_retain(&context, dev);
    if (r == kernels::driver::kSuccess) r = cu->context_set_current(context);
    MECHLENS_CHECK(r == kernels::driver::kSuccess, ArgumentError,
                   "device map auto: cuda:{}'s primary context could not be made current (CUresult {})", index, r);
  };
  const at::Device current = c10::impl::getDeviceGuardImpl(at::kCUDA)->getDevice();
  for (int64_t i = 0; i < n; ++i) {
    make_current(i);
    size_t free_bytes = 0, total_bytes = 0;
    const kernels::driver::Result r = cu->mem_get_info(&free_bytes, &total_bytes);
    MECHLENS_CHECK(r == kernels::driver::kSuccess, ArgumentError,
                   "device map auto: cuMemGetInfo on cuda:{} returned CUresult {}", i, r);
    out.push_back(static_cast<double>(free_bytes));
  }
  make_current(current.has_index() ? current.index() : 0);
  return out;
}
}  // namespace detail

/// Each layer's device for a model of `cfg` in `dtype` under `map` (checked against the model's
/// layers); "auto" asks each GPU's free memory and the host's (memory + swap, `host_bytes`).
inline std::vector<at::Device> place_layers(const DeviceMap& map, const ModelConfig& cfg, at::ScalarType dtype,
                                            double host_bytes) {
  if (!map.automatic) return map.layer_devices(cfg.n_layers());
  const double element = static_cast<double>(c10::elementSize(dtype));
  const double d = static_cast<double>(cfg.d_model());
  const double head = ((cfg.tie_word_embeddings ? 1 : 2) * static_cast<double>(cfg.vocab_size) * d + d) * element;
  const double layer = (cfg.parameter_count() * element - head) / static_cast<double>(cfg.n_layers());
  std::vector<DeviceMap::Budget> budgets;
  const std::vector<double> free = detail::cuda_free_bytes();
  for (size_t i = 0; i < free.size(); ++i)
    budgets.push_back({at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)), free[i] * map.gpu_fraction});
  budgets.push_back({at::kCPU, host_bytes > 0 ? host_bytes : 1e300});
  return DeviceMap::plan(cfg.n_layers(), layer, head, budgets);
}

}  // namespace mechlens
