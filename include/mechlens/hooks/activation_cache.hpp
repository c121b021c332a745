#pragma once
/// \file
/// ActivationCache: TransformerLens' run_with_cache. Attach it to a registry with a name filter,
/// an optional position slice, a target device (CPU offload, into pinned memory when the model is
/// on CUDA) and dtype; its memory is estimated before the run, and a limit the user sets turns an
/// out-of-memory crash into a clear error.

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/selection.hpp"
#include "mechlens/core/shape.hpp"
#include "mechlens/hooks/backward_hook.hpp"
#include "mechlens/hooks/hook_layout.hpp"
#include "mechlens/hooks/hook_name.hpp"
#include "mechlens/hooks/hook_registry.hpp"

namespace mechlens {

struct CacheOptions {
  /// Hook names or globs to keep ("blocks.*.attn.hook_v"); empty keeps every hook point but
  /// `attn.hook_result` (per-head outputs, [batch, pos, heads, d_model]: name them to keep them).
  std::vector<std::string> names;
  /// Keep only these positions (along each activation's position dimension).
  Positions positions = Positions::all();
  /// Store on this device (e.g. CPU to offload a CUDA model); default: where the activation is.
  std::optional<at::Device> device;
  /// Store in this dtype; default: the activation's.
  std::optional<at::ScalarType> dtype;
  /// Refuse (before the run) when the estimate exceeds this many bytes.
  std::optional<int64_t> max_bytes;
  /// Append along positions across forwards (prefill, then each decoding step) instead of keeping
  /// only the latest forward. An activation with key positions (hook_pattern: each decoding step
  /// attends to one more key) is padded with zeros along them to the longest forward's: a query
  /// gives no weight to the keys written after it, so the accumulated pattern is the causal
  /// [batch, heads, pos, key_pos] matrix one forward over the whole sequence gives. Other
  /// dimensions must agree across forwards (an ArgumentError names the hook and both shapes).
  bool accumulate = false;
  /// With accumulate: room for this many positions per hook, allocated on the activation's device
  /// at its first forward, each forward written at a device-side offset. No host work per forward,
  /// so the cache records inside decode()'s captured CUDA-graph steps (it is capturable,
  /// hook_point.hpp). Positions past the reserve are not kept, and reading the cache is then an
  /// error naming the hook and the positions it saw. Takes no `positions` slice and no `device`
  /// other than the activation's; hooks with key positions (hook_pattern, hook_attn_scores) are
  /// refused. 0: grow by concatenation (host work every forward, so decoding runs eagerly).
  int64_t reserve = 0;
};

class ActivationCache {
 public:
  ActivationCache() : store_(std::make_shared<Store>()) {}

  /// Attaches to every hook point `options.names` selects. Stays attached until detach() or
  /// destruction of the returned object.
  static ActivationCache attach(HookRegistry& registry, const CacheOptions& options) {
    if (options.reserve != 0) check_reserve(registry, options);
    return attached(registry, options, [](std::shared_ptr<Store> store, CacheOptions opts) -> HookFn {
      return [store, opts](const at::Tensor& x, const HookContext& ctx) -> std::optional<at::Tensor> {
        if (opts.reserve > 0)
          record_reserved(*store, opts, x, ctx);
        else
          record(*store, opts, x, ctx);
        return std::nullopt;
      };
    });
  }

  /// The gradients at the same hook points (TransformerLens' backward cache): attaches a backward
  /// hook (hooks/backward_hook.hpp) to every point `options.names` selects, storing d metric /
  /// d activation as attach() stores activations (positions, device, dtype), when backward()
  /// passes there. The forward must carry gradients (ForwardOptions::activation_gradients; or
  /// use run_with_gradients, attribution/gradients.hpp). `accumulate` is refused.
  static ActivationCache attach_gradients(HookRegistry& registry, const CacheOptions& options) {
    MECHLENS_CHECK(!options.accumulate && options.reserve == 0, ArgumentError,
                   "activation cache: gradients are recorded per backward; CacheOptions::accumulate and reserve are "
                   "for activations");
    return attached(registry, options, [](std::shared_ptr<Store> store, CacheOptions opts) -> HookFn {
      return detail::backward_hook_forwarder(
          [store, opts](const at::Tensor& grad, const HookContext& ctx) -> std::optional<at::Tensor> {
            // A copy: the autograd engine owns the buffer it hands to hooks (and may hand an expanded view).
            record(*store, opts, grad.clone(at::MemoryFormat::Contiguous), ctx);
            return std::nullopt;
          });
    });
  }

  /// Bytes the selected activations will take for a forward of `batch` × `pos` tokens over
  /// `key_pos` keys (= pos without a KV cache), in the cache's dtype.
  static int64_t estimate_bytes(const HookRegistry& registry, const CacheOptions& options, int64_t batch, int64_t pos,
                                int64_t key_pos, at::ScalarType activation_dtype) {
    int64_t total = 0;
    const int64_t kept_pos = options.positions.is_all() ? pos : static_cast<int64_t>(options.positions.resolve(pos, "activation cache").size());
    for (auto* p : select(registry, options)) {
      auto shape = p->concrete_shape(batch, kept_pos, key_pos);
      int64_t n = 1;
      for (auto d : shape) n *= d;
      total += n * static_cast<int64_t>(c10::elementSize(options.dtype.value_or(activation_dtype)));
    }
    return total;
  }
  /// Throws a clear error when the estimate exceeds options.max_bytes.
  static void check_budget(const HookRegistry& registry, const CacheOptions& options, int64_t batch, int64_t pos,
                           int64_t key_pos, at::ScalarType activation_dtype) {
    if (!options.max_bytes) return;
    const int64_t need = estimate_bytes(registry, options, batch, pos, key_pos, activation_dtype);
    MECHLENS_CHECK(need <= *options.max_bytes, ArgumentError,
                   "activation cache: the selected hooks need about {} MiB for batch {} × {} positions, over the "
                   "limit of {} MiB set in CacheOptions::max_bytes; select fewer hooks or positions, or a smaller dtype",
                   need >> 20, batch, pos, *options.max_bytes >> 20);
  }

  bool contains(const std::string& name) const {
    return store_->tensors.count(name) > 0 || store_->reserved.count(name) > 0;
  }
  /// The stored activation; a NotFoundError naming the nearest stored names otherwise. Waits
  /// for pending device-to-host copies first (synchronize).
  const at::Tensor& get(const std::string& name) const {
    synchronize();
    auto it = store_->tensors.find(name);
    if (it != store_->tensors.end()) {
      check_kept(*store_, name);
      return it->second;
    }
    std::vector<std::string> have = names();
    detail::raise<NotFoundError>("activation cache holds no '{}' ({} stored; nearest: {})", name, have.size(),
                                 detail::quoted_list(detail::nearest_names(name, have)));
  }
  const at::Tensor& operator[](const std::string& name) const { return get(name); }
  /// The activation of `site` at `layer` (TransformerLens' `cache["v", 24]`): `site` is a block
  /// site or a short name, as hook_name() takes them.
  const at::Tensor& get(std::string_view site, int64_t layer) const { return get(hook_name(layer, site)); }
  const at::Tensor& operator()(std::string_view site, int64_t layer) const { return get(site, layer); }
  std::vector<std::string> names() const {
    synchronize();
    std::vector<std::string> out;
    for (auto& [k, v] : store_->tensors) out.push_back(k);
    return out;
  }
  const std::map<std::string, at::Tensor>& tensors() const {
    synchronize();
    for (auto& [name, r] : store_->reserved) check_kept(*store_, name);
    return store_->tensors;
  }
  /// Waits until every offloaded copy (CUDA -> pinned host memory, queued without blocking) has
  /// landed, so the host can read the stored tensors. Cheap when nothing is pending.
  void synchronize() const {
    for (const c10::Stream& s : store_->pending_streams) s.synchronize();
    store_->pending_streams.clear();
    settle_reserved(*store_);
  }
  /// A cache of its own holding the tensors stored now: later recording into this one (it may
  /// still be attached) does not change the snapshot. Patches take one.
  ActivationCache snapshot() const {
    synchronize();
    for (auto& [name, r] : store_->reserved) check_kept(*store_, name);
    ActivationCache copy;
    copy.store_->tensors = store_->tensors;
    copy.store_->live = store_->live;
    // Reserved hooks' tensors are views of buffers that later forwards write into.
    for (auto& [name, r] : store_->reserved) {
      copy.store_->tensors[name] = copy.store_->tensors[name].clone();
      if (copy.store_->live.count(name)) copy.store_->live[name] = copy.store_->live[name].clone();
    }
    copy.store_->prompt = store_->prompt;
    copy.store_->points = store_->points;
    copy.options_ = options_;
    return copy;
  }
  /// Whether the cache is recording (attached to hook points).
  bool attached() const { return handle_ && handle_->size() > 0; }
  /// [batch, kept positions] true where the stored activation of `name` came from a real token,
  /// false where from left padding; undefined when every token was real (or `name` has no
  /// position dimension).
  at::Tensor live(const std::string& name) const {
    auto it = store_->live.find(name);
    return it == store_->live.end() ? at::Tensor() : it->second;
  }
  /// How many of the stored positions of `name`, from the first, are the prompt of the run that
  /// recorded them (the pending token included; the rest are generated tokens, with
  /// CacheOptions::accumulate); -1 when the positions are not a run's from its first column (a
  /// position slice, a cache of one decoding step): patches then take every position as prompt.
  int64_t prompt_columns(const std::string& name) const {
    auto it = store_->prompt.find(name);
    return it == store_->prompt.end() ? -1 : it->second;
  }
  /// Bytes held now.
  int64_t bytes() const {
    synchronize();
    int64_t total = 0;
    for (auto& [k, v] : store_->tensors) {
      auto r = store_->reserved.find(k);
      const at::Tensor& held = r == store_->reserved.end() ? v : r->second.buffer;  // the whole reserve
      total += held.numel() * static_cast<int64_t>(held.element_size());
    }
    return total;
  }
  /// Stops recording; the stored tensors stay (and are safe to read on the host).
  void detach() {
    if (handle_) handle_->reset();
    synchronize();
  }
  void clear() {
    store_->tensors.clear();
    store_->live.clear();
    store_->prompt.clear();
    store_->reserved.clear();
  }

 private:
  struct Store {
    std::map<std::string, at::Tensor> tensors;
    std::map<std::string, at::Tensor> live;
    std::map<std::string, int64_t> prompt;  ///< prompt_columns()
    std::map<std::string, const HookPoint*> points;
    std::vector<c10::Stream> pending_streams;  ///< streams with device-to-host copies in flight
    /// CacheOptions::reserve: per hook, a buffer with one spare slot along positions (where
    /// positions past the reserve land), the live mask likewise, and the positions seen, counted
    /// on the device.
    struct Reserved {
      at::Tensor buffer, live, count;
      int64_t pos_dim = 0, batch_dim = 0;
      int64_t seen = 0;  ///< positions seen, as of the last synchronize()
      bool any_padding = false;
    };
    std::map<std::string, Reserved> reserved;
    void note_stream(const c10::Stream& s) {
      if (std::find(pending_streams.begin(), pending_streams.end(), s) == pending_streams.end())
        pending_streams.push_back(s);
    }
  };
  /// A cache attached to the points `options` selects through the hook `make(store, options)` gives.
  template <class Make>
  static ActivationCache attached(HookRegistry& registry, const CacheOptions& options, Make make) {
    ActivationCache cache;
    cache.options_ = options;
    std::vector<HookPoint*> points = select(registry, options);
    for (auto* p : points) cache.store_->points[p->name()] = p;
    cache.handle_ = std::make_shared<HookHandle>(
        registry.attach(points, make(cache.store_, options), Steps::all(), /*capturable=*/options.reserve > 0));
    return cache;
  }
  /// Stores `x` (an activation, or a gradient) under the hook's name, as `opts` asks.
  static void record(Store& store, const CacheOptions& opts, const at::Tensor& x, const HookContext& ctx) {
    const HookPoint* point = store.points.at(ctx.name);
    at::Tensor kept = x.detach();
    // A view of a larger buffer (hook_q/k/v slice the fused q/k/v projection) would keep the
    // whole buffer alive: store a compact copy, so bytes() and estimate_bytes() are the truth.
    if (kept.storage().nbytes() > static_cast<size_t>(kept.numel()) * kept.element_size())
      kept = kept.clone(at::MemoryFormat::Contiguous);
    HookLayout layout = hook_layout(*point);
    if (!opts.positions.is_all()) {
      MECHLENS_CHECK(layout.pos_dim >= 0, ArgumentError, "activation cache: hook '{}' has no position dimension",
                     ctx.name);
      auto idx = opts.positions.resolve(kept.size(layout.pos_dim), ctx.name);
      kept = kept.index_select(layout.pos_dim, at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(kept.device()));
    }
    const at::ScalarType dtype = opts.dtype.value_or(kept.scalar_type());
    const at::Device device = opts.device.value_or(kept.device());
    if (device != kept.device() || dtype != kept.scalar_type()) {
      auto target = at::TensorOptions().dtype(dtype).device(device);
      if (device.is_cpu() && kept.is_cuda()) target = target.pinned_memory(true);
      at::Tensor out = at::empty(kept.sizes(), target);
      const bool async = device.is_cpu() && kept.is_cuda();
      out.copy_(kept, /*non_blocking=*/async);
      // The copy is queued on the device's current stream: reading `out` on the host waits for
      // that stream first (ActivationCache::synchronize, called by every accessor).
      if (async) store.note_stream(c10::impl::VirtualGuardImpl(kept.device().type()).getStream(kept.device()));
      kept = out;
    } else if (!opts.positions.is_all()) {
      kept = kept.contiguous();
    }
    // Which kept positions were real tokens (left padding is false), for patches that must
    // not carry padding into real positions. Undefined: every token was real.
    at::Tensor live;
    if (layout.pos_dim >= 0 && ctx.run.live.defined() && ctx.run.live.size(1) == x.size(layout.pos_dim)) {
      live = ctx.run.live.to(at::kBool);
      if (!opts.positions.is_all()) {
        auto idx = opts.positions.resolve(live.size(1), ctx.name);
        live = live.index_select(1, at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(live.device()));
      }
    }
    auto it = store.tensors.find(ctx.name);
    if (opts.accumulate && it != store.tensors.end() && layout.pos_dim >= 0) {
      auto before = store.live.find(ctx.name);
      if (before != store.live.end() || live.defined()) {
        auto all_real = [&](int64_t b, int64_t n, const at::Tensor& like) {
          return at::ones({b, n}, like.options().dtype(at::kBool));
        };
        at::Tensor old_live = before != store.live.end() ? before->second
                                                         : all_real(kept.size(layout.batch_dim),
                                                                    it->second.size(layout.pos_dim), live);
        at::Tensor new_live = live.defined() ? live.to(old_live.device())
                                             : all_real(kept.size(layout.batch_dim), kept.size(layout.pos_dim), old_live);
        store.live[ctx.name] = at::cat({old_live, new_live}, 1);
      }
      at::Tensor held = it->second;
      if (layout.key_pos_dim >= 0 && held.size(layout.key_pos_dim) != kept.size(layout.key_pos_dim)) {
        const int64_t keys = std::max(held.size(layout.key_pos_dim), kept.size(layout.key_pos_dim));
        auto pad_keys = [&](const at::Tensor& t) {
          if (t.size(layout.key_pos_dim) == keys) return t;
          auto shape = t.sizes().vec();
          shape[layout.key_pos_dim] = keys - t.size(layout.key_pos_dim);
          // Keys after a query: probability 0 in a pattern, score -inf (masked) in attn_scores.
          const double fill = detail::ends_with(ctx.name, "hook_attn_scores") ? -std::numeric_limits<double>::infinity() : 0.0;
          return at::cat({t, at::full(shape, fill, t.options())}, layout.key_pos_dim);
        };
        held = pad_keys(held);
        kept = pad_keys(kept);
      }
      for (int64_t d = 0; d < held.dim(); ++d)
        MECHLENS_CHECK(d == layout.pos_dim || (held.dim() == kept.dim() && held.size(d) == kept.size(d)), ArgumentError,
                       "activation cache (accumulate): hook '{}' gave {} in this forward after {} before; only "
                       "positions{} may change between the forwards accumulated (another batch? clear() the "
                       "cache between runs)",
                       ctx.name, shape_str(kept.sizes()), shape_str(it->second.sizes()),
                       layout.key_pos_dim >= 0 ? " and key positions" : "");
      it->second = at::cat({held, kept}, layout.pos_dim);
    } else {
      store.tensors[ctx.name] = kept;
      if (live.defined()) store.live[ctx.name] = live;
      else store.live.erase(ctx.name);
      // How many of the positions (from column 0) are the prompt: a generation's prefill
      // holds all but the pending token, which an accumulating cache appends next.
      const RunState& run = ctx.run;
      if (opts.positions.is_all() && layout.pos_dim >= 0 && run.first_column == 0 &&
          run.columns == x.size(layout.pos_dim) && run.prompt_columns != std::numeric_limits<int64_t>::max())
        store.prompt[ctx.name] = run.prompt_columns;
      else
        store.prompt.erase(ctx.name);
    }
  }
  /// Refuses what CacheOptions::reserve cannot do, before anything is attached.
  static void check_reserve(const HookRegistry& registry, const CacheOptions& options) {
    MECHLENS_CHECK(options.reserve > 0 && options.accumulate, ArgumentError,
                   "activation cache: CacheOptions::reserve {} needs accumulate and a positive count", options.reserve);
    MECHLENS_CHECK(options.positions.is_all() && !options.device, ArgumentError,
                   "activation cache: CacheOptions::reserve writes on the activation's device at every position; it "
                   "takes no positions slice ({}) and no device", options.positions.str());
    for (const HookPoint* p : select(registry, options)) {
      HookLayout layout = hook_layout(*p);
      MECHLENS_CHECK(layout.pos_dim >= 0 && layout.key_pos_dim < 0, ArgumentError,
                     "activation cache: CacheOptions::reserve cannot hold hook '{}' ({}); select hooks with positions "
                     "and no key positions",
                     p->name(), layout.pos_dim < 0 ? "no position dimension" : "its key positions change every step");
    }
  }
  /// record() for CacheOptions::reserve: writes x at the hook's device-side count, then advances
  /// it, with device operations only (capturable).
  static void record_reserved(Store& store, const CacheOptions& opts, const at::Tensor& x, const HookContext& ctx) {
    const HookLayout layout = hook_layout(*store.points.at(ctx.name));
    const at::Tensor kept = x.detach().to(opts.dtype.value_or(x.scalar_type()));
    const int64_t n = kept.size(layout.pos_dim);
    auto it = store.reserved.find(ctx.name);
    if (it == store.reserved.end()) {
      Store::Reserved r;
      r.pos_dim = layout.pos_dim;
      r.batch_dim = layout.batch_dim;
      auto shape = kept.sizes().vec();
      shape[static_cast<size_t>(layout.pos_dim)] = opts.reserve + 1;
      r.buffer = at::zeros(shape, kept.options());
      r.live = at::ones({kept.size(layout.batch_dim), opts.reserve + 1}, kept.options().dtype(at::kBool));
      r.count = at::zeros({1}, kept.options().dtype(at::kLong));
      it = store.reserved.emplace(ctx.name, r).first;
      const RunState& run = ctx.run;
      if (run.first_column == 0 && run.columns == n && run.prompt_columns != std::numeric_limits<int64_t>::max())
        store.prompt[ctx.name] = run.prompt_columns;
    }
    Store::Reserved& r = it->second;
    for (int64_t d = 0; d < kept.dim(); ++d)
      MECHLENS_CHECK(d == layout.pos_dim || (kept.dim() == r.buffer.dim() && kept.size(d) == r.buffer.size(d)),
                     ArgumentError,
                     "activation cache (reserve): hook '{}' gave {} in this forward, the reserve holds {}; only "
                     "positions may change between the forwards recorded (another batch? clear() the cache)",
                     ctx.name, shape_str(kept.sizes()), shape_str(r.buffer.sizes()));
    // Positions past the reserve all land in the spare slot; the count keeps counting them.
    at::Tensor slots = (r.count + at::arange(n, r.count.options())).clamp_max(opts.reserve);
    r.buffer.index_copy_(layout.pos_dim, slots, kept);
    if (ctx.run.live.defined() && ctx.run.live.size(1) == n) {
      r.live.index_copy_(1, slots, ctx.run.live.to(at::kBool));
      r.any_padding = true;
    }
    r.count.add_(n);
  }
  /// Makes each reserved hook's recorded positions readable as a stored tensor (reads the counts:
  /// one synchronisation).
  static void settle_reserved(Store& store) {
    for (auto& [name, r] : store.reserved) {
      r.seen = r.count.item<int64_t>();
      const int64_t kept = std::min(r.seen, r.buffer.size(r.pos_dim) - 1);
      store.tensors[name] = r.buffer.narrow(r.pos_dim, 0, kept);
      if (r.any_padding)
        store.live[name] = r.live.narrow(1, 0, kept);
      else
        store.live.erase(name);
    }
  }
  /// Refuses to hand out a reserved hook's positions when some were not kept (after settle).
  static void check_kept(const Store& store, const std::string& name) {
    auto it = store.reserved.find(name);
    if (it == store.reserved.end()) return;
    const int64_t room = it->second.buffer.size(it->second.pos_dim) - 1;
    MECHLENS_CHECK(it->second.seen <= room, ArgumentError,
                   "activation cache: hook '{}' saw {} positions but CacheOptions::reserve is {}; the positions after "
                   "the first {} were not kept (reserve at least {})",
                   name, it->second.seen, room, room, it->second.seen);
  }
  static std::vector<HookPoint*> select(const HookRegistry& registry, const CacheOptions& options) {
    // Every point but the per-head results, which cost d_model values per head and position and
    // change how the attention output is summed: those are cached only when named.
    if (options.names.empty())
      return registry.select([](const std::string& n) { return !detail::ends_with(n, "attn.hook_result"); });
    std::vector<HookPoint*> out;
    for (const auto& pattern : options.names)
      for (auto* p : registry.select(pattern))
        if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
    return out;
  }

  std::shared_ptr<Store> store_;
  std::shared_ptr<HookHandle> handle_;
  CacheOptions options_;
};

}  // namespace mechlens
