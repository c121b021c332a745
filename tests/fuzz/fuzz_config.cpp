// config.json: JSON parsing (depth, numbers) and ModelConfig's typed, range-checked fields.
#include <mechlens/io/json.hpp>
#include <mechlens/models/model_config.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mechlens_fuzz::refuse_or_run([&] {
    const auto j = mechlens::io::parse_json(mechlens_fuzz::as_text(data, size), "fuzz config.json");
    const auto cfg = mechlens::ModelConfig::from_json(j, "fuzz config.json");
    // What was accepted must describe a model: the derived sizes are consistent.
    if (cfg.n_heads() % cfg.n_kv_heads() != 0 || cfg.d_head() <= 0) __builtin_trap();
    mechlens::ModelConfig::from_json(cfg.to_json(), "round trip");
  });
  return 0;
}
