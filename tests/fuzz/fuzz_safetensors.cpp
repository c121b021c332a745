// A safetensors file: the 8-byte header length, the JSON header (dtypes, shapes, offsets,
// __metadata__) and the data section, opened as a file (memory-mapped, as checkpoints are) and
// every tensor read. Also the folder holding it as a checkpoint.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <mechlens/io/hf_checkpoint.hpp>
#include <mechlens/io/safetensors.hpp>

#include "fuzz_support.hpp"

namespace {
const std::string& folder() {
  static const std::string dir = [] {
    std::string d = "/tmp/mechlens-fuzz-safetensors-" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = folder() + "/model.safetensors";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  mechlens_fuzz::refuse_or_run([&] {
    const mechlens::io::SafetensorsFile file(path);
    for (const auto& key : file.keys()) {
      const auto t = file.tensor(key);
      // What was accepted must be what the header says.
      if (t.numel() * static_cast<int64_t>(t.element_size()) != static_cast<int64_t>(file.info(key).nbytes()))
        __builtin_trap();
    }
  });
  mechlens_fuzz::refuse_or_run([&] { mechlens::io::SafetensorsCheckpoint checkpoint(folder()); });
  return 0;
}
