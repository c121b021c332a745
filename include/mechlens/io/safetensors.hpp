#pragma once
/// \file
/// The safetensors format (https://github.com/huggingface/safetensors): reading, validating and
/// writing one file.
///
///     [8 bytes: N, little-endian u64][N bytes: JSON header][data section]
///
/// The header maps each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
/// with offsets relative to the start of the data section, plus an optional "__metadata__"
/// object of string values. A file is memory-mapped read-only (io/mapped_file.hpp) and every
/// entry is validated when it is opened, following the reference implementation's rules
/// (safetensors' `validate`): known dtype, begin <= end, shape product x element size ==
/// end - begin, and the entries, sorted by offset, cover the data section exactly — no overlap,
/// no hole, no trailing bytes.
///
/// Checkpoint folders (`model.safetensors`, or shards listed in `model.safetensors.index.json`)
/// are io/hf_checkpoint.hpp's SafetensorsCheckpoint.
///
/// Byte order: the format is little-endian, and so are the hosts mechlens supports (x86-64,
/// aarch64); a big-endian build fails at compile time rather than reading swapped numbers.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/core/names.hpp"
#include "mechlens/io/atomic_file.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/io/mapped_file.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "mechlens reads and writes safetensors' little-endian bytes directly; big-endian hosts "
              "are not supported");

namespace mechlens::io {

/// The element types mechlens reads and writes. The format knows more (U16, U32, U64, F8_*);
/// a file holding one of those is refused with a FormatError naming the tensor and the dtype.
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

/// The safetensors spelling of `dtype` ("F32", "BF16", "BOOL"...).
inline const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

/// The DType that a safetensors header spells `name` ("F32", "BF16"...), or nullopt when mechlens
/// does not support it. (Users' spellings, "float32" or "bf16", are core/dtype.hpp's parse_dtype.)
inline std::optional<DType> safetensors_dtype(std::string_view name) {
  static const std::pair<std::string_view, DType> table[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (const auto& [spelling, dtype] : table)
    if (spelling == name) return dtype;
  return std::nullopt;
}

/// Bytes per element.
inline std::size_t element_size(DType dtype) {
  switch (dtype) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

/// The ATen scalar type holding `dtype`'s values.
inline at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::BOOL: return at::kBool;
  }
  return at::kFloat;
}

/// The DType of an ATen scalar type; ArgumentError for types safetensors (as mechlens supports
/// it) cannot store, such as complex numbers or quantized types.
inline DType dtype_from_scalar_type(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::F64;
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kLong: return DType::I64;
    case at::kInt: return DType::I32;
    case at::kShort: return DType::I16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kBool: return DType::BOOL;
    default: break;
  }
  detail::raise<ArgumentError>(
      "safetensors: cannot store scalar type {}; supported: float64, float32, float16, bfloat16, "
      "int64, int32, int16, int8, uint8, bool",
      c10::toString(type));
}

/// One entry of a safetensors header. `begin` and `end` are byte offsets relative to the data
/// section (which starts at byte 8 + header length of the file), exactly as in the header.
struct TensorInfo {
  std::string key;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;

  uint64_t nbytes() const { return end - begin; }
};

}  // namespace mechlens::io

namespace mechlens::detail {

/// "'a', 'b', 'c'": up to `count` of `names` closest to `query` by edit distance (ties by name).
inline std::string nearest_keys(const std::string& query, const std::vector<std::string>& names, size_t count = 3) {
  return quoted_list(nearest_names(query, names, count));
}

/// Reads a little-endian u64.
inline uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, 8);  // the host is little-endian (static_assert above)
  return v;
}

/// The largest header the reference implementation accepts (MAX_HEADER_SIZE, 100 MB).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

/// A non-negative integer that fits in uint64 from a header field, or FormatError.
inline uint64_t header_uint(const nlohmann::json& j, const std::string& what, const std::string& key,
                            const std::string& path) {
  MECHLENS_CHECK(j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0),
                 FormatError, "safetensors: tensor '{}' has {} {}, expected a non-negative integer in {}",
                 key, what, j.dump(), path);
  return j.get<uint64_t>();
}

/// Parses and validates one header entry (everything that concerns the entry alone).
inline io::TensorInfo parse_entry(const std::string& key, const nlohmann::json& entry,
                                  uint64_t data_size, uint64_t data_start, const std::string& path) {
  MECHLENS_CHECK(entry.is_object(), FormatError,
                 "safetensors: header entry '{}' is a {}, expected an object with dtype, shape and "
                 "data_offsets in {}", key, entry.type_name(), path);
  for (const char* field : {"dtype", "shape", "data_offsets"})
    MECHLENS_CHECK(entry.contains(field), FormatError,
                   "safetensors: tensor '{}' has no '{}' field in {}", key, field, path);

  const auto& dtype_json = entry.at("dtype");
  MECHLENS_CHECK(dtype_json.is_string(), FormatError,
                 "safetensors: tensor '{}' has dtype {}, expected a string such as \"F32\" in {}", key,
                 dtype_json.dump(), path);
  const auto dtype_name = dtype_json.get<std::string>();
  const auto dtype = io::safetensors_dtype(dtype_name);
  MECHLENS_CHECK(dtype.has_value(), FormatError,
                 "safetensors: tensor '{}' has unknown or unsupported dtype '{}' (supported: F64, F32, "
                 "F16, BF16, I64, I32, I16, I8, U8, BOOL) in {}", key, dtype_name, path);

  const auto& shape_json = entry.at("shape");
  MECHLENS_CHECK(shape_json.is_array(), FormatError,
                 "safetensors: tensor '{}' has shape {}, expected an array of sizes in {}", key,
                 shape_json.dump(), path);
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  bool overflow = false, has_zero = false;
  for (const auto& d : shape_json) {
    const uint64_t size = header_uint(d, "a shape entry", key, path);
    MECHLENS_CHECK(size <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), FormatError,
                   "safetensors: tensor '{}' has shape entry {} too large in {}", key, size, path);
    shape.push_back(static_cast<int64_t>(size));
    if (size == 0) has_zero = true;
    else if (numel > std::numeric_limits<uint64_t>::max() / size) overflow = true;
    numel *= size;  // NOTE: may wrap; `overflow` records it
  }
  if (has_zero) {  // a zero dimension makes the product of the others moot
    overflow = false;
    numel = 0;
  }

  const auto& offsets = entry.at("data_offsets");
  MECHLENS_CHECK(offsets.is_array() && offsets.size() == 2, FormatError,
                 "safetensors: tensor '{}' has data_offsets {}, expected [begin, end] in {}", key,
                 offsets.dump(), path);
  const uint64_t begin = header_uint(offsets[0], "data_offsets begin", key, path);
  const uint64_t end = header_uint(offsets[1], "data_offsets end", key, path);
  MECHLENS_CHECK(begin <= end, FormatError,
                 "safetensors: tensor '{}' has data_offsets [{}, {}] with begin after end in {}", key,
                 begin, end, path);

  const uint64_t esize = io::element_size(*dtype);
  MECHLENS_CHECK(!overflow && numel <= std::numeric_limits<uint64_t>::max() / esize &&
                     numel * esize == end - begin,
                 FormatError,
                 "safetensors: tensor '{}' has shape {} of {} ({} bytes), but data_offsets [{}, {}] "
                 "span {} bytes in {}",
                 key, shape_json.dump(), dtype_name,
                 overflow ? std::string("more than 2^64") : std::to_string(numel * esize), begin, end,
                 end - begin, path);
  MECHLENS_CHECK(end <= data_size, FormatError,
                 "safetensors: tensor '{}' ends at byte {} of the data section (file byte {}), past "
                 "the file's end ({}) in {}",
                 key, end, data_start + end, data_start + data_size, path);
  return io::TensorInfo{key, *dtype, std::move(shape), begin, end};
}

}  // namespace mechlens::detail

namespace mechlens::io {

/// One .safetensors file, memory-mapped read-only. The header is parsed and every entry
/// validated in the constructor, so later calls only fail for a missing key. Copies share the
/// mapping. Thread-safe for concurrent const use.
class SafetensorsFile {
 public:
  /// Opens and validates `path`. NotFoundError if it does not exist, IoError if it cannot be
  /// read, FormatError (naming the file, the tensor and the byte offsets) if it is malformed.
  explicit SafetensorsFile(const std::string& path) : map_(std::make_shared<MappedFile>(path, "safetensors")) {
    const std::size_t size = map_->size();
    MECHLENS_CHECK(size >= 8, FormatError,
                   "safetensors: file is truncated: {} bytes, but it must start with an 8-byte header "
                   "length, in {}", size, path);
    const uint64_t header_len = detail::read_le_u64(map_->data());
    MECHLENS_CHECK(header_len <= size - 8, FormatError,
                   "safetensors: header length {} (bytes 8 to {}) runs past the file's end ({}) in {}",
                   header_len, header_len > std::numeric_limits<uint64_t>::max() - 8
                                   ? std::string("beyond 2^64") : std::to_string(8 + header_len),
                   size, path);
    MECHLENS_CHECK(header_len <= detail::kSafetensorsMaxHeader, FormatError,
                   "safetensors: header length {} exceeds the format's limit of {} bytes in {}",
                   header_len, detail::kSafetensorsMaxHeader, path);
    data_start_ = 8 + header_len;
    const uint64_t data_size = size - data_start_;

    const char* header_begin = reinterpret_cast<const char*>(map_->data() + 8);
    MECHLENS_CHECK(header_len > 0 && header_begin[0] == '{', FormatError,
                   "safetensors: header (bytes 8 to {}) does not start with '{{', so it is not a "
                   "JSON object, in {}", data_start_, path);
    // A tensor named twice would silently be the last entry (nlohmann keeps the last key).
    const nlohmann::json header = io::parse_json(std::string_view(header_begin, header_len),
                                                 fmt::format("safetensors: the header (bytes 8 to {}) of {}", data_start_, path),
                                                 io::DuplicateKeys::Refuse);
    MECHLENS_CHECK(header.is_object(), FormatError,
                   "safetensors: header is a JSON {}, expected an object, in {}", header.type_name(), path);

    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        MECHLENS_CHECK(value.is_object(), FormatError,
                       "safetensors: __metadata__ is a {}, expected an object of strings in {}",
                       value.type_name(), path);
        for (const auto& [mkey, mvalue] : value.items()) {
          MECHLENS_CHECK(mvalue.is_string(), FormatError,
                         "safetensors: __metadata__ entry '{}' is {}, expected a string in {}", mkey,
                         mvalue.dump(), path);
          metadata_.emplace(mkey, mvalue.get<std::string>());
        }
        continue;
      }
      infos_.emplace(key, detail::parse_entry(key, value, data_size, data_start_, path));
    }

    // NOTE: the reference implementation requires the entries, sorted by offset, to tile the data
    // section exactly (it reports InvalidOffset / MetadataIncompleteBuffer otherwise). Holes and
    // trailing bytes would be harmless to read, but a file with them was not written by any
    // conforming writer, so it is refused like the reference refuses it.
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(infos_.size());
    for (const auto& kv : infos_) by_offset.push_back(&kv.second);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t covered = 0;
    const TensorInfo* previous = nullptr;
    for (const TensorInfo* info : by_offset) {
      if (info->begin < covered)
        detail::raise<FormatError>(
            "safetensors: tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}' (data_offsets "
            "[{}, {}]) in {}",
            info->key, info->begin, info->end, previous->key, previous->begin, previous->end, path);
      if (info->begin > covered)
        detail::raise<FormatError>(
            "safetensors: data section has a hole: bytes {} to {} belong to no tensor (before "
            "tensor '{}'); the format requires the tensors to cover the data section contiguously, "
            "in {}", covered, info->begin, info->key, path);
      covered = info->end;
      previous = info;
    }
    MECHLENS_CHECK(covered == data_size, FormatError,
                   "safetensors: data section holds {} bytes but its tensors cover only {} ({} trailing "
                   "bytes from file byte {}); the format requires the tensors to cover the data "
                   "section exactly, in {}",
                   data_size, covered, data_size - covered, data_start_ + covered, path);
  }

  /// The path given to the constructor.
  const std::string& path() const { return map_->path(); }

  /// Tensor names, sorted.
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    out.reserve(infos_.size());
    for (const auto& kv : infos_) out.push_back(kv.first);
    return out;
  }

  bool contains(const std::string& key) const { return infos_.count(key) != 0; }

  /// The header entry of `key`; NotFoundError naming the file and the nearest keys.
  const TensorInfo& info(const std::string& key) const {
    auto it = infos_.find(key);
    if (it == infos_.end()) {
      if (infos_.empty())
        detail::raise<NotFoundError>("safetensors: no tensor '{}' in {}, which holds no tensors", key,
                                     path());
      detail::raise<NotFoundError>("safetensors: no tensor '{}' in {}; nearest keys: {}", key, path(),
                                   detail::nearest_keys(key, keys()));
    }
    return it->second;
  }

  /// The "__metadata__" strings (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// Offset of the data section from the start of the file (8 + header length).
  uint64_t data_offset() const { return data_start_; }

  /// Copies bytes [offset, offset + n) of tensor `info`'s data (an entry of this file, from
  /// info()) into `out` with pread: the bulk path of io/tensor_reader.hpp, safe from several
  /// threads. IoError naming the file if the file was cut short since it was opened.
  void read_bytes(const TensorInfo& info, uint64_t offset, void* out, std::size_t n) const {
    MECHLENS_CHECK(offset <= info.nbytes() && n <= info.nbytes() - offset, ArgumentError,
                   "safetensors: bytes [{}, {}) of tensor '{}' are past its {} bytes in {}", offset, offset + n,
                   info.key, info.nbytes(), path());
    map_->read(static_cast<std::size_t>(data_start_ + info.begin + offset), out, n);
  }

  /// A CPU tensor of the stored dtype and shape that owns its memory (copied out of the map, so
  /// it outlives this object and may be modified).
  at::Tensor tensor(const std::string& key) const {
    const TensorInfo& ti = info(key);
    at::Tensor out = at::empty(ti.shape, at::TensorOptions().dtype(to_scalar_type(ti.dtype)));
    if (ti.nbytes() > 0) std::memcpy(out.data_ptr(), map_->data() + data_start_ + ti.begin, ti.nbytes());
    return out;
  }

 private:
  std::shared_ptr<const MappedFile> map_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

/// Writes `tensors` to `path` as safetensors, atomically (temporary file in the same folder,
/// fsync, rename). Tensors may live on any device and be non-contiguous; each is written in its
/// own dtype, C order, little-endian. Like the reference writer, the JSON header is padded with
/// spaces to a multiple of 8 bytes and the data is ordered by element size (largest first), then
/// by name, so every tensor starts at an offset aligned to its element size. The header lists
/// "__metadata__" first (only when `metadata` is not empty), then the tensors in data order.
/// ArgumentError for a duplicate or reserved key, an undefined tensor, or an unsupported dtype.
inline void save_safetensors(const std::string& path,
                             const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  struct Item {
    const std::string* key;
    const at::Tensor* tensor;
    DType dtype;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  {
    std::map<std::string, int> seen;
    for (const auto& [key, tensor] : tensors) {
      MECHLENS_CHECK(key != "__metadata__", ArgumentError,
                     "safetensors: '__metadata__' is reserved and cannot name a tensor (writing '{}')", path);
      MECHLENS_CHECK(seen.emplace(key, 0).second, ArgumentError,
                     "safetensors: tensor key '{}' appears twice (writing '{}')", key, path);
      MECHLENS_CHECK(tensor.defined(), ArgumentError,
                     "safetensors: tensor '{}' is undefined (writing '{}')", key, path);
      items.push_back({&key, &tensor, dtype_from_scalar_type(tensor.scalar_type())});
    }
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const auto sa = element_size(a.dtype), sb = element_size(b.dtype);
    return sa != sb ? sa > sb : *a.key < *b.key;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Item& item : items) {
    const uint64_t nbytes = static_cast<uint64_t>(item.tensor->numel()) * element_size(item.dtype);
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = to_string(item.dtype);
    entry["shape"] = item.tensor->sizes().vec();
    entry["data_offsets"] = {offset, offset + nbytes};
    header[*item.key] = std::move(entry);
    offset += nbytes;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a key that is not valid UTF-8
    detail::raise<ArgumentError>("safetensors: cannot encode the header of '{}': {}", path, e.what());
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  detail::AtomicFileWriter out(path);
  const uint64_t header_len = header_text.size();
  out.write(&header_len, 8);  // little-endian host (static_assert above)
  out.write(header_text.data(), header_text.size());
  for (const Item& item : items) {
    // One tensor at a time on the CPU, so peak memory is the largest tensor, not the whole set.
    const at::Tensor cpu = item.tensor->to(at::kCPU).contiguous();
    const auto nbytes = static_cast<std::size_t>(cpu.numel()) * element_size(item.dtype);
    if (nbytes > 0) out.write(cpu.data_ptr(), nbytes);
  }
  out.commit();
}

/// Every tensor of the safetensors file at `path`, by name (CPU, stored dtype, owning memory).
inline std::map<std::string, at::Tensor> load_safetensors(const std::string& path) {
  const SafetensorsFile file(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& key : file.keys()) out.emplace(key, file.tensor(key));
  return out;
}

}  // namespace mechlens::io
