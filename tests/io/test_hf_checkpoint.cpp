// Hugging Face checkpoint folders (io/hf_checkpoint.hpp): model.safetensors, sharded indexes,
// cache snapshots of symlinks, pickle refusal. Shards are written with io::save_safetensors,
// whose bytes test_safetensors.cpp checks against the format's specification.

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "io/io_test_util.hpp"
#include "mechlens/io/hf_checkpoint.hpp"
#include "mechlens/io/safetensors.hpp"

using Catch::Matchers::Contains;
using mechlens_test::message_of;
using mechlens_test::TempDir;
using mechlens_test::write_bytes;
namespace io = mechlens::io;

namespace {

void write_index(const std::string& path, const std::string& weight_map_json) {
  write_bytes(path, R"({"metadata":{"total_size":0},"weight_map":)" + weight_map_json + "}");
}

}  // namespace

TEST_CASE("A sharded checkpoint is read through its index") {
  TempDir tmp;
  const auto a = at::randn({3, 4});
  const auto b = at::randn({5}).to(at::kBFloat16);
  const auto c = at::arange(7, at::kLong);
  io::save_safetensors(tmp.file("model-00001-of-00002.safetensors"), {{"model.a.weight", a}, {"model.b", b}});
  io::save_safetensors(tmp.file("model-00002-of-00002.safetensors"), {{"lm_head.weight", c}});
  write_index(tmp.file("model.safetensors.index.json"),
              R"({"model.a.weight":"model-00001-of-00002.safetensors",)"
              R"("model.b":"model-00001-of-00002.safetensors",)"
              R"("lm_head.weight":"model-00002-of-00002.safetensors"})");

  const io::SafetensorsCheckpoint ckpt(tmp.path());
  CHECK(ckpt.dir() == tmp.path());
  CHECK(ckpt.keys() == std::vector<std::string>{"lm_head.weight", "model.a.weight", "model.b"});
  CHECK(ckpt.shards().size() == 2);
  CHECK(ckpt.contains("model.b"));
  CHECK_FALSE(ckpt.contains("model.c"));
  CHECK(at::equal(ckpt.tensor("model.a.weight"), a));
  CHECK(at::equal(ckpt.tensor("model.b"), b));
  CHECK(ckpt.tensor("model.b").scalar_type() == at::kBFloat16);
  CHECK(at::equal(ckpt.tensor("lm_head.weight"), c));
  CHECK(ckpt.info("lm_head.weight").dtype == io::DType::I64);
  CHECK(ckpt.info("model.a.weight").shape == std::vector<int64_t>{3, 4});

  const auto msg = message_of<mechlens::NotFoundError>([&] { (void)ckpt.tensor("model.a.weigth"); });
  CHECK_THAT(msg, Contains(tmp.path()) && Contains("'model.a.weigth'") && Contains("nearest keys: 'model.a.weight'"));
}

TEST_CASE("A checkpoint folder with model.safetensors, or the path of that file, is read directly") {
  TempDir tmp;
  const auto x = at::randn({2, 2}).to(at::kHalf);
  io::save_safetensors(tmp.file("model.safetensors"), {{"x", x}});
  const io::SafetensorsCheckpoint from_dir(tmp.path());
  CHECK(from_dir.keys() == std::vector<std::string>{"x"});
  CHECK(at::equal(from_dir.tensor("x"), x));
  const io::SafetensorsCheckpoint from_file(tmp.file("model.safetensors"));
  CHECK(from_file.dir() == tmp.file("model.safetensors"));
  CHECK(at::equal(from_file.tensor("x"), x));
}

TEST_CASE("An index naming a shard that does not exist is a NotFoundError naming the index and the shard") {
  TempDir tmp;
  io::save_safetensors(tmp.file("model-00001-of-00002.safetensors"), {{"a", at::ones({1})}});
  write_index(tmp.file("model.safetensors.index.json"),
              R"({"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"})");
  const auto msg = message_of<mechlens::NotFoundError>([&] { io::SafetensorsCheckpoint c(tmp.path()); });
  CHECK_THAT(msg, Contains("model.safetensors.index.json") && Contains("'model-00002-of-00002.safetensors'") &&
                      Contains("'b'"));
}

TEST_CASE("An index mapping a key to a shard that does not hold it is refused") {
  TempDir tmp;
  io::save_safetensors(tmp.file("s1.safetensors"), {{"a", at::ones({1})}});
  io::save_safetensors(tmp.file("s2.safetensors"), {{"b", at::ones({1})}});
  write_index(tmp.file("model.safetensors.index.json"), R"({"a":"s1.safetensors","b":"s1.safetensors"})");
  const auto msg = message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); });
  CHECK_THAT(msg, Contains("model.safetensors.index.json") && Contains("maps 'b' to shard 's1.safetensors'") &&
                      Contains("does not hold it"));
}

TEST_CASE("An index without a weight_map object is refused") {
  TempDir tmp;
  write_bytes(tmp.file("model.safetensors.index.json"), R"({"metadata":{}})");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); }),
             Contains("weight_map") && Contains("model.safetensors.index.json"));
}

TEST_CASE("A malformed shard is reported with the shard's path") {
  TempDir tmp;
  write_bytes(tmp.file("s1.safetensors"), "abc");
  write_index(tmp.file("model.safetensors.index.json"), R"({"a":"s1.safetensors"})");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); }),
             Contains("truncated") && Contains(tmp.file("s1.safetensors")));
}

TEST_CASE("A folder with only pickle .bin files is refused with advice to convert to safetensors") {
  TempDir tmp;
  write_bytes(tmp.file("pytorch_model-00001-of-00002.bin"), "not read");
  write_bytes(tmp.file("pytorch_model-00002-of-00002.bin"), "not read");
  write_bytes(tmp.file("pytorch_model.bin.index.json"), "{}");
  write_bytes(tmp.file("config.json"), "{}");
  const auto msg = message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); });
  CHECK_THAT(msg, Contains(tmp.path()) && Contains("pytorch_model-00001-of-00002.bin") && Contains("pickle") &&
                      Contains("arbitrary code") && Contains("safe_serialization=True"));
  // Passing the .bin file itself is refused the same way.
  CHECK_THAT(message_of<mechlens::FormatError>(
                 [&] { io::SafetensorsCheckpoint c(tmp.file("pytorch_model-00001-of-00002.bin")); }),
             Contains("pickle"));
}

TEST_CASE("A folder with neither safetensors nor pickle files is a NotFoundError saying what was looked for") {
  TempDir tmp;
  write_bytes(tmp.file("config.json"), "{}");
  const auto msg = message_of<mechlens::NotFoundError>([&] { io::SafetensorsCheckpoint c(tmp.path()); });
  CHECK_THAT(msg, Contains(tmp.path()) && Contains("model.safetensors") && Contains("model.safetensors.index.json"));
  // Other .safetensors files are pointed out (Mistral ships consolidated.safetensors).
  io::save_safetensors(tmp.file("consolidated.safetensors"), {{"a", at::ones({1})}});
  CHECK_THAT(message_of<mechlens::NotFoundError>([&] { io::SafetensorsCheckpoint c(tmp.path()); }),
             Contains("consolidated.safetensors"));
  CHECK_THAT(message_of<mechlens::NotFoundError>([&] { io::SafetensorsCheckpoint c(tmp.file("nope")); }),
             Contains("does not exist"));
}

TEST_CASE("A Hugging Face cache snapshot, where every file is a symlink to a blob, is read") {
  TempDir tmp;
  std::filesystem::create_directories(tmp.file("blobs"));
  std::filesystem::create_directories(tmp.file("snapshots/abc123"));
  const auto w = at::randn({4, 2});
  io::save_safetensors(tmp.file("blobs/7f3e"), {{"model.embed_tokens.weight", w}});
  write_index(tmp.file("blobs/91aa"), R"({"model.embed_tokens.weight":"model-00001-of-00001.safetensors"})");
  std::filesystem::create_symlink("../../blobs/7f3e", tmp.file("snapshots/abc123/model-00001-of-00001.safetensors"));
  std::filesystem::create_symlink("../../blobs/91aa", tmp.file("snapshots/abc123/model.safetensors.index.json"));
  const io::SafetensorsCheckpoint ckpt(tmp.file("snapshots/abc123"));
  CHECK(at::equal(ckpt.tensor("model.embed_tokens.weight"), w));
}

TEST_CASE("A checkpoint tensor can be read into another dtype, as load_model reads bf16 weights as float32") {
  TempDir tmp;
  // bf16 holds 1.5, -0.25 and 3.0 exactly (8 significant bits), so float32 values are the same numbers.
  const auto w = at::tensor({1.5f, -0.25f, 3.0f}).to(at::kBFloat16);
  io::save_safetensors(tmp.file("model.safetensors"), {{"w", w}});
  const io::SafetensorsCheckpoint ckpt(tmp.path());
  const at::Tensor f = ckpt.tensor("w", at::kFloat);
  CHECK(f.scalar_type() == at::kFloat);
  CHECK(f.device().is_cpu());
  CHECK(at::equal(f, at::tensor({1.5f, -0.25f, 3.0f})));
  CHECK(ckpt.tensor("w").scalar_type() == at::kBFloat16);  // the stored dtype, unconverted
  CHECK_THAT(message_of<mechlens::NotFoundError>([&] { (void)ckpt.tensor("v", at::kFloat); }),
             Contains(tmp.path()) && Contains("'v'"));
}

TEST_CASE("A tensor in two shards, a shard tensor the index omits, or an index key given twice is refused") {
  TempDir tmp;
  const auto a = at::randn({2}), b = at::randn({3});
  const std::string one = "model-00001-of-00002.safetensors", two = "model-00002-of-00002.safetensors";
  // "model.a" is in both shards; the index names the second: which is the checkpoint's?
  io::save_safetensors(tmp.file(one), {{"model.a", a}, {"model.b", b}});
  io::save_safetensors(tmp.file(two), {{"model.a", b.narrow(0, 0, 2)}});
  write_index(tmp.file("model.safetensors.index.json"),
              "{\"model.a\":\"" + two + "\",\"model.b\":\"" + one + "\"}");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); }),
             Contains("tensor 'model.a' is in two shards") && Contains(one) && Contains(two));

  // A shard holding a tensor the index does not list (read from nowhere, or from a stale shard).
  io::save_safetensors(tmp.file(two), {{"model.c", a}});
  write_index(tmp.file("model.safetensors.index.json"),
              "{\"model.a\":\"" + one + "\",\"model.b\":\"" + one + "\"}");
  std::filesystem::remove(tmp.file(two));
  io::save_safetensors(tmp.file(one), {{"model.a", a}, {"model.b", b}, {"model.stale", a}});
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); }),
             Contains("holds tensor 'model.stale', which the index") && Contains("does not list"));

  // The same key twice in the weight map: JSON parsers keep the last silently.
  io::save_safetensors(tmp.file(one), {{"model.a", a}, {"model.b", b}});
  write_index(tmp.file("model.safetensors.index.json"),
              "{\"model.a\":\"" + one + "\",\"model.b\":\"" + one + "\",\"model.a\":\"" + two + "\"}");
  CHECK_THAT(message_of<mechlens::FormatError>([&] { io::SafetensorsCheckpoint c(tmp.path()); }),
             Contains("key 'model.a' appears twice"));

  // The consistent checkpoint loads.
  write_index(tmp.file("model.safetensors.index.json"), "{\"model.a\":\"" + one + "\",\"model.b\":\"" + one + "\"}");
  CHECK(io::SafetensorsCheckpoint(tmp.path()).keys().size() == 2);
}
