#!/usr/bin/env python3
"""Gradients from torch.autograd on transformers, for mechlens' gradient and attribution tests.

For each checkpoint named on the command line (tests/data/models/<name>/) this loads the model with
transformers in float32 (eager attention, weights frozen), takes the prompt p2 (24 tokens, longer than mistral_swa's window) of
reference.safetensors, and writes gradients.safetensors beside it:

  hooks.input_ids            [1, n] the prompt
  hooks.metric               the metric: sum over i < n-1 of log p(ids[i+1] | logits[i]) (teacher-forced
                             log-likelihood of the prompt itself)
  hooks.<hook name>          d metric / d activation at every hook point mechlens' default cache
                             selects (every one but attn.hook_result), in mechlens' shapes; the
                             token embeddings are made a leaf, so only activations get gradients

  kv1.prompt_ids, kv1.token  the prompt split as mechlens' prompt state splits it: prefill
                             ids[:m-1] (transformers' DynamicCache), the pending token ids[m-1] fed
                             on that cache; metric log p(token) at its logits (token = ids[m])
  kv1.metric, kv1.keys.{L}, kv1.values.{L}
                             the metric and d metric / d cached key (after rotary) and value,
                             [1, kv_heads, slots, d_head] per layer (slots: what transformers' cache
                             holds — a sliding-window layer keeps only its last window - 1 tokens,
                             which mechlens must match on the right; the rest must get zero)
  kvc.*                      the same with a teacher-forced continuation ids[m:m+3] after the
                             pending token (kvc.continuation), metric the sum of their log p

Checks itself: retained gradients exist for every hook point, and the rotary tap saw every
layer. Needs torch, transformers (5.x), safetensors.

    python3 tests/reference/make_gradient_references.py tests/data/models llama_gqa_llama3 llama_tied mistral_swa qwen2_bias
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_reference as ref  # noqa: E402


class GradRecorder:
    """Forward hooks that keep each hook point's tensor in the graph (retain_grad) and how to turn
    its gradient into mechlens' shape."""

    active = None

    def __init__(self, model):
        self.model = model
        cfg = model.config
        self.H = cfg.num_attention_heads
        self.KV = cfg.num_key_value_heads
        self.dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.kept = {}
        self.handles = []
        self.cur_layer = None
        self.rot_calls = 0
        self._install()

    def keep(self, name, t, shape=lambda g: g):
        if name in self.kept:
            raise RuntimeError(f"hook {name} fired twice in one forward")
        if not t.requires_grad:
            raise RuntimeError(f"{name}: the activation carries no gradient")
        t.retain_grad()
        self.kept[name] = (t, shape)

    def heads(self, h):
        return lambda g: g.reshape(g.shape[0], g.shape[1], h, self.dh)

    def _install(self):
        m = self.model.model
        hs = self.handles

        def embed_leaf(mod, a, o):
            leaf = o.detach().requires_grad_(True)
            self.keep("hook_embed", leaf)
            return leaf

        hs.append(m.embed_tokens.register_forward_hook(embed_leaf))
        for L, layer in enumerate(m.layers):
            p = f"blocks.{L}."

            def resid_pre(mod, args, kwargs, p=p):
                self.keep(p + "hook_resid_pre", args[0] if args else kwargs["hidden_states"])

            def resid_post(mod, args, out, p=p):
                self.keep(p + "hook_resid_post", out[0] if isinstance(out, tuple) else out)

            def attn_pre(mod, args, kwargs, L=L):
                self.cur_layer = L

            def attn_post(mod, args, out, p=p):
                w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
                if w is None:
                    raise RuntimeError("attention weights not returned: is attn_implementation eager?")
                self.keep(p + "attn.hook_pattern", w)

            sa, mlp = layer.self_attn, layer.mlp
            hs.append(layer.register_forward_pre_hook(resid_pre, with_kwargs=True))
            hs.append(layer.register_forward_hook(resid_post))
            hs.append(layer.input_layernorm.register_forward_hook(
                lambda mod, a, o, p=p: self.keep(p + "ln1.hook_normalized", o)))
            hs.append(sa.register_forward_pre_hook(attn_pre, with_kwargs=True))
            hs.append(sa.register_forward_hook(attn_post))
            hs.append(sa.q_proj.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "attn.hook_q", o, self.heads(self.H))))
            hs.append(sa.k_proj.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "attn.hook_k", o, self.heads(self.KV))))
            hs.append(sa.v_proj.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "attn.hook_v", o, self.heads(self.KV))))
            hs.append(sa.o_proj.register_forward_pre_hook(lambda mod, a, p=p: self.keep(p + "attn.hook_z", a[0], self.heads(self.H))))
            hs.append(sa.o_proj.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "hook_attn_out", o)))
            hs.append(layer.post_attention_layernorm.register_forward_pre_hook(
                lambda mod, a, p=p: self.keep(p + "hook_resid_mid", a[0])))
            hs.append(layer.post_attention_layernorm.register_forward_hook(
                lambda mod, a, o, p=p: self.keep(p + "ln2.hook_normalized", o)))
            hs.append(mlp.gate_proj.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "mlp.hook_pre", o)))
            hs.append(mlp.up_proj.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "mlp.hook_pre_linear", o)))
            hs.append(mlp.down_proj.register_forward_pre_hook(lambda mod, a, p=p: self.keep(p + "mlp.hook_post", a[0])))
            hs.append(mlp.register_forward_hook(lambda mod, a, o, p=p: self.keep(p + "hook_mlp_out", o)))
        hs.append(m.norm.register_forward_hook(lambda mod, a, o: self.keep("ln_final.hook_normalized", o)))

    def rotary(self, q_embed, k_embed):
        p = f"blocks.{self.cur_layer}.attn."
        if p + "hook_rot_q" in self.kept:
            return
        self.keep(p + "hook_rot_q", q_embed, lambda g: g.transpose(1, 2))
        self.keep(p + "hook_rot_k", k_embed, lambda g: g.transpose(1, 2))
        self.rot_calls += 1

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def tapped_rotary(fn):
    def wrapped(q, k, cos, sin, *args, **kwargs):
        q_embed, k_embed = fn(q, k, cos, sin, *args, **kwargs)
        if GradRecorder.active is not None:
            GradRecorder.active.rotary(q_embed, k_embed)
        return q_embed, k_embed
    return wrapped


def f32(t):
    return t.detach().to(torch.float32).clone().contiguous()


def hook_gradients(model, ids):
    """d (teacher-forced log-likelihood of the prompt) / d every hook point's activation."""
    rec = GradRecorder(model)
    GradRecorder.active = rec
    scores = []
    softmax = F.softmax

    def tap(x, *args, **kwargs):
        if x.dim() == 4 and x.size(1) == rec.H:
            x.retain_grad()
            scores.append(x)
        return softmax(x, *args, **kwargs)

    F.softmax = tap
    try:
        out = model(input_ids=torch.tensor([ids]), use_cache=False, output_attentions=True)
    finally:
        F.softmax = softmax
        GradRecorder.active = None
        rec.remove()
    n_layers = model.config.num_hidden_layers
    ref.check(rec.rot_calls == n_layers, f"rotary tap saw {rec.rot_calls} layers of {n_layers}")
    ref.check(len(scores) == n_layers, f"one softmax input per layer ({len(scores)})")
    logits = out.logits.float()
    target = torch.tensor([ids[1:]])
    metric = torch.log_softmax(logits[:, :-1], -1).gather(2, target.unsqueeze(2)).sum()
    metric.backward()
    res = {"hooks.input_ids": torch.tensor([ids], dtype=torch.int64), "hooks.metric": f32(metric.reshape(1))}
    for name, (t, shape) in rec.kept.items():
        ref.check(t.grad is not None, f"{name}: a gradient was retained")
        res["hooks." + name] = f32(shape(t.grad))
    lowest = torch.finfo(torch.float32).min
    for L, s in enumerate(scores):
        ref.check(s.grad is not None, f"layer {L}: attention scores' gradient retained")
        res[f"hooks.blocks.{L}.attn.hook_attn_scores"] = f32(s.grad)
    return res


def kv_gradients(model, ids, m, continuation, tag):
    """d metric / d the cached keys and values of prompt ids[:m] (prefilled ids[:m-1])."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[: m - 1]]), use_cache=True)
    past = out.past_key_values
    leaves = []
    for layer in past.layers:
        k = layer.keys.detach().clone().requires_grad_(True)
        v = layer.values.detach().clone().requires_grad_(True)
        layer.keys, layer.values = k, v
        leaves.append((k, v))
    fed = [ids[m - 1]] + continuation
    n_done = m - 1
    pos = torch.arange(n_done, n_done + len(fed)).unsqueeze(0)
    out2 = model(input_ids=torch.tensor([fed]), past_key_values=past, use_cache=True, position_ids=pos,
                 cache_position=pos[0])
    logits = out2.logits.float()
    if continuation:
        tgt = torch.tensor([continuation])
        metric = torch.log_softmax(logits[:, :-1], -1).gather(2, tgt.unsqueeze(2)).sum()
    else:
        metric = torch.log_softmax(logits[0, -1], -1)[ids[m]]
    metric.backward()
    res = {f"{tag}.prompt_ids": torch.tensor([ids[:m]], dtype=torch.int64), f"{tag}.metric": f32(metric.reshape(1))}
    if continuation:
        res[f"{tag}.continuation"] = torch.tensor([continuation], dtype=torch.int64)
    else:
        res[f"{tag}.token"] = torch.tensor([ids[m]], dtype=torch.int64)
    for L, (k, v) in enumerate(leaves):
        ref.check(k.grad is not None and v.grad is not None, f"{tag} layer {L}: cache gradients exist")
        res[f"{tag}.keys.{L}"] = f32(k.grad)
        res[f"{tag}.values.{L}"] = f32(v.grad)
    return res, [k.shape[2] for k, _ in leaves]


def run(models_dir, name):
    spec = next(s for s in ref.SPECS if s["name"] == name)
    path = os.path.join(models_dir, name)
    model = ref.model_class(spec).from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mod = ref.modeling_module(spec)
    mod.apply_rotary_pos_emb = tapped_rotary(mod.apply_rotary_pos_emb)
    ids = [int(x) for x in load_file(os.path.join(path, "reference.safetensors"))["p2.input_ids"][0].tolist()]
    n = len(ids)
    res = hook_gradients(model, ids)
    m = n - 4
    kv1, slots1 = kv_gradients(model, ids, m, [], "kv1")
    kvc, slotsc = kv_gradients(model, ids, m, ids[m:m + 3], "kvc")
    res.update(kv1)
    res.update(kvc)
    save_file(res, os.path.join(path, "gradients.safetensors"))
    hooks = sum(1 for k in res if k.startswith("hooks.blocks") or k in ("hooks.hook_embed", "hooks.ln_final.hook_normalized"))
    print(f"{name}: prompt of {n} tokens, {hooks} hook gradients, metric {res['hooks.metric'].item():.6f}; "
          f"KV: prefill {m - 1} tokens, cache slots per layer {slots1}, metrics {res['kv1.metric'].item():.6f} / "
          f"{res['kvc.metric'].item():.6f}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(f"torch {torch.__version__}, transformers {ref.transformers.__version__}")
    torch.set_num_threads(4)
    for name in sys.argv[2:]:
        run(sys.argv[1], name)
    sys.exit(1 if ref.FAILURES else 0)


if __name__ == "__main__":
    main()
