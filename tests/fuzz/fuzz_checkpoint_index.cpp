// model.safetensors.index.json: the weight map (tensor -> shard file) of a sharded checkpoint,
// checked against two real shards in the same folder.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <ATen/ATen.h>

#include <mechlens/io/hf_checkpoint.hpp>
#include <mechlens/io/safetensors.hpp>

#include "fuzz_support.hpp"

namespace {
const std::string& folder() {
  static const std::string dir = [] {
    std::string d = "/tmp/mechlens-fuzz-index-" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    mechlens::io::save_safetensors(d + "/model-00001-of-00002.safetensors",
                                   {{"model.a", at::ones({2, 3})}, {"model.b", at::zeros({4}, at::kBFloat16)}});
    mechlens::io::save_safetensors(d + "/model-00002-of-00002.safetensors", {{"lm_head.weight", at::ones({3})}});
    return d;
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = folder() + "/model.safetensors.index.json";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  mechlens_fuzz::refuse_or_run([&] {
    const mechlens::io::SafetensorsCheckpoint checkpoint(folder());
    for (const auto& key : checkpoint.keys()) checkpoint.tensor(key);
  });
  return 0;
}
