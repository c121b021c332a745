#pragma once
/// \file
/// A checkpoint folder's model and tokenizer in one call, for programs that start from text:
///
///   auto [model, tok] = mechlens::load_pretrained("/models/Meta-Llama-3-8B-Instruct", {at::kBFloat16, at::kCUDA});
///   at::Tensor logits = model->forward(tok.encode("The observer observes"));   // [1, n, vocab]
///
/// Token ids have one vocabulary across the library: one prompt is a `std::vector<int64_t>` (what
/// Tokenizer::encode gives), a batch a `std::vector<std::vector<int64_t>>` (left-padded where
/// needed) or a `[batch, pos]` int64 tensor. forward and run_with_cache take a tensor or one
/// prompt's ids; prefill all three; generate a batch; measure_rv a batch or a tensor.

#include <string>
#include <utility>

#include "mechlens/models/load.hpp"
#include "mechlens/tokenizer/tokenizer.hpp"

namespace mechlens {

struct Pretrained {
  Model model{nullptr};
  Tokenizer tokenizer;
};

/// load_model(dir, options) and Tokenizer::from_file(dir, tokenizer_options); an IoError naming
/// the folder when it holds no tokenizer.json (load the model alone with load_model then).
inline Pretrained load_pretrained(const std::string& dir, const LoadOptions& options = {},
                                  const TokenizerOptions& tokenizer_options = {}) {
  Tokenizer tok = Tokenizer::from_file(dir, tokenizer_options);  // before the weights: a missing file fails fast
  return Pretrained{load_model(dir, options), std::move(tok)};
}

}  // namespace mechlens
