#pragma once
/// \file
/// StudySettings: how a Study (study.hpp) decodes every condition — the generation layer's
/// SamplingOptions (generation/sampler.hpp), the tokens per generation, and the study's own batch
/// size and extra stop tokens — and batch_seed, the seed of batch k's sampler. Every record
/// carries these settings (records.hpp), and a resumed run checks them record by record
/// (resume_check.hpp).

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "mechlens/generation/sampler.hpp"

namespace mechlens::experiments {

struct StudySettings {
  /// temperature (default 0.7 here), top_k, top_p, and seed: the run's seed, from which batch k's
  /// sampler gets batch_seed(seed, k) (and the DEC7 programs seed their shuffled controls and
  /// bootstraps).
  SamplingOptions sampling = [] {
    SamplingOptions s;
    s.temperature = 0.7;
    return s;
  }();
  int64_t max_new_tokens = 50;       ///< tokens generated per prompt (GenerationOptions::max_new_tokens)
  int64_t batch_size = 16;           ///< pairs decoded together (rows of a batch share one sampler)
  std::vector<int64_t> stop_tokens;  ///< besides the model's eos ids

  /// The record's "sampling" field.
  nlohmann::json sampling_json() const {
    return {{"temperature", sampling.temperature}, {"top_k", sampling.top_k}, {"top_p", sampling.top_p},
            {"max_new_tokens", max_new_tokens}, {"stop_tokens", stop_tokens}};
  }
};

/// The sampler seed of batch k: SplitMix64 of (seed, k).
inline uint64_t batch_seed(uint64_t seed, int64_t batch) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(batch + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace mechlens::experiments
