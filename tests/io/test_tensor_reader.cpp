// io::TensorReader (io/tensor_reader.hpp): tensors read by several threads in pieces, straight
// into their destination or chunk by chunk through a buffer, with the dtype converted; the
// results are compared with SafetensorsFile::tensor (one memcpy out of the mapping) converted by
// ATen's own to(). Files cut short after opening and unfit destinations are errors.

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/io/safetensors.hpp"
#include "mechlens/io/tensor_reader.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::TempDir;
namespace io = mechlens::io;

namespace {

std::string write_sample(const TempDir& tmp) {
  const std::string path = tmp.file("sample.safetensors");
  io::save_safetensors(path, {{"a.f32", at::arange(1000, at::kFloat).mul(0.37).sin().view({40, 25})},
                              {"b.bf16", at::arange(777, at::kFloat).mul(-1.3).cos().to(at::kBFloat16)},
                              {"c.f16", at::linspace(-3, 3, 301, at::kFloat).to(at::kHalf)},
                              {"d.f64", at::arange(17, at::kDouble).mul(1.0 / 3)},
                              {"e.empty", at::empty({0, 4}, at::kFloat)}});
  return path;
}

}  // namespace

TEST_CASE("TensorReader reads every tensor into every float dtype as ATen's conversion of the stored tensor") {
  TempDir tmp;
  const io::SafetensorsFile file(write_sample(tmp));
  // Chunks that divide no tensor evenly (and one of a single element), one thread and several,
  // and the defaults.
  std::vector<io::ReadOptions> settings(4);
  settings[0].chunk_bytes = 104;
  settings[0].threads = 3;
  settings[1].chunk_bytes = 8;
  settings[1].threads = 1;
  settings[2].chunk_bytes = 40;
  settings[2].threads = 0;
  for (const auto& options : settings) {
    for (const auto& key : file.keys()) {
      const at::Tensor stored = file.tensor(key);
      for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
        io::TensorReader reader(at::kCPU, options);
        at::Tensor dst = at::empty(stored.sizes(), at::TensorOptions().dtype(dtype));
        reader.read(file, file.info(key), dst);
        INFO(key << " as " << c10::toString(dtype) << ", chunk " << options.chunk_bytes << " threads "
                 << options.threads);
        CHECK(at::equal(dst, stored.to(dtype)));
      }
    }
  }
}

TEST_CASE("TensorReader reads many tensors at once, shared among its workers") {
  TempDir tmp;
  const io::SafetensorsFile file(write_sample(tmp));
  io::ReadOptions options;
  options.chunk_bytes = 64;
  options.threads = 3;
  std::vector<io::ReadJob> jobs;
  for (const auto& key : file.keys())
    jobs.push_back({&file, &file.info(key), at::empty(file.tensor(key).sizes(), at::TensorOptions().dtype(at::kDouble))});
  io::TensorReader(at::kCPU, options).read(jobs);
  for (const auto& job : jobs) {
    INFO(job.info->key);
    CHECK(at::equal(job.dst, file.tensor(job.info->key).to(at::kDouble)));
  }
}

TEST_CASE("TensorReader refuses a destination of another element count, device layout or none") {
  TempDir tmp;
  const io::SafetensorsFile file(write_sample(tmp));
  io::TensorReader reader(at::kCPU);
  const auto& info = file.info("a.f32");
  CHECK_THAT(message_of<mechlens::ArgumentError>([&] { reader.read(file, info, at::empty({999})); }),
             Contains("'a.f32'") && Contains("1000 elements"));
  at::Tensor transposed = at::empty({25, 40}).t();
  CHECK_THAT(message_of<mechlens::ArgumentError>([&] { reader.read(file, info, transposed); }),
             Contains("not contiguous"));
  CHECK_THAT(message_of<mechlens::ArgumentError>([&] { reader.read(file, info, at::Tensor()); }),
             Contains("undefined"));
  io::ReadOptions bad;
  bad.staging_buffers = 1;
  CHECK_THAT(message_of<mechlens::ArgumentError>([&] { io::TensorReader r(at::kCPU, bad); }),
             Contains("staging_buffers 1"));
}

TEST_CASE("A file cut short after it was opened is an IoError naming it, not a crash") {
  TempDir tmp;
  const std::string path = write_sample(tmp);
  const io::SafetensorsFile file(path);
  std::filesystem::resize_file(path, 200);
  io::TensorReader reader(at::kCPU);
  at::Tensor dst = at::empty({40, 25});
  CHECK_THAT(message_of<mechlens::IoError>([&] { reader.read(file, file.info("a.f32"), dst); }),
             Contains(path) && Contains("ends sooner"));
}
