#pragma once
/// \file
/// NumPy's `.npy` format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html),
/// so activations and results open in a notebook with `np.load`:
///
///     "\x93NUMPY" major minor | header length (u16 LE for 1.0, u32 LE for 2.0 and 3.0)
///     | "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with spaces, '\n'
///     | data, C order (or Fortran order when fortran_order is True)
///
/// Supported element types: float64/32/16 ('<f8' '<f4' '<f2'), int64/32/16/8 ('<i8' '<i4' '<i2'
/// '|i1'), uint8 ('|u1') and bool ('|b1'), little-endian (the host's order; big-endian files are
/// refused rather than swapped). bfloat16 has no NumPy type and is refused when saving: convert
/// it to float32 first. Files are written as version 1.0 (2.0 when the header does not fit),
/// C order, header padded so the data starts at a multiple of 64 bytes, as NumPy does.

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/io/atomic_file.hpp"
#include "mechlens/io/read_file.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "mechlens writes .npy data in the host's byte order, declared little-endian");

namespace mechlens::detail {

struct NpyType {
  std::string_view descr;  // as written: '<f4', '|u1'...
  at::ScalarType type;
};

inline const std::vector<NpyType>& npy_types() {
  static const std::vector<NpyType> types = {
      {"<f8", at::kDouble}, {"<f4", at::kFloat}, {"<f2", at::kHalf},  {"<i8", at::kLong},
      {"<i4", at::kInt},    {"<i2", at::kShort}, {"|i1", at::kChar},  {"|u1", at::kByte},
      {"|b1", at::kBool}};
  return types;
}

/// The ATen type of a descr, accepting the byte-order spellings NumPy may produce on a
/// little-endian host: '<' or '=' for multi-byte types, '|', '<' or '=' for one-byte types.
inline std::optional<at::ScalarType> npy_scalar_type(const std::string& descr) {
  if (descr.size() < 2) return std::nullopt;
  const char order = descr[0];
  if (order != '<' && order != '=' && order != '|') return std::nullopt;
  const std::string_view rest = std::string_view(descr).substr(1);
  for (const auto& t : npy_types()) {
    if (t.descr.substr(1) != rest) continue;
    const bool one_byte = t.descr[0] == '|';
    if (one_byte || order != '|') return t.type;
  }
  return std::nullopt;
}

/// A parser for the header dict, a Python literal of exactly the keys 'descr' (a string),
/// 'fortran_order' (True/False) and 'shape' (a tuple of non-negative ints).
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string& descr, bool& fortran_order, std::vector<int64_t>& shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        skip_space();
        MECHLENS_CHECK(peek() == '\'' || peek() == '"', FormatError,
                       "npy: '{}' has a structured or non-string 'descr' (at header byte {}); only plain "
                       "numeric types are supported", path_, pos_);
        descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        shape = parse_shape();
        have_shape = true;
      } else {
        fail(fmt::format("unexpected key '{}'", key));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      MECHLENS_CHECK(peek() == '}', FormatError,
                     "npy: header of '{}' expects ',' or '}}' at byte {}, got '{}'", path_, pos_, shown());
    }
    ++pos_;
    skip_space();
    MECHLENS_CHECK(pos_ == s_.size(), FormatError,
                   "npy: header of '{}' has unexpected text after the dict at byte {}", path_, pos_);
    MECHLENS_CHECK(have_descr && have_order && have_shape, FormatError,
                   "npy: header of '{}' lacks {}", path_,
                   !have_descr ? "'descr'" : !have_order ? "'fortran_order'" : "'shape'");
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  std::string shown() const { return pos_ < s_.size() ? std::string(1, s_[pos_]) : "end of header"; }
  [[noreturn]] void fail(const std::string& what) const {
    raise<FormatError>("npy: malformed header in '{}': {} at header byte {}: {}", path_, what, pos_,
                       std::string(s_));
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(fmt::format("expected '{}', got '{}'", c, shown()));
    ++pos_;
  }
  std::string parse_string() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail(fmt::format("expected a quoted string, got '{}'", shown()));
    const std::size_t end = s_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }
  bool parse_bool() {
    skip_space();
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("expected True or False for 'fortran_order'");
  }
  std::vector<int64_t> parse_shape() {
    expect('(');
    std::vector<int64_t> shape;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek())))
        fail(fmt::format("expected a non-negative size in 'shape', got '{}'", shown()));
      uint64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        v = v * 10 + static_cast<uint64_t>(peek() - '0');
        if (v > (uint64_t{1} << 62)) fail("size in 'shape' too large");
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long literal, still written by old files
      shape.push_back(static_cast<int64_t>(v));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != ')') fail(fmt::format("expected ',' or ')' in 'shape', got '{}'", shown()));
    }
    ++pos_;
    return shape;
  }

  std::string_view s_;
  std::string path_;
  std::size_t pos_ = 0;
};

inline std::string npy_shape_repr(at::IntArrayRef sizes) {
  if (sizes.size() == 1) return fmt::format("({},)", sizes[0]);
  std::string out = "(";
  for (std::size_t i = 0; i < sizes.size(); ++i) out += fmt::format("{}{}", i ? ", " : "", sizes[i]);
  return out + ")";
}

}  // namespace mechlens::detail

namespace mechlens::io {

/// Writes `tensor` (any device, any strides) to `path` as a .npy file, atomically. ArgumentError
/// for undefined tensors and types NumPy cannot hold (bfloat16, complex); IoError on write failure.
inline void save_npy(const std::string& path, const at::Tensor& tensor) {
  MECHLENS_CHECK(tensor.defined(), ArgumentError, "npy: cannot save an undefined tensor to '{}'", path);
  std::string_view descr;
  for (const auto& t : detail::npy_types())
    if (t.type == tensor.scalar_type()) descr = t.descr;
  MECHLENS_CHECK(!descr.empty(), ArgumentError,
                 "npy: cannot save a {} tensor to '{}'; supported: float64, float32, float16, int64, "
                 "int32, int16, int8, uint8, bool (convert bfloat16 to float32 first)",
                 c10::toString(tensor.scalar_type()), path);

  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr,
                                   detail::npy_shape_repr(tensor.sizes()));
  // As NumPy's _wrap_header: pad with spaces and end with '\n' so that magic (6) + version (2) +
  // length field + header is a multiple of 64; the pad is 1..64 spaces, never 0.
  std::size_t length_field = 2;
  char major = 1;
  if (header.size() + 1 + 64 > 65535) {
    length_field = 4;
    major = 2;
  }
  const std::size_t unpadded = 6 + 2 + length_field + header.size() + 1;
  header.append(64 - unpadded % 64, ' ');
  header.push_back('\n');

  std::string prefix("\x93NUMPY", 6);
  prefix.push_back(major);
  prefix.push_back(0);
  const uint64_t header_len = header.size();
  for (std::size_t i = 0; i < length_field; ++i) prefix.push_back(static_cast<char>((header_len >> (8 * i)) & 0xFF));

  const at::Tensor cpu = tensor.to(at::kCPU).contiguous();
  detail::AtomicFileWriter out(path);
  out.write(prefix.data(), prefix.size());
  out.write(header.data(), header.size());
  const auto nbytes = static_cast<std::size_t>(cpu.numel()) * cpu.element_size();
  if (nbytes > 0) out.write(cpu.data_ptr(), nbytes);
  out.commit();
}

/// Reads the .npy file at `path` into a CPU tensor that owns its memory (C-order contiguous, also
/// for files stored in Fortran order). NotFoundError when it does not exist, FormatError (naming
/// the file and the problem) for a malformed or unsupported file.
inline at::Tensor load_npy(const std::string& path) {
  std::error_code ec;
  MECHLENS_CHECK(std::filesystem::exists(path, ec), NotFoundError, "npy: file '{}' does not exist", path);
  regular_file_size(path, "npy file");  // a FIFO or device is refused before it is opened
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) detail::raise<IoError>("npy: cannot open '{}'", path);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);

  char prefix[12] = {};
  const std::size_t got = std::min<uint64_t>(file_size, 12);
  in.read(prefix, static_cast<std::streamsize>(got));
  MECHLENS_CHECK(file_size >= 10, FormatError, "npy: '{}' is truncated: {} bytes, shorter than the 10-byte preamble",
                 path, file_size);
  MECHLENS_CHECK(std::memcmp(prefix, "\x93NUMPY", 6) == 0, FormatError,
                 "npy: '{}' does not start with the magic string \\x93NUMPY", path);
  const auto major = static_cast<unsigned char>(prefix[6]);
  const auto minor = static_cast<unsigned char>(prefix[7]);
  MECHLENS_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, FormatError,
                 "npy: '{}' has format version {}.{}; supported: 1.0, 2.0, 3.0", path, major, minor);
  const std::size_t length_field = major == 1 ? 2 : 4;
  MECHLENS_CHECK(file_size >= 8 + length_field, FormatError,
                 "npy: '{}' is truncated: {} bytes, shorter than the {}-byte preamble", path, file_size,
                 8 + length_field);
  uint64_t header_len = 0;
  for (std::size_t i = 0; i < length_field; ++i)
    header_len |= static_cast<uint64_t>(static_cast<unsigned char>(prefix[8 + i])) << (8 * i);
  const uint64_t data_start = 8 + length_field + header_len;
  MECHLENS_CHECK(data_start <= file_size, FormatError,
                 "npy: '{}' declares a {}-byte header ending at byte {}, past the file's end ({})", path,
                 header_len, data_start, file_size);

  std::string header(header_len, '\0');
  in.seekg(static_cast<std::streamoff>(8 + length_field));
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  MECHLENS_CHECK(in.good(), IoError, "npy: cannot read the header of '{}'", path);

  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  detail::NpyHeaderParser(header, path).parse(descr, fortran_order, shape);

  MECHLENS_CHECK(descr.empty() || descr[0] != '>', FormatError,
                 "npy: '{}' holds big-endian data ('{}'); only little-endian is supported", path, descr);
  const auto type = detail::npy_scalar_type(descr);
  MECHLENS_CHECK(type.has_value(), FormatError,
                 "npy: '{}' has unsupported descr '{}'; supported: <f8 <f4 <f2 <i8 <i4 <i2 |i1 |u1 |b1",
                 path, descr);

  const uint64_t itemsize = at::elementSize(*type);
  uint64_t numel = 1;
  for (const int64_t d : shape) {
    MECHLENS_CHECK(d == 0 || numel <= (uint64_t{1} << 62) / static_cast<uint64_t>(d), FormatError,
                   "npy: '{}' has a shape {} too large", path, detail::npy_shape_repr(shape));
    numel *= static_cast<uint64_t>(d);
  }
  const uint64_t expected = numel * itemsize;
  const uint64_t available = file_size - data_start;
  MECHLENS_CHECK(available == expected, FormatError,
                 "npy: '{}' has shape {} of '{}' ({} bytes from byte {}), but the file holds {} data bytes",
                 path, detail::npy_shape_repr(shape), descr, expected, data_start, available);

  std::vector<int64_t> stored_shape = shape;
  if (fortran_order) std::reverse(stored_shape.begin(), stored_shape.end());
  at::Tensor out = at::empty(stored_shape, at::TensorOptions().dtype(*type));
  if (expected > 0) {
    in.read(static_cast<char*>(out.data_ptr()), static_cast<std::streamsize>(expected));
    MECHLENS_CHECK(in.good(), IoError, "npy: cannot read {} data bytes of '{}'", expected, path);
  }
  if (fortran_order && out.dim() > 1) {
    // Fortran order of shape S is C order of reversed S; reversing the axes gives S back.
    std::vector<int64_t> dims(static_cast<std::size_t>(out.dim()));
    for (std::size_t i = 0; i < dims.size(); ++i) dims[i] = static_cast<int64_t>(dims.size() - 1 - i);
    out = out.permute(dims).contiguous();
  }
  return out;
}

}  // namespace mechlens::io
