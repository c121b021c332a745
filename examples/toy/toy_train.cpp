// toy_train: trains the embedded DEC7 toy model (a small Llama) on the two-register corpus with
// LibTorch autograd on mechlens' own Model, and writes a Hugging Face checkpoint directory:
// config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
// training_log.json. Fixed seed; docs/toy-model.md explains the recipe and what is planted.
//
// Two kinds of training step:
//  * natural: next-token loss on whole documents (prompt + continuation of the prompt's register);
//  * planted (a fraction --mix of the steps): the continuation of prompt Y is trained while
//    attention at layers [--mix-layer, L) sees the keys and values of prompt X of the other
//    register (same frame, so the same length) at the prompt positions, and the target is X's
//    register. This is a KV splice of the late layers during training: it plants the study's
//    claim "the mode lives in the KV cache of the later layers" so the experiments have a
//    known answer to find. Layers below --mix-layer keep Y's own keys and values.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>  // clip_grad.h is not self-contained
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "mechlens/io/atomic_file.hpp"
#include "mechlens/io/safetensors.hpp"
#include "mechlens/models/init.hpp"
#include "mechlens/models/model.hpp"
#include "mechlens/tokenizer/tokenizer.hpp"

#include "corpus.hpp"
#include "tokenizer_json.hpp"

namespace {

struct Flags {
  std::string out;
  uint64_t seed = 7;
  int steps = 600;
  int batch = 24;
  double lr = 3e-3;
  double mix = 0.35;
  int mix_layer = -1;  // default: n_layers / 2
  int threads = 2;
  int d_model = 64;
  int layers = 8;
  int heads = 4;
  int kv_heads = 2;
  int d_mlp = 192;
};

std::vector<int64_t> encode(const mechlens::Tokenizer& tok, const std::string& text) {
  return tok.encode(text, /*add_special_tokens=*/false);
}

/// Right-pads rows with `pad` into [b, len] ids; targets are the next token, -100 past the end
/// and for positions before `loss_from[r]`.
struct Batch {
  at::Tensor ids, targets;
};

Batch pack(const std::vector<std::vector<int64_t>>& rows, const std::vector<int64_t>& loss_from, int64_t pad) {
  size_t len = 0;
  for (const auto& r : rows) len = std::max(len, r.size());
  const auto b = static_cast<int64_t>(rows.size());
  const auto p = static_cast<int64_t>(len) - 1;
  std::vector<int64_t> ids(static_cast<size_t>(b * p), pad), tgt(static_cast<size_t>(b * p), -100);
  for (int64_t r = 0; r < b; ++r) {
    const auto& row = rows[static_cast<size_t>(r)];
    for (size_t i = 0; i + 1 < row.size(); ++i) {
      ids[static_cast<size_t>(r * p) + i] = row[i];
      if (static_cast<int64_t>(i) + 1 >= loss_from[static_cast<size_t>(r)]) tgt[static_cast<size_t>(r * p) + i] = row[i + 1];
    }
  }
  auto opts = at::TensorOptions().dtype(at::kLong);
  return {at::tensor(ids, opts).view({b, p}), at::tensor(tgt, opts).view({b, p})};
}

at::Tensor lm_loss(const at::Tensor& logits, const at::Tensor& targets) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}), {},
                                at::Reduction::Mean, -100);
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  f.out = std::string(MECHLENS_EXAMPLES_DIR) + "/models/dec7-toy";
  CLI::App app{"Train the embedded DEC7 toy model (two registers, planted late-layer KV mode) and write an HF checkpoint"};
  app.add_option("--out", f.out, "checkpoint directory to write")->capture_default_str();
  app.add_option("--seed", f.seed, "seed of the corpus stream, the initial weights and the step kinds")->capture_default_str();
  app.add_option("--steps", f.steps, "optimiser steps")->capture_default_str();
  app.add_option("--batch", f.batch, "documents per step")->capture_default_str();
  app.add_option("--lr", f.lr, "peak learning rate (AdamW, 30 warm-up steps, cosine to 10 %)")->capture_default_str();
  app.add_option("--mix", f.mix, "fraction of planted (late-layer KV splice) steps; 0 trains on natural documents only")->capture_default_str();
  app.add_option("--mix-layer", f.mix_layer, "planted steps splice layers [this, L); default L/2")->capture_default_str();
  app.add_option("--threads", f.threads, "CPU threads")->capture_default_str();
  app.add_option("--d-model", f.d_model, "hidden size")->capture_default_str();
  app.add_option("--layers", f.layers, "decoder layers")->capture_default_str();
  app.add_option("--heads", f.heads, "query heads")->capture_default_str();
  app.add_option("--kv-heads", f.kv_heads, "key/value heads (GQA)")->capture_default_str();
  app.add_option("--d-mlp", f.d_mlp, "MLP (SwiGLU) intermediate size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (f.mix_layer < 0) f.mix_layer = f.layers / 2;

  at::set_num_threads(f.threads);
  namespace fs = std::filesystem;
  fs::create_directories(f.out);

  // Tokenizer first: the model's vocabulary is its size, and documents are encoded through the
  // same loader every program uses.
  const auto words = toy::vocabulary_words();
  mechlens::io::write_file_atomically(f.out + "/tokenizer.json", toy::make_tokenizer_json(words).dump(1) + "\n");
  mechlens::io::write_file_atomically(f.out + "/tokenizer_config.json", toy::make_tokenizer_config_json().dump(2) + "\n");
  const auto tok = mechlens::Tokenizer::from_file(f.out);
  const int64_t bos = tok.require_token_id(toy::kBos), eos = tok.require_token_id(toy::kEos);

  mechlens::ModelConfig cfg;
  cfg.model_type = "llama";
  cfg.vocab_size = tok.vocab_size();
  cfg.hidden_size = f.d_model;
  cfg.intermediate_size = f.d_mlp;
  cfg.num_hidden_layers = f.layers;
  cfg.num_attention_heads = f.heads;
  cfg.num_key_value_heads = f.kv_heads;
  cfg.head_dim = f.d_model / f.heads;
  cfg.rms_norm_eps = 1e-5;
  cfg.max_position_embeddings = 256;
  cfg.rope.theta = 10000.0;
  cfg.bos_token_id = bos;
  cfg.eos_token_ids = {eos};
  cfg.torch_dtype = "float32";

  mechlens::Model model(cfg, at::TensorOptions().dtype(at::kFloat));
  mechlens::init_weights(*model, f.seed, 0.02);
  model->train();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(f.lr).betas({0.9, 0.95}).weight_decay(0.01));

  toy::Rng rng(f.seed);
  nlohmann::json log = nlohmann::json::array();
  const auto t0 = std::chrono::steady_clock::now();
  double ema_nat = 0, ema_mix = 0;
  for (int step = 1; step <= f.steps; ++step) {
    const double warm = std::min(1.0, step / 30.0);
    const double progress = static_cast<double>(step) / f.steps;
    const double lr = f.lr * warm * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
    for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);

    const bool planted = rng.uniform() < f.mix;
    at::Tensor loss;
    if (!planted) {
      std::vector<std::vector<int64_t>> rows;
      std::vector<int64_t> from;
      for (int i = 0; i < f.batch; ++i) {
        const auto d = toy::make_document(rng);
        std::vector<int64_t> ids{bos};
        for (int64_t t : encode(tok, d.prompt + d.continuation)) ids.push_back(t);
        ids.push_back(eos);
        rows.push_back(std::move(ids));
        from.push_back(1);
      }
      Batch b = pack(rows, from, eos);
      loss = lm_loss(model->forward(b.ids), b.targets);
    } else {
      // One frame per batch, so every row's prompts have the same length P.
      const int frame = static_cast<int>(rng.below(static_cast<uint64_t>(toy::n_frames())));
      std::vector<std::vector<int64_t>> x_prompts, y_rows;
      std::vector<int64_t> from;
      int64_t p_len = 0;
      for (int i = 0; i < f.batch; ++i) {
        const auto x_reg = rng.below(2) == 0 ? toy::Register::Recursive : toy::Register::Ordinary;
        const auto y_reg = x_reg == toy::Register::Recursive ? toy::Register::Ordinary : toy::Register::Recursive;
        std::vector<int64_t> px{bos}, row{bos};
        for (int64_t t : encode(tok, toy::fill_frame(frame, x_reg, rng))) px.push_back(t);
        const std::string py = toy::fill_frame(frame, y_reg, rng);
        for (int64_t t : encode(tok, py + toy::continuation(x_reg, rng))) row.push_back(t);
        row.push_back(eos);
        p_len = static_cast<int64_t>(px.size());
        x_prompts.push_back(std::move(px));
        y_rows.push_back(std::move(row));
        from.push_back(p_len);  // loss on the continuation only: targets from position P on
      }
      // Source pass over X's prompt without its last token (the prefilled part), keeping k, v
      // of the late layers with their graph.
      std::vector<int64_t> xs;
      for (auto& px : x_prompts) xs.insert(xs.end(), px.begin(), px.end() - 1);
      at::Tensor x_ids = at::tensor(xs, at::TensorOptions().dtype(at::kLong)).view({f.batch, p_len - 1});
      std::map<std::string, at::Tensor> source;
      {
        std::vector<mechlens::HookHandle> keep;
        for (int l = f.mix_layer; l < f.layers; ++l)
          for (const char* site : {"attn.hook_k", "attn.hook_v"}) {
            const std::string name = fmt::format("blocks.{}.{}", l, site);
            keep.push_back(model->add_hook(name, [&source, name](const at::Tensor& a, const mechlens::HookContext&) {
              source[name] = a;
              return std::optional<at::Tensor>();
            }));
          }
        // NOTE: the source pass needs no logits; the last layer's k, v are all it must compute,
        // but running the whole model keeps this simple and costs little at this size.
        mechlens::ForwardOptions fo;
        fo.last_position_only = true;
        model->forward(x_ids, fo);
      }
      std::vector<mechlens::HookHandle> swaps;
      for (const auto& [name, src] : source)
        swaps.push_back(model->add_hook(name, [src = src, n = p_len - 1](const at::Tensor& a, const mechlens::HookContext&) {
          return std::optional<at::Tensor>(at::cat({src, a.narrow(1, n, a.size(1) - n)}, 1));
        }));
      Batch b = pack(y_rows, from, eos);
      loss = lm_loss(model->forward(b.ids), b.targets);
    }
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt.step();
    const double l = loss.item<double>();
    double& ema = planted ? ema_mix : ema_nat;
    ema = ema == 0 ? l : 0.95 * ema + 0.05 * l;
    if (step % 25 == 0 || step == f.steps) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "step %4d  lr %.2e  loss natural %.3f  planted %.3f  %.0f s\n", step, lr, ema_nat, ema_mix, secs);
      log.push_back({{"step", step}, {"lr", lr}, {"loss_natural_ema", ema_nat}, {"loss_planted_ema", ema_mix}, {"seconds", secs}});
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // The checkpoint, as Hugging Face lays it out.
  model->eval();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value().detach());
  mechlens::io::save_safetensors(f.out + "/model.safetensors", tensors, {{"format", "pt"}});
  mechlens::io::write_file_atomically(f.out + "/config.json", cfg.to_json().dump(2) + "\n");
  nlohmann::json gen = {{"bos_token_id", bos}, {"eos_token_id", eos}, {"do_sample", true}, {"temperature", 0.7},
                        {"max_new_tokens", 50}};
  mechlens::io::write_file_atomically(f.out + "/generation_config.json", gen.dump(2) + "\n");
  nlohmann::json info = {{"program", "examples/toy/toy_train.cpp"},
                         {"seed", f.seed}, {"steps", f.steps}, {"batch", f.batch}, {"lr", f.lr},
                         {"mix", f.mix}, {"mix_layer", f.mix_layer}, {"threads", f.threads},
                         {"seconds", seconds}, {"parameters", [&] {
                            int64_t n = 0;
                            for (const auto& p : model->parameters()) n += p.numel();
                            return n;
                          }()},
                         {"log", log}};
  mechlens::io::write_file_atomically(f.out + "/training_log.json", info.dump(1) + "\n");
  std::fprintf(stderr, "wrote %s (%.0f s)\n", f.out.c_str(), seconds);
  return 0;
}
