#pragma once
/// \file
/// load_model: a Hugging Face checkpoint directory (config.json + safetensors, single file or
/// sharded) into a Model of the dtype and device you choose, e.g. a bf16 checkpoint as float32.

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#if defined(__linux__)
#include <sys/sysinfo.h>
#endif

#include "mechlens/core/dtype.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/core/torch_compat.hpp"
#include "mechlens/core/warning.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/io/hf_checkpoint.hpp"
#include "mechlens/io/tensor_reader.hpp"
#include "mechlens/models/device_map.hpp"
#include "mechlens/models/model.hpp"
#include "mechlens/models/model_config.hpp"

namespace mechlens {

/// How load_weights copies tensors out of the checkpoint.
enum class WeightCopy {
  /// io::TensorReader: several threads pread the files straight into the parameters (on CUDA
  /// through pinned staging buffers and asynchronous copies, dtype converted on the device).
  Staged,
  /// One tensor at a time: SafetensorsCheckpoint::tensor (a host copy) and then copy_ into the
  /// parameter. The plain reference the tests compare Staged with, bit for bit.
  PerTensor,
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  /// The decoder layers over several devices (models/device_map.hpp): explicit ranges
  /// (`DeviceMap::parse("0:16=cuda:0,16:32=cpu")`) or DeviceMap::automatic_map() by free memory.
  /// The embedding and head go with the first layer, which is then the model's device(); `device`
  /// must be left at the CPU default or name that same device. Empty: everything on `device`.
  DeviceMap device_map = {};
  /// Load for inference: the fast engine on (Model::fuse_projections: q/k/v and gate/up as single
  /// GEMMs, mechlens' CUDA kernels) and the weights frozen (requires_grad false; gradients with
  /// respect to activations still flow). Turn off to fine-tune the loaded model with autograd.
  bool fuse_projections = true;
  /// How the weights are copied (load_weights): Staged is the fast path; PerTensor the plain one.
  WeightCopy weight_copy = WeightCopy::Staged;
  /// The staged path's threads, chunk and staging buffers (io/tensor_reader.hpp).
  io::ReadOptions read = {};
};

namespace detail {
inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

/// Adds generation_config.json's eos_token_id(s) (e.g. Llama-3-Instruct's <|eot_id|>).
inline void read_generation_config(const std::string& dir, ModelConfig& cfg) {
  const std::string path = dir + "/generation_config.json";
  if (!file_exists(path)) return;
  auto j = io::read_json_file(path);
  MECHLENS_CHECK(j.is_object(), ConfigError, "'{}': expected a JSON object, got {}", path, j.type_name());
  for (int64_t id : read_token_ids(j, "eos_token_id", cfg.vocab_size, "'" + path + "'"))
    if (std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), id) == cfg.eos_token_ids.end())
      cfg.eos_token_ids.push_back(id);
  auto bos = read_token_ids(j, "bos_token_id", cfg.vocab_size, "'" + path + "'");
  if (!bos.empty() && !cfg.bos_token_id) cfg.bos_token_id = bos.front();
}

inline bool ignorable_extra_key(const std::string& key, const ModelConfig& cfg) {
  // Older checkpoints store rotary buffers; tied checkpoints may still store lm_head.
  return key.find("rotary_emb.inv_freq") != std::string::npos ||
         (cfg.tie_word_embeddings && key == "lm_head.weight");
}
}  // namespace detail

/// Copies every parameter of `model` from `checkpoint`. Missing keys, unexpected keys, non-float
/// tensors and shape mismatches are errors naming the key (and the checkpoint directory), raised
/// before any weight is copied.
inline void load_weights(ModelImpl& model, const io::SafetensorsCheckpoint& checkpoint,
                         WeightCopy copy = WeightCopy::Staged, const io::ReadOptions& read = {}) {
  at::NoGradGuard no_grad;
  struct Item {
    const std::string* key;
    at::Tensor* dst;
  };
  auto params = model.named_parameters(/*recurse=*/true);
  std::set<std::string> wanted;
  std::vector<std::string> missing;
  std::vector<Item> items;
  for (auto& item : params) {
    const std::string& key = item.key();
    wanted.insert(key);
    if (!checkpoint.contains(key)) {
      missing.push_back(key);
      continue;
    }
    // Weights are floating-point: an I32 or BOOL tensor would be converted and used (its bits read
    // as numbers), which no checkpoint writer does on purpose.
    const io::TensorInfo& info = checkpoint.info(key);
    const io::DType stored = info.dtype;
    MECHLENS_CHECK(stored == io::DType::F32 || stored == io::DType::BF16 || stored == io::DType::F16 ||
                       stored == io::DType::F64,
                   FormatError, "checkpoint '{}': tensor '{}' is stored as {}, but model weights are floating-point "
                   "(F32, BF16, F16 or F64)",
                   checkpoint.dir(), key, io::to_string(stored));
    const at::Tensor& dst = item.value();
    MECHLENS_CHECK(at::IntArrayRef(info.shape) == dst.sizes(), ShapeError,
                   "checkpoint '{}': tensor '{}' has shape {} but the model (from config.json) expects {}",
                   checkpoint.dir(), key, shape_str(info.shape), shape_str(dst.sizes()));
    items.push_back({&key, &item.value()});
  }
  MECHLENS_CHECK(missing.empty(), FormatError, "checkpoint '{}' lacks {} tensor(s) the model needs, e.g. '{}'",
                 checkpoint.dir(), missing.size(), missing.empty() ? "" : missing.front());
  std::vector<std::string> extra;
  for (const auto& key : checkpoint.keys())
    if (!wanted.count(key) && !detail::ignorable_extra_key(key, model.config())) extra.push_back(key);
  MECHLENS_CHECK(extra.empty(), FormatError,
                 "checkpoint '{}' holds {} tensor(s) this {} model does not have, e.g. '{}' (wrong config.json?)",
                 checkpoint.dir(), extra.size(), model.config().model_type, extra.empty() ? "" : extra.front());

  if (copy == WeightCopy::Staged) {
    // One reader per device type (a model split by device_map has parameters on the CPU and GPUs).
    std::vector<at::DeviceType> types;
    for (const Item& item : items)
      if (std::find(types.begin(), types.end(), item.dst->device().type()) == types.end())
        types.push_back(item.dst->device().type());
    for (at::DeviceType type : types) {
      std::vector<io::ReadJob> jobs;
      at::Device device = at::kCPU;
      for (const Item& item : items) {
        if (item.dst->device().type() != type) continue;
        const io::SafetensorsFile& file = checkpoint.file_of(*item.key);
        jobs.push_back({&file, &file.info(*item.key), *item.dst});
        device = item.dst->device();
      }
      io::TensorReader(device, read).read(jobs);
    }
  } else {
    for (const Item& item : items) item.dst->copy_(checkpoint.tensor(*item.key));
  }

  // transformers loads NaN / Inf weights as they are; so does mechlens, but it says so.
  if (items.empty()) return;
  std::vector<at::Tensor> finite;  // per tensor, on its device: one sync for all of them
  finite.reserve(items.size());
  constexpr int64_t kPiece = int64_t(1) << 26;
  for (const Item& item : items) {
    if (item.dst->numel() <= kPiece) {
      finite.push_back(at::isfinite(*item.dst).all());
      continue;
    }
    // In pieces of 2^26 elements: isfinite's temporaries (a copy and two masks) of a whole
    // embedding matrix would cost GPU memory beyond the weights.
    std::vector<at::Tensor> pieces;
    for (const at::Tensor& piece : item.dst->view({-1}).split(kPiece)) pieces.push_back(at::isfinite(piece).all());
    finite.push_back(at::stack(pieces).all());
  }
  // A model split by device_map: every flag on the model's device, for one stack.
  for (at::Tensor& f : finite) f = f.to(model.device());
  const at::Tensor ok = at::stack(finite).cpu();
  const bool* flags = ok.data_ptr<bool>();
  for (size_t i = 0; i < items.size(); ++i)
    if (!flags[i])
      warn("checkpoint '{}': tensor '{}' holds NaN or Inf values (loaded as they are; every output that depends "
           "on it will be NaN)",
           checkpoint.dir(), *items[i].key);
}

namespace detail {
/// Physical memory plus swap, in bytes (0 where unknown).
inline double host_memory_bytes() {
#if defined(__linux__)
  struct sysinfo info {};
  if (::sysinfo(&info) != 0) return 0;
  return (static_cast<double>(info.totalram) + static_cast<double>(info.totalswap)) * static_cast<double>(info.mem_unit);
#else
  return 0;
#endif
}
}  // namespace detail

/// Loads config.json (+ generation_config.json) and the safetensors weights of `dir`.
inline Model load_model(const std::string& dir, const LoadOptions& options = {}) {
  ModelConfig cfg = ModelConfig::from_file(dir);
  detail::read_generation_config(dir, cfg);
  // Where the layers go: all on `device`, or as device_map places them.
  std::vector<at::Device> layer_devices;
  if (!options.device_map.empty()) {
    layer_devices = place_layers(options.device_map, cfg, options.dtype, detail::host_memory_bytes());
    const at::Device& first = layer_devices.front();
    const bool agree = options.device.type() == first.type() &&
                       (!options.device.has_index() || !first.has_index() || options.device.index() == first.index());
    MECHLENS_CHECK(options.device == at::Device(at::kCPU) || agree, ArgumentError,
                   "load_model('{}'): LoadOptions::device is {} but device_map puts layer 0 (and with it the embedding "
                   "and head) on {}; leave device at its default or make them agree",
                   dir, options.device.str(), layer_devices.front().str());
  }
  const at::Device home = layer_devices.empty() ? options.device : layer_devices.front();
  double cpu_share = home.is_cpu() ? 1.0 : 0.0;  // of the parameters, roughly: layers on the CPU
  bool any_cpu = home.is_cpu();
  if (!layer_devices.empty()) {
    int64_t on_cpu = 0;
    for (const at::Device& d : layer_devices) on_cpu += d.is_cpu() ? 1 : 0;
    cpu_share = static_cast<double>(on_cpu) / static_cast<double>(layer_devices.size());
    any_cpu = any_cpu || on_cpu > 0;
  }
  MECHLENS_CHECK(!(options.dtype == at::kHalf && any_cpu && !compat::kHasCpuHalfMatmul), ArgumentError,
                 "load_model('{}'): float16 on the CPU needs LibTorch >= 2.1 (this is {}.{}, whose CPU matrix "
                 "products have no float16); load as bfloat16 or float32, or on CUDA",
                 dir, TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR);
  io::SafetensorsCheckpoint checkpoint(dir);
  const auto model_options = at::TensorOptions().dtype(options.dtype).device(home);
  // A model that cannot be allocated is named with what it needs, not left to the allocator's
  // bare message (config.json's sizes are bounded, but may still exceed this machine).
  auto cannot_allocate = [&](const std::string& why) {
    const double params = cfg.parameter_count();
    detail::raise<ArgumentError>("load_model('{}'): {:.3g} parameters in {} need {:.3g} GiB on {}, which cannot be "
                                 "allocated{}",
                                 dir, params, c10::toString(options.dtype), params * c10::elementSize(options.dtype) / 1073741824.0,
                                 layer_devices.empty() ? home.str() : "the devices of its device_map", why);
  };
  // On the CPU, more than memory and swap together is refused before allocating: where the
  // kernel overcommits, the allocation would succeed and the load be killed when it touches it.
  if (any_cpu) {
    const double need = cfg.parameter_count() * cpu_share * static_cast<double>(c10::elementSize(options.dtype));
    const double have = detail::host_memory_bytes();
    if (have > 0 && need > have)
      cannot_allocate(fmt::format(" (this machine has {:.3g} GiB of memory and swap)", have / 1073741824.0));
  }
  Model model{nullptr};
  try {
    // Built in the fused layout when it will be fused: each weight is then copied once, into its
    // place (a PerTensor load builds it separate and fuses afterwards: the plain reference path).
    const bool fused_now = options.fuse_projections && options.weight_copy == WeightCopy::Staged;
    model = Model(cfg, model_options, fused_now ? Projections::Fused : Projections::Separate, layer_devices);
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    cannot_allocate(": " + what.substr(0, what.find('\n')));
  } catch (const std::bad_alloc&) {
    cannot_allocate(" (out of host memory)");
  }
  load_weights(*model, checkpoint, options.weight_copy, options.read);
  if (options.fuse_projections) {
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    model->fuse_projections();
  }
  model->eval();
  return model;
}

}  // namespace mechlens
