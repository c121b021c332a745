#pragma once
/// \file
/// StudySettings: how a Study (study.hpp) decodes every condition — the generation layer's
/// SamplingOptions (generation/sampler.hpp), the tokens per generation, and the study's own batch
/// size and extra stop tokens — and pair_seed, the seed of pair i's sampling stream. Every record
/// carries these settings (records.hpp), and a resumed run checks them record by record
/// (resume_check.hpp).

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/generation/sampler.hpp"

namespace mechlens::experiments {

struct StudySettings {
  /// temperature (default 0.7 here), top_k, top_p, and seed: the run's seed, from which pair i's
  /// generations sample with pair_seed(seed, i) in every condition (and the DEC7 programs seed
  /// their shuffled controls and bootstraps).
  SamplingOptions sampling = [] {
    SamplingOptions s;
    s.temperature = 0.7;
    return s;
  }();
  int64_t max_new_tokens = 50;       ///< tokens generated per prompt (GenerationOptions::max_new_tokens)
  /// Pairs decoded together: speed and memory only (each row samples from its own stream, so the
  /// generations do not depend on it beyond floating-point rounding of batched matrix products).
  int64_t batch_size = 16;
  std::vector<int64_t> stop_tokens;  ///< besides the model's eos ids

  /// The record's "sampling" field.
  nlohmann::json sampling_json() const {
    return {{"temperature", sampling.temperature}, {"top_k", sampling.top_k}, {"top_p", sampling.top_p},
            {"max_new_tokens", max_new_tokens}, {"stop_tokens", stop_tokens}};
  }
};

/// The sampling seed of pair i (its position in the run's pair list), the same in every condition:
/// the conditions of a pair draw the same random numbers (common random numbers, so paired
/// contrasts compare conditions, not sampler luck), wherever the pair falls in a batch.
inline uint64_t pair_seed(uint64_t seed, int64_t pair) { return row_seed(seed, pair); }

}  // namespace mechlens::experiments
