#pragma once
/// \file
/// A Hugging Face checkpoint's weights: a folder with `model.safetensors`, or with shards listed
/// in `model.safetensors.index.json` ("weight_map": tensor name -> shard file), looked for in that
/// order as transformers does; or the path of one .safetensors file. Tensors are looked up by
/// name through the weight map and read from their shard (io/safetensors.hpp). Pickle
/// checkpoints (`pytorch_model.bin`, `*.bin`, `*.pt`...) are refused: unpickling can run
/// arbitrary code.

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/core/filesystem.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/io/safetensors.hpp"

namespace mechlens::detail {

/// "a, b, c".
inline std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

inline bool has_suffix(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// Files in a pickle format (PyTorch's torch.save) that mechlens refuses to read.
inline bool is_pickle_checkpoint_name(const std::string& name) {
  return has_suffix(name, ".bin") || has_suffix(name, ".pt") || has_suffix(name, ".pth") ||
         has_suffix(name, ".ckpt") || has_suffix(name, ".pkl") || name == "pytorch_model.bin.index.json";
}

[[noreturn]] inline void refuse_pickle_checkpoint(const std::string& where, const std::string& found) {
  raise<FormatError>(
      "checkpoint '{}' holds only pickle files ({}); mechlens does not read them, because "
      "unpickling can run arbitrary code. Convert the checkpoint to safetensors, e.g. in Python: "
      "transformers.AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out_dir, "
      "safe_serialization=True)",
      where, found);
}

}  // namespace mechlens::detail

namespace mechlens::io {

/// A Hugging Face checkpoint: a folder with `model.safetensors`, or with shards listed in
/// `model.safetensors.index.json` (looked for in that order, as transformers does), or the path
/// of one .safetensors file. Every shard is opened and validated, and every index entry checked
/// against its shard, in the constructor.
class SafetensorsCheckpoint {
 public:
  /// NotFoundError when the path does not exist, when the folder holds neither file, or when the
  /// index names a shard that does not exist; FormatError for a malformed index, an index entry
  /// whose shard does not hold the key, a malformed shard, or a pickle-only (.bin) checkpoint.
  explicit SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path root(dir);
    const auto status = fs::status(root, ec);
    MECHLENS_CHECK(fs::exists(status), NotFoundError, "checkpoint path '{}' does not exist", dir);

    if (!fs::is_directory(status)) {
      const std::string name = root.filename().string();
      if (detail::is_pickle_checkpoint_name(name)) detail::refuse_pickle_checkpoint(dir, name);
      add_single_file(dir);
      return;
    }

    const fs::path single = root / "model.safetensors";
    const fs::path index = root / "model.safetensors.index.json";
    if (fs::exists(single, ec)) {
      add_single_file(single.string());
      return;
    }
    if (fs::exists(index, ec)) {
      add_sharded(root, index.string());
      return;
    }

    std::vector<std::string> pickles, other_safetensors;
    for (const std::string& name : detail::list_directory(root.string())) {
      if (detail::is_pickle_checkpoint_name(name)) pickles.push_back(name);
      if (detail::has_suffix(name, ".safetensors")) other_safetensors.push_back(name);
    }
    std::sort(pickles.begin(), pickles.end());
    std::sort(other_safetensors.begin(), other_safetensors.end());
    if (!pickles.empty() && other_safetensors.empty())
      detail::refuse_pickle_checkpoint(dir, detail::join_names(pickles));
    std::string hint;
    if (!other_safetensors.empty())
      hint = fmt::format("; it holds other .safetensors files ({}), which can be opened by passing "
                         "one file's path", detail::join_names(other_safetensors));
    detail::raise<NotFoundError>(
        "checkpoint folder '{}' has neither model.safetensors nor model.safetensors.index.json{}",
        dir, hint);
  }

  /// The folder (or file) given to the constructor.
  const std::string& dir() const { return dir_; }

  /// Every tensor name, sorted.
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    out.reserve(key_to_shard_.size());
    for (const auto& kv : key_to_shard_) out.push_back(kv.first);
    return out;
  }

  bool contains(const std::string& key) const { return key_to_shard_.count(key) != 0; }

  /// NotFoundError naming the checkpoint, the key and the nearest keys.
  const TensorInfo& info(const std::string& key) const { return shard_of(key).info(key); }

  /// A CPU tensor of the stored dtype owning its memory; NotFoundError naming the checkpoint.
  at::Tensor tensor(const std::string& key) const { return shard_of(key).tensor(key); }

  /// The tensor `key` converted to `dtype` on `device` (a bf16 checkpoint's weight as float32 on
  /// CUDA, say); NotFoundError naming the checkpoint.
  at::Tensor tensor(const std::string& key, at::ScalarType dtype, at::Device device = at::kCPU) const {
    return tensor(key).to(device, dtype);
  }

  /// The shard that holds `key`; NotFoundError naming the checkpoint, the key and the nearest keys.
  const SafetensorsFile& file_of(const std::string& key) const { return shard_of(key); }

  /// The opened shard files (one for an unsharded checkpoint), in shard-name order.
  const std::vector<SafetensorsFile>& shards() const { return shards_; }

 private:
  const SafetensorsFile& shard_of(const std::string& key) const {
    auto it = key_to_shard_.find(key);
    if (it == key_to_shard_.end()) {
      if (key_to_shard_.empty())
        detail::raise<NotFoundError>("checkpoint '{}' has no tensor '{}'; it holds no tensors", dir_, key);
      detail::raise<NotFoundError>("checkpoint '{}' has no tensor '{}'; nearest keys: {}", dir_, key,
                                   detail::nearest_keys(key, keys()));
    }
    return shards_[it->second];
  }

  void add_single_file(const std::string& path) {
    shards_.emplace_back(path);
    for (const auto& key : shards_.back().keys()) key_to_shard_.emplace(key, 0);
  }

  void add_sharded(const std::filesystem::path& root, const std::string& index_path) {
    const nlohmann::json index = read_json_file(index_path, DuplicateKeys::Refuse);
    MECHLENS_CHECK(index.is_object() && index.contains("weight_map") && index.at("weight_map").is_object(),
                   FormatError, "safetensors index '{}' has no \"weight_map\" object (key -> shard file)",
                   index_path);
    std::map<std::string, std::vector<std::string>> keys_by_shard;
    for (const auto& [key, shard] : index.at("weight_map").items()) {
      MECHLENS_CHECK(shard.is_string(), FormatError,
                     "safetensors index '{}' maps '{}' to {}, expected a shard file name", index_path,
                     key, json_excerpt(shard));
      keys_by_shard[shard.get<std::string>()].push_back(key);
    }
    for (const auto& [shard, keys] : keys_by_shard) {
      const auto shard_path = (root / shard).string();
      std::error_code ec;
      MECHLENS_CHECK(std::filesystem::exists(shard_path, ec), NotFoundError,
                     "safetensors index '{}' names shard '{}' (for {} tensors, e.g. '{}'), which does "
                     "not exist in '{}'",
                     index_path, shard, keys.size(), keys.front(), root.string());
      const std::size_t shard_index = shards_.size();
      shards_.emplace_back(shard_path);
      const SafetensorsFile& file = shards_.back();
      for (const auto& key : keys) {
        if (!file.contains(key)) {
          const auto held = file.keys();
          detail::raise<FormatError>(
              "safetensors index '{}' maps '{}' to shard '{}', which does not hold it (nearest keys "
              "there: {})",
              index_path, key, shard, held.empty() ? std::string("none, it is empty")
                                                   : detail::nearest_keys(key, held));
        }
        key_to_shard_.emplace(key, shard_index);
      }
    }
    // Every tensor of every shard must be listed, and for that shard: a tensor in two shards, or
    // one the index does not list, would be read from whichever shard the map happens to name.
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      for (const auto& key : shards_[s].keys()) {
        auto it = key_to_shard_.find(key);
        if (it == key_to_shard_.end())
          detail::raise<FormatError>("safetensors shard '{}' holds tensor '{}', which the index '{}' does not list",
                                     shards_[s].path(), key, index_path);
        if (it->second != s)
          detail::raise<FormatError>(
              "tensor '{}' is in two shards, '{}' and '{}'; the index '{}' names the second (which one is the "
              "checkpoint's?)",
              key, shards_[s].path(), shards_[it->second].path(), index_path);
      }
    }
  }

  std::string dir_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t> key_to_shard_;
};

}  // namespace mechlens::io
