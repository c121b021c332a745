#pragma once
/// \file
/// Model: a Llama-family causal language model (llama, mistral, qwen2) as a torch::nn::Module
/// whose parameter names are the Hugging Face checkpoint keys
/// (`model.layers.3.self_attn.q_proj.weight`), with a hook point on every site (docs/hooks-and-caches.md).
/// Load one with load_model() (models/load.hpp).
///
/// Each block runs its readable path (DecoderLayerImpl::forward, where the hooks are) when one of
/// its hooks is active, and the fast engine (models/fast_engine.hpp) otherwise.

#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/torch_compat.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/hooks/activation_cache.hpp"
#include "mechlens/hooks/hook_registry.hpp"
#include "mechlens/hooks/intervention.hpp"
#include "mechlens/models/attention_mask.hpp"
#include "mechlens/models/decoder_layer.hpp"
#include "mechlens/models/fast_engine.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/linear.hpp"
#include "mechlens/models/model_config.hpp"
#include "mechlens/models/rms_norm.hpp"
#include "mechlens/models/rotary.hpp"

namespace mechlens {

/// How one forward pass runs.
struct ForwardOptions {
  /// [batch, pos] absolute positions (int64). Default: from `attention_mask` (each row counts its
  /// own real tokens from 0), else 0..pos-1, continuing after the cache's length when a cache is given.
  at::Tensor positions;
  /// [batch, pos]: 1 / true for real tokens, 0 for left padding. Default: every token is real.
  at::Tensor attention_mask;
  /// When set, the new tokens' keys and values are appended to it and attention covers every
  /// slot it holds (masked by slot positions and validity).
  KVCache* cache = nullptr;
  /// Told to hooks: -1 plain forward, 0 prefill, k >= 1 the k-th decoding step.
  int64_t step = -1;
  /// Told to hooks (RunState, which decides the steps an intervention acts in): the column of
  /// this forward's first token, and the prompt's columns (-1: this forward is the whole prompt,
  /// first_column + its tokens). prefill() and decode() set both; a teacher-forced forward over
  /// prompt + continuation sets prompt_columns to the prompt's length, so that interventions
  /// scoped to generated tokens act on the continuation.
  int64_t first_column = 0;
  int64_t prompt_columns = -1;
  /// Compute logits for the last position only ([batch, 1, vocab]).
  bool last_position_only = false;
  /// Stop after this layer's block (its hooks run; later layers, the final norm and the logits
  /// do not): forward returns an undefined tensor. R_V at layers 4 and 24 needs no more. -1: all.
  int64_t stop_after_layer = -1;
  /// Let blocks with no active hook run in the fast engine (models/fast_engine.hpp; only when the
  /// model is fused). false: every block takes its readable path (for comparisons and debugging).
  bool fast_engine = true;
  /// Run past the model's context (config.json's max_position_embeddings): positions there were
  /// never trained, so a forward whose cache slots + new tokens exceed it is an error by default.
  bool allow_long_context = false;
  /// Start an autograd graph at the token embeddings, so that every activation of this forward
  /// carries a gradient (the weights stay frozen: none is computed for them). Needs grad mode;
  /// every block then takes its readable path. run_with_gradients (attribution/gradients.hpp)
  /// sets it; backward hooks (hooks/backward_hook.hpp) need it.
  bool activation_gradients = false;
};

namespace detail {
struct StaticStep;
}

/// A hook point's name and documented shape (-1 batch, -2 positions, -3 key positions).
struct HookInfo {
  std::string name;
  int64_t layer;
  std::vector<int64_t> shape;
};

/// How a Model is laid out when built: each projection its own matrix, or q/k/v and gate/up
/// already views of fused matrices (what fuse_projections() makes), for a loader to fill.
enum class Projections { Separate, Fused };

class ModelImpl : public torch::nn::Module {
  friend struct detail::StaticStep;

 public:
  /// A model of `cfg`'s shapes whose parameters are allocated with `options` and left
  /// uninitialised (load_model or init_weights fills them). Projections::Fused builds the fused
  /// layout layer by layer, so a loader copies each weight once, into its place, and memory never
  /// holds both layouts (fused() is then true). `layer_devices` (one per layer, models/device_map.hpp)
  /// puts each decoder layer on its own device; the embedding, final norm and unembedding go on
  /// the first layer's device, which is then the model's device(). Empty: all on `options`' device.
  ModelImpl(const ModelConfig& cfg, const at::TensorOptions& options,
            Projections projections = Projections::Separate, const std::vector<at::Device>& layer_devices = {})
      : cfg_(cfg), options_(options) {
    MECHLENS_CHECK(layer_devices.empty() || static_cast<int64_t>(layer_devices.size()) == cfg.n_layers(), ArgumentError,
                   "Model: {} layer devices for {} layers", layer_devices.size(), cfg.n_layers());
    if (!layer_devices.empty()) {
      options_ = options_.device(layer_devices.front());
      for (const at::Device& d : layer_devices)
        if (d != layer_devices.front()) layer_devices_ = layer_devices;  // split: kept; else one device
    }
    const at::TensorOptions& home = options_;
    body_ = register_module("model", std::make_shared<torch::nn::Module>());
    embed_tokens_ = body_->register_module("embed_tokens", Embedding(cfg.vocab_size, cfg.d_model(), home));
    hook_embed_ = &hooks_.add_point("hook_embed", -1, {kDimBatch, kDimPos, cfg.d_model()});
    layers_ = body_->register_module("layers", torch::nn::ModuleList());
    for (int64_t l = 0; l < cfg.n_layers(); ++l) {
      DecoderLayer layer(cfg, l, hooks_, home.device(layer_device(l)));
      layers_->push_back(layer);
      blocks_.push_back(layer);
      fast_.emplace_back(*layer);
      // Fused before the next layer is built: the separate matrices just freed are the sizes the
      // next layer asks for, so the device allocator hands them out again.
      if (projections == Projections::Fused) fast_.back().fuse(/*keep_values=*/false);
    }
    fused_ = projections == Projections::Fused;
    norm_ = body_->register_module("norm", RMSNorm(cfg.d_model(), cfg.rms_norm_eps, home));
    hook_ln_final_ = &hooks_.add_point("ln_final.hook_normalized", -1, {kDimBatch, kDimPos, cfg.d_model()});
    if (!cfg.tie_word_embeddings)
      lm_head_ = register_module("lm_head", Linear(cfg.d_model(), cfg.vocab_size, false, home));
    inv_freq_ = rope_inverse_frequencies(cfg.rope, cfg.d_head(), home.device());
  }

  /// ids [batch, pos] (int64) -> logits [batch, pos, vocab] (or [batch, 1, vocab] with
  /// last_position_only), in the model's dtype.
  at::Tensor forward(const at::Tensor& ids, const ForwardOptions& opt = {}) { return run(ids, opt, at::Tensor()); }
  /// One prompt's token ids (what Tokenizer::encode gives): a batch of one, [1, n, vocab] logits.
  at::Tensor forward(const std::vector<int64_t>& ids, const ForwardOptions& opt = {}) { return forward(ids_tensor(ids), opt); }

  /// `ids` as the [1, n] int64 tensor on the model's device that forward takes.
  at::Tensor ids_tensor(const std::vector<int64_t>& ids) const {
    MECHLENS_CHECK(!ids.empty(), ArgumentError, "forward: no token ids");
    return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, static_cast<int64_t>(ids.size())}).to(device());
  }

  const ModelConfig& config() const { return cfg_; }
  at::ScalarType dtype() const { return options_.dtype().toScalarType(); }
  at::Device device() const { return options_.device(); }
  const at::TensorOptions& options() const { return options_; }
  /// Layer l's device (device() for every layer unless the model is split over devices).
  at::Device layer_device(int64_t layer) const {
    return layer_devices_.empty() ? options_.device() : layer_devices_.at(static_cast<size_t>(layer));
  }
  /// Every layer's device, in order.
  std::vector<at::Device> layer_devices() const {
    return layer_devices_.empty() ? std::vector<at::Device>(static_cast<size_t>(cfg_.n_layers()), options_.device())
                                  : layer_devices_;
  }
  /// Whether every part of the model is on one device (false: split by LoadOptions::device_map).
  bool on_one_device() const { return layer_devices_.empty(); }
  /// An empty KV cache for this model: `batch` rows, room for `capacity` slots, each layer's keys
  /// and values on its layer's device.
  KVCache make_cache(int64_t batch, int64_t capacity) const {
    return KVCache::for_model(cfg_, batch, capacity, options_, layer_devices_);
  }

  HookRegistry& hooks() { return hooks_; }
  const HookRegistry& hooks() const { return hooks_; }
  /// Every hook point name, in the order a forward meets them.
  std::vector<std::string> hook_names() const { return hooks_.names(); }
  /// Every hook point with its documented shape.
  std::vector<HookInfo> hook_info() const {
    std::vector<HookInfo> out;
    for (const auto& p : hooks_.points()) out.push_back({p.name(), p.layer(), p.shape()});
    return out;
  }

  /// Attaches fn to the hook points `pattern` selects (exact name or glob) until the handle goes.
  [[nodiscard]] HookHandle add_hook(const std::string& pattern, HookFn fn) { return hooks_.add_hook(pattern, std::move(fn)); }

  /// Applies an intervention until the returned handle is destroyed:
  /// `auto scope = model->apply(a | b);`
  [[nodiscard]] HookHandle apply(const Intervention& intervention) { return intervention.apply(hooks_); }

  /// TransformerLens' run_with_cache: one forward with the selected activations recorded.
  /// Returns the logits; the cache holds the activations (estimated first against max_bytes).
  std::pair<at::Tensor, ActivationCache> run_with_cache(const at::Tensor& ids, const CacheOptions& cache_options,
                                                        const ForwardOptions& opt = {}) {
    const int64_t key_pos = ids.size(1) + (opt.cache ? opt.cache->length() : 0);
    ActivationCache::check_budget(hooks_, cache_options, ids.size(0), ids.size(1), key_pos, dtype());
    ActivationCache cache = ActivationCache::attach(hooks_, cache_options);
    at::Tensor logits = forward(ids, opt);
    cache.detach();
    return {logits, cache};
  }
  /// The same for one prompt's token ids.
  std::pair<at::Tensor, ActivationCache> run_with_cache(const std::vector<int64_t>& ids, const CacheOptions& cache_options,
                                                        const ForwardOptions& opt = {}) {
    return run_with_cache(ids_tensor(ids), cache_options, opt);
  }

  /// Turns on the fast engine (models/fast_engine.hpp) for blocks with no active hook: q/k/v and
  /// gate/up weights become views of fused matrices (names, shapes and in-place edits are
  /// unchanged) and run as single GEMMs. load_model does this unless told not to. For inference:
  /// the engine steps aside whenever a gradient is needed, but the fused views carry none to the
  /// parameters, so train an unfused model. The fusion survives to().
  void fuse_projections() {
    for (auto& f : fast_) f.fuse();
    fused_ = true;
  }
  /// Whether fuse_projections() ran.
  bool fused() const { return fused_; }

  /// Moves / converts the parameters (torch::nn::Module::to), then the rotary frequencies, the
  /// model's options and the fused matrices with them.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(device, dtype, non_blocking);
    moved(dtype);
  }
  void to(torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(dtype, non_blocking);
    moved(dtype);
  }
  void to(torch::Device device, bool non_blocking = false) override {
    torch::nn::Module::to(device, non_blocking);
    moved(options_.dtype().toScalarType());
  }

  /// The token embedding matrix [vocab, d_model].
  const at::Tensor& embedding_weight() const { return embed_tokens_->weight; }

 private:
  /// forward(), or with `slot` the static-shape step (detail::StaticStep).
  at::Tensor run(const at::Tensor& ids, const ForwardOptions& opt, const at::Tensor& slot) {
    MECHLENS_CHECK(ids.dim() == 2, ShapeError, "Model::forward: ids have shape {}, expected [batch, pos]",
                   shape_str(ids.sizes()));
    const int64_t b = ids.size(0), p = ids.size(1);
    MECHLENS_CHECK(p > 0, ShapeError, "Model::forward: no tokens (ids shape {})", shape_str(ids.sizes()));
    if (opt.step <= 0 && ids.device().is_cpu() && ids.numel() > 0) {
      // Ids from the host are checked here, in plain forwards and prefills (a device tensor would
      // cost a sync; decode steps feed the sampler's tokens, inside the vocabulary by
      // construction, so the per-token loop skips the two reductions).
      const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
      MECHLENS_CHECK(lo >= 0 && hi < cfg_.vocab_size, ArgumentError,
                     "Model::forward: token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi,
                     cfg_.vocab_size);
    }
    at::Tensor token_ids = ids.to(options_.device(), at::kLong);
    at::Tensor live;  // [b, p] bool, undefined when nothing is padded
    if (opt.attention_mask.defined()) {
      MECHLENS_CHECK(opt.attention_mask.sizes() == ids.sizes(), ShapeError,
                     "Model::forward: attention_mask has shape {} but ids have shape {}",
                     shape_str(opt.attention_mask.sizes()), shape_str(ids.sizes()));
      live = opt.attention_mask.to(options_.device()).to(at::kBool);
    }
    at::Tensor positions = opt.positions.defined() ? opt.positions.to(options_.device(), at::kLong)
                                                   : default_positions(b, p, live, opt.cache);
    MECHLENS_CHECK(positions.sizes() == ids.sizes(), ShapeError,
                   "Model::forward: positions have shape {} but ids have shape {}", shape_str(positions.sizes()),
                   shape_str(ids.sizes()));
    if (opt.cache) check_cache(*opt.cache, b);
    if (!opt.allow_long_context) {
      const int64_t held = opt.cache ? opt.cache->length() : 0;
      MECHLENS_CHECK(held + p <= cfg_.max_position_embeddings, ArgumentError,
                     "Model::forward: {} tokens ({} in the KV cache + {} new) exceed the model's context of {} "
                     "(max_position_embeddings in config.json); positions past it were never trained (set "
                     "ForwardOptions::allow_long_context to run anyway)",
                     held + p, held, p, cfg_.max_position_embeddings);
    }
    MECHLENS_CHECK(opt.stop_after_layer < cfg_.n_layers(), ArgumentError,
                   "Model::forward: stop_after_layer {} but the model has {} layers", opt.stop_after_layer,
                   cfg_.n_layers());
    // The cache's length is one number for every layer: a forward that leaves later layers
    // unwritten would commit slots those layers never filled.
    MECHLENS_CHECK(opt.stop_after_layer < 0 || opt.stop_after_layer == cfg_.n_layers() - 1 || !opt.cache,
                   ArgumentError,
                   "Model::forward: stop_after_layer {} with a KV cache would leave layers {}:{} of the cache "
                   "unwritten; run without a cache (R_V needs none) or without stop_after_layer",
                   opt.stop_after_layer, opt.stop_after_layer + 1, cfg_.n_layers());

    MECHLENS_CHECK(opt.first_column >= 0 && (opt.prompt_columns < 0 || opt.prompt_columns > 0), ArgumentError,
                   "Model::forward: first_column {} / prompt_columns {} (expected first_column >= 0 and "
                   "prompt_columns -1 or positive)",
                   opt.first_column, opt.prompt_columns);
    RunState& state = hooks_.run_state();
    state.step = opt.step;
    state.positions = positions;
    state.live = live;
    state.first_column = opt.first_column;
    state.columns = p;
    state.prompt_columns = opt.prompt_columns < 0 ? opt.first_column + p : opt.prompt_columns;

    // Masks are built once per forward and shared by every layer.
    at::Tensor mask;
    const bool static_step = slot.defined();
    MECHLENS_CHECK(!opt.activation_gradients || at::GradMode::is_enabled(), ArgumentError,
                   "Model::forward: activation_gradients needs grad mode (this forward runs under a NoGradGuard)");
    // A cache whose slots are autograd leaves (KVCache::track_gradients) is read by the readable
    // path, which joins them to the new keys instead of writing into the storage.
    const bool engine =
        fused_ && opt.fast_engine && !(opt.cache && opt.cache->tracks_gradients() && at::GradMode::is_enabled());
    if (static_step) {
      MECHLENS_CHECK(on_one_device(), ArgumentError,
                     "Model: a static-shape step (CUDA graph) needs a model on one device; this one is split by "
                     "device_map");
      MECHLENS_CHECK(opt.cache && p == 1 && !live.defined() && engine && opt.stop_after_layer < 0, ArgumentError,
                     "Model: a static-shape step takes a cache, one real token per row (got {} positions) and a "
                     "fused model", p);
      opt.cache->write_slot_state(positions, slot);
      mask = make_attention_mask(positions, live, opt.cache->position_storage(), opt.cache->valid_storage(),
                                 cfg_.sliding_window);
    } else if (opt.cache) {
      const bool fresh = opt.cache->length() == 0;
      opt.cache->begin_append(positions, live);
      // A first chunk without padding (and within the window) is plain causal attention: no mask,
      // so LibTorch 2.x can take its fastest fused kernel.
      if (!(fresh && !live.defined() && !(cfg_.sliding_window && p > *cfg_.sliding_window)))
        mask = make_attention_mask(positions, live, opt.cache->appending_positions(),
                                   opt.cache->has_padding() || live.defined() ? opt.cache->appending_valid() : at::Tensor(),
                                   cfg_.sliding_window);
    } else if (live.defined() || (cfg_.sliding_window && p > *cfg_.sliding_window) || opt.positions.defined()) {
      mask = make_attention_mask(positions, live, positions, live, cfg_.sliding_window);
    }  // else: plain causal attention over exactly these tokens
    RotaryAngles angles = rotary_angles(inv_freq_, positions, options_.dtype().toScalarType());
#if MECHLENS_TORCH_AT_LEAST(2, 5)
    // The fused attention takes an additive bias: made here once, not in each of the layers.
    const AttentionMask layer_mask = AttentionMask::from(mask, options_.dtype().toScalarType());
#else
    const AttentionMask layer_mask = AttentionMask::from(mask);
#endif

    at::Tensor resid;
    try {
      at::Tensor embedded = embed_tokens_(token_ids);
      if (opt.activation_gradients) embedded = embedded.detach().requires_grad_(true);
      resid = (*hook_embed_)(embedded);
      // A model split over devices: the hidden state, angles and mask follow the layers' devices.
      RotaryAngles here_angles = angles;
      AttentionMask here_mask = layer_mask;
      for (size_t l = 0; l < blocks_.size(); ++l) {
        if (!layer_devices_.empty() && resid.device() != layer_devices_[l]) {
          const at::Device to = layer_devices_[l];
          resid = resid.to(to);
          here_angles = {angles.cos.to(to), angles.sin.to(to), angles.sin_signed.to(to), angles.positions.to(to),
                         angles.inv_freq.to(to)};
          here_mask = {layer_mask.allowed.defined() ? layer_mask.allowed.to(to) : at::Tensor(),
                       layer_mask.bias.defined() ? layer_mask.bias.to(to) : at::Tensor()};
        }
        if (engine && fast_[l].applies(resid)) {
          resid = fast_[l].forward(resid, here_angles, here_mask, opt.cache, slot);
        } else {
          // A hooked block of a static step takes the readable path with the same slot write.
          resid = blocks_[l]->forward(resid, here_angles, here_mask, opt.cache, slot);
        }
        if (static_cast<int64_t>(l) == opt.stop_after_layer) break;
      }
      if (resid.device() != options_.device()) resid = resid.to(options_.device());
    } catch (...) {
      if (opt.cache && !static_step) opt.cache->rollback();
      throw;
    }
    if (opt.cache && !static_step) opt.cache->commit();
    if (opt.stop_after_layer >= 0) return at::Tensor();
    if (opt.last_position_only) resid = resid.narrow(1, p - 1, 1);
    const at::Tensor& unembed = lm_head_ ? lm_head_->weight : embed_tokens_->weight;  // [vocab, d_model]
    if (engine && !hook_ln_final_->active() && !(at::GradMode::is_enabled() && resid.requires_grad()))
      return detail::fast_unembed(*norm_, unembed, resid);
    return at::linear((*hook_ln_final_)(norm_(resid)), unembed);
  }

  void moved(at::ScalarType dtype) {
    // The device as the parameters now report it ("cuda" becomes "cuda:0"); to() puts every
    // layer there, so a split model is on one device afterwards.
    const at::Device placed = embed_tokens_->weight.device();
    layer_devices_.clear();
    options_ = options_.device(placed).dtype(dtype);
    inv_freq_ = inv_freq_.to(placed);
    for (auto& f : fast_) {
      f.release();
      if (fused_) f.fuse();
    }
  }

  at::Tensor default_positions(int64_t b, int64_t p, const at::Tensor& live, const KVCache* cache) const {
    auto opts = at::TensorOptions().dtype(at::kLong).device(options_.device());
    if (live.defined()) {
      MECHLENS_CHECK(!cache || cache->length() == 0, ArgumentError,
                     "Model::forward: pass positions explicitly when appending padded tokens to a non-empty cache");
      return (live.to(at::kLong).cumsum(1) - 1).clamp_min(0);
    }
    MECHLENS_CHECK(!cache || !cache->has_padding(), ArgumentError,
                   "Model::forward: the cache holds padded rows; pass positions explicitly");
    const int64_t start = cache ? cache->length() : 0;
    return at::arange(start, start + p, opts).unsqueeze(0).expand({b, p});
  }

  /// "cuda" and "cuda:0" name the same device when one of them has no index.
  static bool same_device(const at::Device& a, const at::Device& b) {
    return a.type() == b.type() && (!a.has_index() || !b.has_index() || a.index() == b.index());
  }

  void check_cache(const KVCache& cache, int64_t b) const {
    MECHLENS_CHECK(cache.n_layers() == cfg_.n_layers() && cache.n_kv_heads() == cfg_.n_kv_heads() &&
                       cache.d_head() == cfg_.d_head() && cache.batch() == b,
                   ShapeError,
                   "Model::forward: the KV cache is [layers {}, batch {}, kv_heads {}, d_head {}] but the model "
                   "needs [layers {}, batch {}, kv_heads {}, d_head {}]",
                   cache.n_layers(), cache.batch(), cache.n_kv_heads(), cache.d_head(), cfg_.n_layers(), b,
                   cfg_.n_kv_heads(), cfg_.d_head());
    MECHLENS_CHECK(cache.dtype() == dtype() && same_device(cache.device(), device()), ArgumentError,
                   "Model::forward: the KV cache is {} on {}, the model {} on {}", c10::toString(cache.dtype()),
                   cache.device().str(), c10::toString(dtype()), device().str());
    if (!layer_devices_.empty() || !cache.on_one_device())
      for (int64_t l = 0; l < cfg_.n_layers(); ++l)
        MECHLENS_CHECK(same_device(cache.layer_device(l), layer_device(l)), ArgumentError,
                       "Model::forward: the KV cache keeps layer {} on {}, the model runs it on {} (make the cache "
                       "with model->make_cache, or place it with KVCache::placed(model->layer_devices()))",
                       l, cache.layer_device(l).str(), layer_device(l).str());
  }

  ModelConfig cfg_;
  at::TensorOptions options_;
  HookRegistry hooks_;  // declared before the layers, which add their hook points to it
  std::shared_ptr<torch::nn::Module> body_;
  Embedding embed_tokens_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  std::vector<DecoderLayer> blocks_;
  std::vector<FastLayer> fast_;  // one per block, over its parameters
  bool fused_ = false;
  std::vector<at::Device> layer_devices_;  // one per layer when split over devices; else empty
  RMSNorm norm_{nullptr};
  Linear lm_head_{nullptr};
  at::Tensor inv_freq_;
  HookPoint* hook_embed_;
  HookPoint* hook_ln_final_;
};
TORCH_MODULE(Model);

namespace detail {
/// The static-shape decoding step that CUDA graphs capture (generation/cuda_graph.hpp): one token
/// per row, ids / positions [batch, 1] on the device, written at cache slot `slot` ([1] int64 on
/// the device, read at replay), with attention over the cache's whole capacity masked by slot
/// validity; the cache's host length is left to the caller. Needs a fused model; a block with an
/// active hook takes its readable path, writing at the same slot (so a capturable hook runs inside
/// the captured step). Internal to mechlens (its tests use it); not part of the API.
struct StaticStep {
  static at::Tensor run(ModelImpl& model, const at::Tensor& ids, const ForwardOptions& opt, const at::Tensor& slot) {
    at::NoGradGuard no_grad;  // inference only, as the engine is
    return model.run(ids, opt, slot);
  }
};
}  // namespace detail

}  // namespace mechlens
