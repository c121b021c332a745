#pragma once
/// \file
/// Prompt state (docs/design.md): prefill runs every prompt token but the last; the last token is
/// *pending* and is fed first when decoding starts. Splicing caches between two prefilled prompts
/// is therefore symmetric, and the first generated token already sees the edit.
///
/// Batches are left-padded: each row's positions count its own tokens from 0 and its padding
/// slots are masked, so a padded batch gives the rows' own results.

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/generation/left_pad.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/model.hpp"

namespace mechlens {

/// Move-only, like its KVCache: decoding advances the state in place, so two copies sharing one
/// cache would corrupt each other. clone() gives an independent one (to decode it twice).
struct PromptState {
  KVCache cache;           ///< every prompt token but the last
  at::Tensor pending;      ///< [batch] int64: each row's last prompt token, fed first by decode()
  at::Tensor position;     ///< [batch] int64: the pending token's position
  std::vector<std::vector<int64_t>> prompts;  ///< the prompt ids, for records
  /// The prompt's columns: the longest prompt's tokens (left padding makes every row this wide),
  /// the pending token included; -1: unknown (decode then counts every cached slot as prompt).
  int64_t prompt_columns = -1;
  /// Tokens decode() has fed so far (the pending token first).
  int64_t decoded = 0;

  int64_t batch() const { return pending.size(0); }
  /// A deep copy; `capacity` as KVCache::clone.
  PromptState clone(int64_t capacity = 0) const {
    PromptState s;
    s.cache = cache.clone(capacity);
    s.pending = pending.clone();
    s.position = position.clone();
    s.prompts = prompts;
    s.prompt_columns = prompt_columns;
    s.decoded = decoded;
    return s;
  }
};

namespace detail {
inline void check_prompts(const std::vector<std::vector<int64_t>>& prompts, int64_t vocab) {
  MECHLENS_CHECK(!prompts.empty(), ArgumentError, "prefill: no prompts");
  for (size_t r = 0; r < prompts.size(); ++r) {
    MECHLENS_CHECK(!prompts[r].empty(), ArgumentError, "prefill: prompt {} is empty (a prompt needs at least one token)", r);
    for (int64_t id : prompts[r])
      MECHLENS_CHECK(id >= 0 && id < vocab, ArgumentError, "prefill: prompt {} holds token id {} outside the vocabulary [0, {})",
                     r, id, vocab);
  }
}
}  // namespace detail

/// Prefills each prompt over all its tokens but the last into one cache (left-padded batch),
/// reserving `extra_capacity` more slots (decode() needs max_new_tokens).
/// An optional `prefix` cache (batch 1 or the same batch) is copied first and the prompts
/// continue after it: positions start at the prefix's length (KV prefix memory, docs/kv-cache-and-generation.md).
/// Prompts longer than the model's context are refused unless `allow_long_context`.
inline PromptState prefill(ModelImpl& model, const std::vector<std::vector<int64_t>>& prompts, int64_t extra_capacity,
                           const KVCache* prefix = nullptr, bool allow_long_context = false) {
  at::NoGradGuard no_grad;
  detail::check_prompts(prompts, model.config().vocab_size);
  MECHLENS_CHECK(extra_capacity >= 0 && extra_capacity <= (int64_t{1} << 40), ArgumentError,
                 "prefill: extra_capacity {} is outside [0, 2^40] (it reserves cache slots for max_new_tokens)",
                 extra_capacity);
  const int64_t b = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()) - 1);
  const auto dev = model.device();
  auto long_opts = at::TensorOptions().dtype(at::kLong);

  PromptState state;
  state.prompts = prompts;
  int64_t offset = 0;
  const int64_t capacity = longest + extra_capacity + 1;
  if (prefix) {
    MECHLENS_CHECK(prefix->batch() == 1 || prefix->batch() == b, ShapeError,
                   "prefill: the prefix cache has batch {}, the prompts {} (expected 1 or {})", prefix->batch(), b, b);
    MECHLENS_CHECK(!prefix->has_padding(), ArgumentError, "prefill: a padded prefix cache is not supported");
    state.cache = model.make_cache(b, prefix->length() + capacity);
    const int64_t n = prefix->length();
    for (auto [first, count] : state.cache.spans(0, state.cache.n_layers()))
      for (auto [f, c] : prefix->spans(first, count)) {  // the prefix may be placed otherwise
        state.cache.key_storage(f, c).narrow(3, 0, n).copy_(prefix->key_storage(f, c).narrow(3, 0, n).expand({-1, b, -1, -1, -1}));
        state.cache.value_storage(f, c).narrow(3, 0, n).copy_(prefix->value_storage(f, c).narrow(3, 0, n).expand({-1, b, -1, -1, -1}));
      }
    state.cache.position_storage().narrow(1, 0, n).copy_(prefix->positions().expand({b, -1}));
    state.cache.valid_storage().narrow(1, 0, n).fill_(true);
    state.cache.set_length(n, false);
    offset = n;  // positions continue after the prefix (its slots hold positions 0..n-1)
  } else {
    state.cache = model.make_cache(b, capacity);
  }

  // Every token but the last is prefilled (left-padded); the last is pending.
  std::vector<std::vector<int64_t>> prefilled;
  std::vector<int64_t> pending_v, position_v;
  for (const auto& p : prompts) {
    prefilled.emplace_back(p.begin(), p.end() - 1);
    pending_v.push_back(p.back());
    position_v.push_back(offset + static_cast<int64_t>(p.size()) - 1);
  }
  const LeftPadded batch = left_pad(prefilled);
  const bool padded = batch.padded();
  const at::Tensor& ids = batch.ids;
  const at::Tensor& live = batch.live;
  at::Tensor pending = at::tensor(pending_v, long_opts), position = at::tensor(position_v, long_opts);
  if (longest > 0) {
    ForwardOptions opt;
    opt.cache = &state.cache;
    opt.step = 0;
    opt.last_position_only = true;
    opt.allow_long_context = allow_long_context;
    opt.positions = ((live.to(at::kLong).cumsum(1) - 1).clamp_min(0) + offset).to(dev);
    opt.prompt_columns = longest + 1;  // the pending token is the prompt's last column
    if (padded) opt.attention_mask = live.to(dev);
    model.forward(ids.to(dev), opt);
  }
  state.pending = pending.to(dev);
  state.position = position.to(dev);
  state.prompt_columns = longest + 1;
  return state;
}

inline PromptState prefill(ModelImpl& model, const std::vector<int64_t>& prompt, int64_t extra_capacity,
                           const KVCache* prefix = nullptr, bool allow_long_context = false) {
  return prefill(model, std::vector<std::vector<int64_t>>{prompt}, extra_capacity, prefix, allow_long_context);
}

/// The same for token ids as a [batch, pos] int64 tensor (every row a whole prompt: no padding).
inline PromptState prefill(ModelImpl& model, const at::Tensor& ids, int64_t extra_capacity, const KVCache* prefix = nullptr,
                           bool allow_long_context = false) {
  return prefill(model, rows_of_ids(ids, "prefill"), extra_capacity, prefix, allow_long_context);
}

/// Runs every token of `prompt` (none pending) into a new cache: the source of a KV prefix.
inline KVCache encode_prompt(ModelImpl& model, const std::vector<int64_t>& prompt, int64_t extra_capacity = 0,
                             bool allow_long_context = false) {
  at::NoGradGuard no_grad;
  detail::check_prompts({prompt}, model.config().vocab_size);
  const int64_t n = static_cast<int64_t>(prompt.size());
  KVCache cache = model.make_cache(1, n + extra_capacity);
  ForwardOptions opt;
  opt.cache = &cache;
  opt.step = 0;
  opt.last_position_only = true;
  opt.allow_long_context = allow_long_context;
  model.forward(at::tensor(prompt, at::TensorOptions().dtype(at::kLong)).view({1, n}).to(model.device()), opt);
  return cache;
}

}  // namespace mechlens
