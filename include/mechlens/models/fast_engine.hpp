#pragma once
/// \file
/// The fast engine: how a decoder block runs for inference when none of its hooks is active.
/// It computes what the readable path (DecoderLayerImpl::forward) computes, with
///   - q/k/v and gate/up as single GEMMs: the layer's q/k/v (gate/up) weights become views of
///     one fused matrix (their names, shapes and in-place edits are unchanged);
///   - mechlens' CUDA kernels (kernels/fused_ops.hpp) where they run: RMSNorm, residual add +
///     RMSNorm, SwiGLU, rotary + KV-cache write, and for one row the matrix-vector kernels;
///   - the static-shape decoding step CUDA graphs capture (detail::StaticStep in model.hpp): one
///     token per row written at a device-side slot, attention over the cache's whole capacity
///     masked by slot validity; batch 1 on CUDA takes it in six kernels (fused_step).
/// Model::forward picks, per layer and per forward, by one predicate (FastLayer::applies): the
/// model was fused (fuse_projections, which load_model does by default), the forward allows it
/// (ForwardOptions::fast_engine), no hook of the block is active, and no gradient must flow (the
/// kernels have no backward, and the fused views do not carry gradients to the parameters).
/// Hooks therefore always see the readable path's tensors. tests/models/test_fast_engine.cpp
/// checks the two paths against each other; the HF parity tests check both against transformers.

#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "mechlens/core/error.hpp"
#include "mechlens/kernels/fused_ops.hpp"
#include "mechlens/models/attention.hpp"
#include "mechlens/models/attention_mask.hpp"
#include "mechlens/models/decoder_layer.hpp"
#include "mechlens/models/kv_cache.hpp"
#include "mechlens/models/rms_norm.hpp"
#include "mechlens/models/rotary.hpp"

namespace mechlens {

namespace detail {
/// Whether `part` is rows [row0, row0 + part.size(0)) of `whole` (what fuse() made it).
inline bool rows_of(const at::Tensor& part, const at::Tensor& whole, int64_t row0) {
  return part.defined() && whole.defined() && part.device() == whole.device() &&
         part.scalar_type() == whole.scalar_type() &&
         part.data_ptr() == static_cast<const char*>(whole.data_ptr()) + row0 * whole.stride(0) * whole.element_size();
}

/// RMSNorm of x with `norm`'s weight: one kernel where the fused kernels run, else the readable op.
inline at::Tensor fast_rms_norm(const RMSNormImpl& norm, const at::Tensor& x) {
  if (kernels::fused_available(x) && norm.weight.scalar_type() == x.scalar_type() && norm.weight.device() == x.device())
    return kernels::rms_norm(x, norm.weight, norm.eps());
  return norm.forward(x);
}

/// (resid + delta, RMSNorm(resid + delta)): one kernel where the fused kernels run.
inline std::pair<at::Tensor, at::Tensor> fast_add_rms_norm(const RMSNormImpl& norm, const at::Tensor& resid,
                                                           const at::Tensor& delta) {
  if (kernels::fused_available(resid) && norm.weight.scalar_type() == resid.scalar_type() &&
      norm.weight.device() == resid.device() && delta.sizes() == resid.sizes() &&
      delta.scalar_type() == resid.scalar_type() && delta.device() == resid.device())
    return kernels::add_rms_norm(resid, delta, norm.weight, norm.eps());
  at::Tensor sum = resid + delta;
  return {sum, norm.forward(sum)};
}

/// The final norm and the unembedding, logits = RMSNorm(resid) unembedᵀ: one kernel for one row
/// on CUDA.
inline at::Tensor fast_unembed(const RMSNormImpl& norm, const at::Tensor& unembed, const at::Tensor& resid) {
  // weights_settled: the kernel before is this forward's last layer.
  if (kernels::rms_norm_matvec_applies(resid, norm.weight, unembed))
    return kernels::rms_norm_matvec(resid, norm.weight, norm.eps(), unembed, /*weights_settled=*/true);
  return kernels::linear(fast_rms_norm(norm, resid), unembed);
}
}  // namespace detail

/// One decoder block in the fast engine (see the file comment).
class FastLayer {
 public:
  explicit FastLayer(DecoderLayerImpl& layer) : layer_(&layer) {}

  /// Fuses the projections: q/k/v (and their biases) and gate/up become views of one matrix each.
  /// Called again, it re-fuses only what no longer aliases (after Model::to, or a parameter's
  /// set_data). keep_values false makes the fused layout without copying the current values (the
  /// matrices are left uninitialised, for a loader to fill through the parameters).
  void fuse(bool keep_values = true) {
    if (fused()) return;
    at::NoGradGuard no_grad;
    AttentionImpl& a = layer_->self_attn();
    MlpImpl& m = layer_->mlp();
    qkv_ = stack_rows({&a.q_proj().weight, &a.k_proj().weight, &a.v_proj().weight}, keep_values);
    qkv_bias_ = a.q_proj().bias.defined()
                    ? stack_rows({&a.q_proj().bias, &a.k_proj().bias, &a.v_proj().bias}, keep_values)
                    : at::Tensor();
    gate_up_ = stack_rows({&m.gate_proj().weight, &m.up_proj().weight}, keep_values);
  }

  /// Whether the parameters are (still) views of the fused matrices.
  bool fused() const {
    AttentionImpl& a = layer_->self_attn();
    MlpImpl& m = layer_->mlp();
    const bool bias_ok = !a.q_proj().bias.defined() ||
                         (detail::rows_of(a.q_proj().bias, qkv_bias_, 0) &&
                          detail::rows_of(a.k_proj().bias, qkv_bias_, nq()) &&
                          detail::rows_of(a.v_proj().bias, qkv_bias_, nq() + nk()));
    return detail::rows_of(a.q_proj().weight, qkv_, 0) && detail::rows_of(a.k_proj().weight, qkv_, nq()) &&
           detail::rows_of(a.v_proj().weight, qkv_, nq() + nk()) && bias_ok &&
           detail::rows_of(m.gate_proj().weight, gate_up_, 0) &&
           detail::rows_of(m.up_proj().weight, gate_up_, m.gate_proj().weight.size(0));
  }

  /// Drops the fused matrices (the parameters keep their own storage).
  void release() { qkv_ = qkv_bias_ = gate_up_ = at::Tensor(); }

  /// The one predicate: whether this block runs here for `resid` (the model is fused and the
  /// forward allows the engine are the caller's part). No hook of the block active, and no
  /// gradient to keep: grad mode off, or neither the input nor a parameter needs one.
  bool applies(const at::Tensor& resid) const {
    if (layer_->any_hook_active()) return false;
    if (!at::GradMode::is_enabled()) return true;
    if (resid.requires_grad()) return false;
    for (const auto& p : layer_->parameters())
      if (p.requires_grad()) return false;
    return true;
  }

  /// resid [batch, pos, d_model] -> same, as DecoderLayerImpl::forward. With `slot` (the static
  /// step, one token per row): keys and values written at that cache slot, attention over the
  /// cache's whole capacity.
  at::Tensor forward(const at::Tensor& resid, const RotaryAngles& angles, const AttentionMask& mask, KVCache* cache,
                     const at::Tensor& slot = {}) {
    fuse();  // a no-op unless to() or set_data replaced the parameters
    MECHLENS_CHECK(!slot.defined() || (cache && resid.size(1) == 1), ArgumentError,
                   "FastLayer: a static step needs a cache and one token per row (got {} positions)", resid.size(1));
    if (slot.defined() && fused_step_applies(resid)) return fused_step(resid, angles, mask, *cache, slot);
    AttentionImpl& a = layer_->self_attn();
    const int64_t b = resid.size(0), p = resid.size(1), h = a.n_heads(), kv = a.n_kv_heads(), d = a.d_head();

    // Attention: one GEMM for q, k and v; q and k rotated together.
    at::Tensor qkv = kernels::linear(detail::fast_rms_norm(layer_->input_layernorm(), resid), qkv_, qkv_bias_);
    at::Tensor q, keys, values;  // q [b, p, h, d]; keys / values [b, kv, key_pos, d]
    if (slot.defined() && kernels::fused_available(qkv)) {
      keys = cache->key_storage(a.layer());
      values = cache->value_storage(a.layer());
      q = kernels::rotary_write_kv(qkv, h, kv, angles.positions, angles.inv_freq, slot, keys, values);
    } else {
      at::Tensor v = qkv.narrow(-1, nq() + nk(), nk()).view({b, p, kv, d});
      at::Tensor qk = apply_rotary(qkv.narrow(-1, 0, nq() + nk()).view({b, p, h + kv, d}), angles);
      q = qk.narrow(2, 0, h);
      at::Tensor k = qk.narrow(2, h, kv);
      if (slot.defined())
        std::tie(keys, values) = cache->write_at(a.layer(), k, v, slot);
      else if (cache)
        std::tie(keys, values) = cache->write(a.layer(), k, v);
      else
        keys = k.transpose(1, 2), values = v.transpose(1, 2);
    }
    at::Tensor z = scaled_dot_product(q.transpose(1, 2), keys, values, mask).transpose(1, 2).reshape({b, p, h * d});
    auto [mid, normed] = detail::fast_add_rms_norm(layer_->post_attention_layernorm(), resid,
                                                   kernels::linear(z, a.o_proj().weight));

    // MLP: one GEMM for gate and up.
    const at::Tensor& down = layer_->mlp().down_proj().weight;
    at::Tensor gu = kernels::linear(normed, gate_up_);  // [b, p, 2 f]
    at::Tensor mlp_out;
    if (kernels::silu_mul_matvec_applies(gu, down)) {
      mlp_out = kernels::silu_mul_matvec(gu, down);
    } else if (kernels::fused_available(gu)) {
      mlp_out = kernels::linear(kernels::silu_mul(gu), down);
    } else {
      const int64_t f = gu.size(-1) / 2;
      mlp_out = kernels::linear(MlpImpl::silu(gu.narrow(-1, 0, f)) * gu.narrow(-1, f, f), down);
    }
    return mid + mlp_out;
  }

 private:
  int64_t nq() const { return layer_->self_attn().n_heads() * layer_->self_attn().d_head(); }
  int64_t nk() const { return layer_->self_attn().n_kv_heads() * layer_->self_attn().d_head(); }

  /// One matrix holding `parts` one under the other (their first dimension added up); each part
  /// becomes a view of its rows, with its values copied there when keep_values.
  static at::Tensor stack_rows(std::initializer_list<at::Tensor*> parts, bool keep_values) {
    std::vector<int64_t> sizes = (*parts.begin())->sizes().vec();
    sizes[0] = 0;
    for (const at::Tensor* p : parts) sizes[0] += p->size(0);
    at::Tensor whole = at::empty(sizes, (*parts.begin())->options());
    int64_t row0 = 0;
    for (at::Tensor* p : parts) {
      at::Tensor rows = whole.narrow(0, row0, p->size(0));
      if (keep_values) rows.copy_(*p);
      row0 += p->size(0);
      p->set_data(rows);
    }
    return whole;
  }

  /// Whether resid [1, 1, d_model] takes fused_step: batch 1 on CUDA, projections without bias,
  /// and every matrix one the matrix-vector kernels can stream.
  bool fused_step_applies(const at::Tensor& resid) const {
    if (resid.dim() != 3 || resid.size(0) != 1 || resid.size(1) != 1 || !resid.is_contiguous() ||
        qkv_bias_.defined() || !kernels::fused_available(resid))
      return false;
    const at::Tensor& o = layer_->self_attn().o_proj().weight;
    const at::Tensor& down = layer_->mlp().down_proj().weight;
    return kernels::rms_norm_matvec_applies(resid, layer_->input_layernorm().weight, qkv_) &&
           kernels::matvec_weight_fits(o, resid) &&
           kernels::rms_norm_matvec_applies(resid, layer_->post_attention_layernorm().weight, gate_up_) &&
           kernels::matvec_weight_fits(down, resid) && o.size(0) == resid.size(2) && down.size(0) == resid.size(2);
  }

  /// The block in six kernels, each rounding where transformers rounds: RMSNorm + q/k/v
  /// projection; rotary + KV-cache write; attention; o_proj + residual add; RMSNorm + gate/up
  /// projection; SwiGLU + down_proj + residual add (the norms and SwiGLU made inside the
  /// matrix-vector kernels). Batch-1 decoding is bound by reading the weights; this reads
  /// nothing else of note and launches about half the kernels of the general path.
  at::Tensor fused_step(const at::Tensor& resid, const RotaryAngles& angles, const AttentionMask& mask, KVCache& cache,
                        const at::Tensor& slot) {
    AttentionImpl& a = layer_->self_attn();
    const RMSNormImpl& ln1 = layer_->input_layernorm();
    const RMSNormImpl& ln2 = layer_->post_attention_layernorm();
    // The kernel before each projection is one of this forward's own (weights_settled).
    at::Tensor qkv = kernels::rms_norm_matvec(resid, ln1.weight, ln1.eps(), qkv_, /*weights_settled=*/true);
    at::Tensor keys = cache.key_storage(a.layer()), values = cache.value_storage(a.layer());
    at::Tensor q = kernels::rotary_write_kv(qkv, a.n_heads(), a.n_kv_heads(), angles.positions, angles.inv_freq, slot,
                                            keys, values);
    at::Tensor z = scaled_dot_product(q.transpose(1, 2), keys, values, mask).transpose(1, 2).contiguous().view(
        {1, 1, a.n_heads() * a.d_head()});
    at::Tensor mid = kernels::matvec(z, a.o_proj().weight, resid, /*weights_settled=*/true);
    at::Tensor gate_up = kernels::rms_norm_matvec(mid, ln2.weight, ln2.eps(), gate_up_, true);
    return kernels::silu_mul_matvec(gate_up, layer_->mlp().down_proj().weight, mid, /*weights_settled=*/true);
  }

  DecoderLayerImpl* layer_;
  at::Tensor qkv_, qkv_bias_, gate_up_;  // defined after fuse()
};

}  // namespace mechlens
