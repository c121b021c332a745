#pragma once
// mechlens info --model DIR: the model's shape and every hook point, without reading the weights.

#include <exception>

#include <ATen/ATen.h>

#include "cli_support.hpp"

namespace mechlens::cli {

struct InfoCommand {
  ModelArgs model;

  void add(CLI::App& app) { model.add(app, /*with_runtime=*/false); }

  /// A hook's documented shape with its variable sizes named: ["batch", "pos", 4, 16].
  static nlohmann::ordered_json shape_json(const std::vector<int64_t>& shape) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (int64_t d : shape) {
      if (d == kDimBatch) out.push_back("batch");
      else if (d == kDimPos) out.push_back("pos");
      else if (d == kDimKeyPos) out.push_back("key_pos");
      else out.push_back(d);
    }
    return out;
  }

  int run() {
    const ModelConfig cfg = model.config();
    // The hook points come from the module tree, so build one without reading the weights: on the
    // meta device, which allocates nothing, where this LibTorch can build it there.
    Model m = [&] {
      try {
        return Model(cfg, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
      } catch (const std::exception&) {
        // NOTE: LibTorch 1.13 has no meta kernel for some of the rotary set-up. Uninitialised CPU
        // tensors are the fallback: the pages are never touched, so even an 8B model costs only
        // address space here.
        return Model(cfg, at::TensorOptions().dtype(at::kBFloat16).device(at::kCPU));
      }
    }();
    nlohmann::ordered_json hooks = nlohmann::ordered_json::array(), shapes = nlohmann::ordered_json::object();
    for (const auto& h : m->hook_info()) {
      hooks.push_back(h.name);
      shapes[h.name] = shape_json(h.shape);
    }
    nlohmann::ordered_json out = {
        {"family", cfg.model_type},
        {"layers", cfg.n_layers()},
        {"d_model", cfg.d_model()},
        {"heads", cfg.n_heads()},
        {"kv_heads", cfg.n_kv_heads()},
        {"d_head", cfg.d_head()},
        {"d_mlp", cfg.intermediate_size},
        {"vocab", cfg.vocab_size},
        {"dtype", cfg.torch_dtype},
        {"sliding_window", cfg.sliding_window ? nlohmann::ordered_json(*cfg.sliding_window) : nlohmann::ordered_json(nullptr)},
        {"rope", cfg.rope.type},
        {"eos_token_ids", cfg.eos_token_ids},
        {"tokenizer", has_tokenizer_json(model.dir)},
        {"hooks", hooks},
        {"hook_shapes", shapes},
    };
    print_json(out);
    return 0;
  }
};

}  // namespace mechlens::cli
