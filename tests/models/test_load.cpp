// load_model's staged path (io::TensorReader into a model built in the fused layout) against the
// plain path (each tensor copied out of the checkpoint, copy_ into a separate layout, then
// fused): the same parameters bit for bit, on every reference checkpoint (sharded, tied, sliding
// window, biases) and for the stored dtype and a converted one, on the test device.
#include <string>

#include <mechlens/io/hf_checkpoint.hpp>
#include <mechlens/models/load.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {
const char* const kCheckpoints[] = {"llama_gqa_llama3", "llama_tied", "mistral_swa", "qwen2_bias"};
std::string checkpoint_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }
}  // namespace

TEST_CASE("The staged loader gives every parameter the plain per-tensor path gives, bit for bit") {
  // The defaults (each tensor one chunk here), and chunks of 1000 bytes shared by 3 workers, so
  // that tensors are cut at uneven places and staging buffers are reused many times.
  io::ReadOptions small;
  small.chunk_bytes = 1000;
  small.threads = 3;
  for (const char* name : kCheckpoints) {
    const io::SafetensorsCheckpoint checkpoint(checkpoint_dir(name));
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      LoadOptions plain{dtype, test::device()};
      plain.weight_copy = WeightCopy::PerTensor;
      Model b = load_model(checkpoint_dir(name), plain);
      CHECK(b->fused());
      auto pb = b->named_parameters(true);
      for (const io::ReadOptions& read : {io::ReadOptions{}, small}) {
        INFO(name << " as " << c10::toString(dtype) << " on " << test::device() << ", chunk " << read.chunk_bytes);
        LoadOptions staged{dtype, test::device()};
        staged.read = read;
        Model a = load_model(checkpoint_dir(name), staged);
        CHECK(a->fused());
        auto pa = a->named_parameters(true);
        REQUIRE(pa.size() == pb.size());
        for (size_t i = 0; i < pa.size(); ++i) {
          INFO(pa[i].key());
          REQUIRE(pa[i].key() == pb[i].key());
          CHECK(pa[i].value().scalar_type() == dtype);
          CHECK(at::equal(pa[i].value().cpu(), pb[i].value().cpu()));
          // And both are the stored tensor as ATen converts it.
          CHECK(at::equal(pa[i].value().cpu(), checkpoint.tensor(pa[i].key()).to(dtype)));
        }
      }
    }
  }
}

TEST_CASE("A model built in the fused layout has the fused views load_model's fusion makes") {
  const ModelConfig cfg = ModelConfig::from_file(checkpoint_dir("qwen2_bias"));
  Model m(cfg, at::TensorOptions().dtype(at::kFloat).device(test::device()), Projections::Fused);
  CHECK(m->fused());
  auto params = m->named_parameters(true);
  auto start = [&](const std::string& key) { return static_cast<const char*>(params[key].data_ptr()); };
  const std::string a = "model.layers.0.self_attn.", f = "model.layers.0.mlp.";
  const auto nq = params[a + "q_proj.weight"].size(0), nk = params[a + "k_proj.weight"].size(0);
  const auto row = params[a + "q_proj.weight"].stride(0) * 4;  // bytes per float32 row
  // q, k and v (weights and biases), and gate and up, are consecutive rows of one matrix each.
  CHECK(start(a + "k_proj.weight") == start(a + "q_proj.weight") + nq * row);
  CHECK(start(a + "v_proj.weight") == start(a + "q_proj.weight") + (nq + nk) * row);
  CHECK(start(a + "k_proj.bias") == start(a + "q_proj.bias") + nq * 4);
  CHECK(start(f + "up_proj.weight") ==
        start(f + "gate_proj.weight") + params[f + "gate_proj.weight"].size(0) * params[f + "gate_proj.weight"].stride(0) * 4);
}
