#pragma once
/// \file
/// Saving a KVCache to safetensors and loading it back: "keys" and "values"
/// [layers, batch, kv_heads, length, d_head] in the cache's dtype, "positions" [batch, length]
/// (int64) and "valid" [batch, length] (bool), with metadata naming the format. Only the filled
/// slots are written; loading gives a cache of exactly that length (plus `extra_capacity`), on
/// `options`' device; KVCache::placed(model->layer_devices()) puts it where a model split over
/// devices keeps each layer.

#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/io/safetensors.hpp"
#include "mechlens/models/kv_cache.hpp"

namespace mechlens {

inline void save_kv_cache(const std::string& path, const KVCache& cache) {
  MECHLENS_CHECK(cache.defined(), ArgumentError, "save_kv_cache('{}'): the cache is empty (never allocated)", path);
  const int64_t n = cache.length();
  // A cache over several devices is written as one tensor (its layers gathered on the host).
  auto whole = [&](bool keys) {
    if (cache.on_one_device()) return (keys ? cache.key_storage() : cache.value_storage()).narrow(3, 0, n);
    std::vector<at::Tensor> parts;
    for (auto [first, count] : cache.spans(0, cache.n_layers()))
      parts.push_back((keys ? cache.key_storage(first, count) : cache.value_storage(first, count)).narrow(3, 0, n).cpu());
    return at::cat(parts, 0);
  };
  io::save_safetensors(path,
                       {{"keys", whole(true)},
                        {"values", whole(false)},
                        {"positions", cache.positions()},
                        {"valid", cache.valid()}},
                       {{"format", "mechlens.kv_cache.v1"}, {"has_padding", cache.has_padding() ? "1" : "0"}});
}

inline KVCache load_kv_cache(const std::string& path, const at::TensorOptions& options, int64_t extra_capacity = 0) {
  io::SafetensorsFile file(path);
  auto meta = file.metadata();
  MECHLENS_CHECK(meta.count("format") && meta.at("format") == "mechlens.kv_cache.v1", FormatError,
                 "load_kv_cache: '{}' is not a mechlens KV cache (metadata 'format' should be mechlens.kv_cache.v1)", path);
  at::Tensor keys = file.tensor("keys"), values = file.tensor("values");
  at::Tensor positions = file.tensor("positions"), valid = file.tensor("valid");
  MECHLENS_CHECK(keys.dim() == 5 && values.sizes() == keys.sizes() && positions.dim() == 2 &&
                     positions.size(0) == keys.size(1) && positions.size(1) == keys.size(3) &&
                     valid.sizes() == positions.sizes(),
                 FormatError, "load_kv_cache: '{}' holds keys {}, values {}, positions {}, valid {} that do not fit together",
                 path, shape_str(keys.sizes()), shape_str(values.sizes()), shape_str(positions.sizes()),
                 shape_str(valid.sizes()));
  const int64_t n = keys.size(3);
  KVCache cache(keys.size(0), keys.size(1), keys.size(2), keys.size(4), std::max<int64_t>(n + extra_capacity, 1), options);
  cache.key_storage().narrow(3, 0, n).copy_(keys);
  cache.value_storage().narrow(3, 0, n).copy_(values);
  cache.position_storage().narrow(1, 0, n).copy_(positions);
  cache.valid_storage().narrow(1, 0, n).copy_(valid.to(at::kBool));
  cache.set_length(n, meta.count("has_padding") && meta.at("has_padding") == "1");
  return cache;
}

}  // namespace mechlens
