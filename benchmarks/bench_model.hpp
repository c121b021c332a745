#pragma once
// The model every GPU benchmark measures: Llama-3-8B's shape (32 layers, d_model 4096, 32 heads,
// 8 KV heads, FFN 14336, vocab 128256, llama3 rope), with random weights built in memory.
#include <string>

#include <ATen/ATen.h>

#include <mechlens/models/model.hpp>

namespace mechlens::bench {

inline ModelConfig llama3_8b_shape() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 8192;
  c.rope = {"llama3", 500000.0, 8.0, 1.0, 4.0, 8192};
  return c;
}

/// Random N(0, 0.02) weights drawn on the model's device (seeded), norms 1 — the work does not
/// depend on them — then q/k/v and gate/up fused as load_model fuses a loaded checkpoint.
inline void randomize(ModelImpl& model) {
  at::NoGradGuard no_grad;
  at::manual_seed(1234);
  for (auto& p : model.named_parameters())
    if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
    else p.value().normal_(0.0, 0.02);
  model.fuse_projections();
}

}  // namespace mechlens::bench
