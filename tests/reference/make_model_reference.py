#!/usr/bin/env python3
"""Build small random-weight Hugging Face checkpoints and their reference numbers.

The files this writes are what mechlens' model, intervention and generation tests compare
against (issues 3, 4 and 5): three tiny checkpoints in the normal Hugging Face layout, and for
each of them every hook point's activation, the logits, R_V numbers, activation patches,
greedy / KV-splice / KV-prefix generations and a left-padded batch, all computed with
transformers itself (hooks on its modules, no re-implementation).

Usage (needs torch, transformers >= 5, safetensors, numpy):

    python3 tests/reference/make_model_reference.py tests/data/models
    python3 tests/reference/make_model_reference.py --pack $OUT      # one <name>.tar per model

Everything runs in float32 on the CPU and is deterministic (one torch seed per model).
The script checks itself (consistency of the hooks, the llama3 rope bands, the sliding-window
boundary, manual greedy == model.generate, padded batch == rows one by one, ...) and exits
non-zero if a check fails, after writing what it could.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tarfile
import traceback

import numpy as np
import torch

import transformers
from transformers import AutoConfig, GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers import MistralConfig, MistralForCausalLM
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from safetensors.torch import save_file, load_file

VOCAB = 256
BOS, EOS, PAD = 1, 2, 0
FIRST_ID = 3  # prompts draw ids from [3, 256): no pad / bos / eos inside prompts
PROMPT_LENGTHS = [5, 13, 24]
GREEDY_NEW = 10
SPLICE_NEW = 8
PREFIX_NEW = 8
RV_WINDOW = 16

SUMMARY = []
FAILURES = []


def log(msg=""):
    print(msg, flush=True)
    SUMMARY.append(msg)


def check(ok, what):
    if ok:
        log(f"  ok: {what}")
    else:
        log(f"  FAIL: {what}")
        FAILURES.append(what)
    return ok


def soft(fn, what):
    """Run an API-dependent check; a crash is a recorded failure, not the end of the run."""
    try:
        return fn()
    except Exception:  # noqa: BLE001
        log(f"  FAIL (exception) in {what}:\n{traceback.format_exc()}")
        FAILURES.append(what)
        return None


# --------------------------------------------------------------------------------------------
# model specifications
# --------------------------------------------------------------------------------------------

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

SPECS = [
    {
        "name": "llama_gqa_llama3",
        "seed": 1001,
        "family": "llama",
        "config": dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
            max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters=dict(LLAMA3_ROPE),
        ),
        "save_dtype": torch.bfloat16,
        "max_shard_size": "150KB",
        "classic_rope": True,
        "interventions": True,
        "splice": True,
        "batch": True,
    },
    {
        "name": "llama_tied",
        "seed": 1002,
        "family": "llama",
        "config": dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5,
            max_position_embeddings=512, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        # Tied: the logits are the final hidden state against the embeddings, so with embeddings
        # of std 1 every token predicts itself and greedy decoding repeats one token.  Smaller
        # embeddings and wider blocks make the blocks, not the current token, decide.
        "init": {"embed": 0.2, "lm_head": 0.2, "linear": 0.15},
        "drop_head_dim": True,  # config.json without head_dim: readers must derive it (64 / 4)
        "save_dtype": torch.float32,
        "max_shard_size": None,
        "classic_rope": False,
        "interventions": False,
        "splice": True,
        "batch": False,
    },
    {
        "name": "mistral_swa",
        "seed": 1003,
        "family": "mistral",
        "config": dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-5,
            max_position_embeddings=512, tie_word_embeddings=False, sliding_window=8,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "save_dtype": torch.float32,
        "max_shard_size": None,
        "classic_rope": False,
        "interventions": True,
        "splice": False,
        "batch": False,
    },
    {
        # qwen2: q/k/v projections with a bias (o_proj without), full attention in every layer
        # (use_sliding_window false, as Qwen2 / Qwen2.5 ship). mechlens refuses a qwen2 config
        # with use_sliding_window true (per-layer windows from max_window_layers).
        "name": "qwen2_bias",
        "seed": 1004,
        "family": "qwen2",
        "config": dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=512, tie_word_embeddings=False, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        "save_dtype": torch.float32,
        "max_shard_size": None,
        "classic_rope": False,
        "interventions": False,
        "splice": True,
        "batch": False,
    },
]


def make_config(spec):
    kw = dict(spec["config"])
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[spec["family"]]
    try:
        return cls(**kw)
    except TypeError:
        # older spelling: rope_theta + rope_scaling
        rp = kw.pop("rope_parameters")
        kw["rope_theta"] = rp["rope_theta"]
        if rp["rope_type"] != "default":
            kw["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
        return cls(**kw)


def model_class(spec):
    return {"llama": LlamaForCausalLM, "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM}[spec["family"]]


def modeling_module(spec):
    return {"llama": modeling_llama, "mistral": modeling_mistral, "qwen2": modeling_qwen2}[spec["family"]]


DEFAULT_INIT = {"embed": 1.0, "lm_head": 0.2, "linear": 0.1}


@torch.no_grad()
def init_wide(model, init):
    """Weights wider than the default initialiser so logits are not flat.

    RMSNorm weights 1 + 0.1 N(0,1); projection biases N(0, 0.1^2); token embeddings N(0, embed^2); lm_head N(0, lm_head^2)
    (when not tied); every other linear weight N(0, linear^2).  Uses the global torch
    generator (seeded).
    """
    for name, p in model.named_parameters():
        if name.endswith(".bias"):  # qwen2's q/k/v biases
            p.normal_(0.0, 0.1)
        elif p.dim() == 1:
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif "embed_tokens" in name:
            p.normal_(0.0, init["embed"])
        elif name.startswith("lm_head"):
            p.normal_(0.0, init["lm_head"])
        else:
            p.normal_(0.0, init["linear"])


def rand_ids(gen, n):
    return torch.randint(FIRST_ID, VOCAB, (n,), generator=gen).tolist()


# --------------------------------------------------------------------------------------------
# hook recording
# --------------------------------------------------------------------------------------------

class Recorder:
    """Forward hooks / pre-hooks on the HF modules, named with mechlens' (TransformerLens) names."""

    active = None  # the recorder the rotary wrapper writes into

    def __init__(self, model):
        self.model = model
        cfg = model.config
        self.H = cfg.num_attention_heads
        self.KV = cfg.num_key_value_heads
        self.dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.store = {}
        self.handles = []
        self.cur_layer = None
        self.rot_calls = 0
        self._install()

    def put(self, name, t):
        if name in self.store:
            raise RuntimeError(f"hook {name} fired twice in one forward")
        self.store[name] = t.detach().to(torch.float32).clone().contiguous()

    def _heads(self, t, h):
        b, n, _ = t.shape
        return t.reshape(b, n, h, self.dh)

    def _install(self):
        m = self.model.model
        hs = self.handles
        hs.append(m.embed_tokens.register_forward_hook(lambda mod, a, o: self.put("hook_embed", o)))
        for L, layer in enumerate(m.layers):
            p = f"blocks.{L}."

            def resid_pre(mod, args, kwargs, p=p):
                x = args[0] if args else kwargs["hidden_states"]
                self.put(p + "hook_resid_pre", x)

            def resid_post(mod, args, out, p=p):
                self.put(p + "hook_resid_post", out[0] if isinstance(out, tuple) else out)

            def attn_pre(mod, args, kwargs, L=L):
                self.cur_layer = L

            def attn_post(mod, args, out, p=p):
                w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
                if w is None:
                    raise RuntimeError("attention weights not returned: is attn_implementation eager?")
                self.put(p + "attn.hook_pattern", w)

            def o_pre(mod, args, p=p):
                self.put(p + "attn.hook_z", self._heads(args[0], self.H))

            def mid_pre(mod, args, p=p):
                self.put(p + "hook_resid_mid", args[0])

            sa = layer.self_attn
            hs.append(layer.register_forward_pre_hook(resid_pre, with_kwargs=True))
            hs.append(layer.register_forward_hook(resid_post))
            hs.append(layer.input_layernorm.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "ln1.hook_normalized", o)))
            hs.append(sa.register_forward_pre_hook(attn_pre, with_kwargs=True))
            hs.append(sa.register_forward_hook(attn_post))
            hs.append(sa.q_proj.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "attn.hook_q", self._heads(o, self.H))))
            hs.append(sa.k_proj.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "attn.hook_k", self._heads(o, self.KV))))
            hs.append(sa.v_proj.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "attn.hook_v", self._heads(o, self.KV))))
            hs.append(sa.o_proj.register_forward_pre_hook(o_pre))
            hs.append(sa.o_proj.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "hook_attn_out", o)))
            hs.append(layer.post_attention_layernorm.register_forward_pre_hook(mid_pre))
            hs.append(layer.post_attention_layernorm.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "ln2.hook_normalized", o)))
            hs.append(layer.mlp.register_forward_hook(
                lambda mod, a, o, p=p: self.put(p + "hook_mlp_out", o)))
        hs.append(m.norm.register_forward_hook(
            lambda mod, a, o: self.put("ln_final.hook_normalized", o)))

    def rotary(self, q_embed, k_embed):
        # q_embed, k_embed: [b, heads, n, dh] -> [b, n, heads, dh]; first call per layer wins
        p = f"blocks.{self.cur_layer}.attn."
        if p + "hook_rot_q" in self.store:
            return
        self.put(p + "hook_rot_q", q_embed.transpose(1, 2))
        self.put(p + "hook_rot_k", k_embed.transpose(1, 2))
        self.rot_calls += 1

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def recording(fn):
    """apply_rotary_pos_emb with a tap: the rotated q and k go to the active Recorder."""
    if getattr(fn, "_mechlens_wrapped", False):
        return fn

    def wrapped(q, k, cos, sin, *args, **kwargs):
        q_embed, k_embed = fn(q, k, cos, sin, *args, **kwargs)
        if Recorder.active is not None:
            Recorder.active.rotary(q_embed, k_embed)
        return q_embed, k_embed

    wrapped._mechlens_wrapped = True
    return wrapped


class RecordingRotary(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.fn = recording(lambda *a, **k: inner(*a, **k))

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def install_rotary_wrapper(module):
    """Wrap the modeling module's apply_rotary_pos_emb (the attention looks it up as a global)."""
    module.apply_rotary_pos_emb = recording(module.apply_rotary_pos_emb)


def install_instance_rotary_wrappers(model):
    """In case the attention calls a per-instance rotary function (kernel hub registration)."""
    for layer in model.model.layers:
        sa = layer.self_attn
        hidden = sa.__dict__.get("_hidden_kernels")
        if isinstance(hidden, dict):
            for name, fn in list(hidden.items()):
                if "rotary" in name and callable(fn) and not isinstance(fn, torch.nn.Module):
                    hidden[name] = recording(fn)
        if "rotary_fn" in sa._modules and not isinstance(sa._modules["rotary_fn"], RecordingRotary):
            sa._modules["rotary_fn"] = RecordingRotary(sa._modules["rotary_fn"])
        elif "rotary_fn" in sa.__dict__ and callable(sa.__dict__["rotary_fn"]):
            sa.__dict__["rotary_fn"] = recording(sa.__dict__["rotary_fn"])


@torch.no_grad()
def run_with_hooks(model, ids):
    rec = Recorder(model)
    Recorder.active = rec
    try:
        out = model(input_ids=torch.tensor([ids]), use_cache=False, output_attentions=True)
    finally:
        Recorder.active = None
        rec.remove()
    n_layers = model.config.num_hidden_layers
    if rec.rot_calls != n_layers:
        raise RuntimeError(f"rotary wrapper saw {rec.rot_calls} calls, expected {n_layers}: "
                           "transformers no longer calls the module-level apply_rotary_pos_emb")
    return out, rec.store


# --------------------------------------------------------------------------------------------
# building and saving the checkpoints
# --------------------------------------------------------------------------------------------

def llama3_inv_freq(head_dim, rp):
    """Independent float64 computation of llama3-scaled inverse frequencies, with band labels."""
    base = rp["rope_theta"]
    inv = [1.0 / (base ** (2 * i / head_dim)) for i in range(head_dim // 2)]
    if rp.get("rope_type", "default") != "llama3":
        return inv, ["unscaled"] * len(inv), inv
    factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    orig = rp["original_max_position_embeddings"]
    low_wl, high_wl = orig / lo, orig / hi
    out, bands = [], []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
            bands.append("high (kept)")
        elif wl > low_wl:
            out.append(f / factor)
            bands.append("low (divided by factor)")
        else:
            s = (orig / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
            bands.append("medium (smoothed)")
    return out, bands, inv


def build_and_save(spec, path):
    torch.manual_seed(spec["seed"])
    cfg = make_config(spec)
    model = model_class(spec)(cfg)
    if cfg.tie_word_embeddings:
        model.tie_weights()
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            raise RuntimeError("tie_word_embeddings is set but lm_head is not tied after tie_weights()")
    init_wide(model, spec.get("init", DEFAULT_INIT))
    model.eval()
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    saved = model.to(spec["save_dtype"])
    kw = {}
    if spec["max_shard_size"]:
        kw["max_shard_size"] = spec["max_shard_size"]
    saved.save_pretrained(path, **kw)
    GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD).save_pretrained(path)

    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cj = json.load(f)
    if spec["classic_rope"]:
        rp = cj.pop("rope_parameters", None) or dict(LLAMA3_ROPE)
        cj.pop("rope_scaling", None)
        cj["rope_theta"] = float(rp.get("rope_theta", LLAMA3_ROPE["rope_theta"]))
        cj["rope_scaling"] = {
            "factor": float(LLAMA3_ROPE["factor"]),
            "low_freq_factor": float(LLAMA3_ROPE["low_freq_factor"]),
            "high_freq_factor": float(LLAMA3_ROPE["high_freq_factor"]),
            "original_max_position_embeddings": int(LLAMA3_ROPE["original_max_position_embeddings"]),
            "rope_type": "llama3",
        }
        with open(cfg_path, "w") as f:
            json.dump(cj, f, indent=2, sort_keys=True)
            f.write("\n")
    if spec.get("drop_head_dim"):
        with open(cfg_path) as f:
            cj = json.load(f)
        cj.pop("head_dim", None)
        with open(cfg_path, "w") as f:
            json.dump(cj, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(cfg_path) as f:
        cj = json.load(f)
    if spec.get("drop_head_dim"):
        check("head_dim" not in cj, "config.json has no head_dim (derived: hidden_size / heads)")
    rope_keys = {k: cj[k] for k in ("rope_theta", "rope_scaling", "rope_parameters") if k in cj}
    log(f"  config.json rope fields: {json.dumps(rope_keys)}")
    if spec["classic_rope"]:
        check("rope_parameters" not in cj and "rope_scaling" in cj and "rope_theta" in cj,
              "config.json is in the classic form (rope_theta + rope_scaling)")
    else:
        check("rope_parameters" in cj, "config.json is in the new form (rope_parameters)")
    # keep the in-memory (rounded) weights to compare with what loads back
    return {k: v.detach().to(torch.float32).clone() for k, v in saved.state_dict().items()}


def load_reference_model(spec, path):
    model = model_class(spec).from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    impl = getattr(model.config, "_attn_implementation", None)
    check(impl == "eager", f"reloaded with eager attention (got {impl})")
    return model


def describe_files(path):
    files = sorted(os.listdir(path))
    log(f"  files: {files}")
    shards = [f for f in files if f.endswith(".safetensors") and f != "reference.safetensors"
              and f != "interventions.safetensors"]
    keys = []
    for s in shards:
        keys += list(load_file(os.path.join(path, s)).keys())
    return files, shards, keys


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------

def participation_ratio(x):
    s = np.linalg.svd(x, compute_uv=False)
    s2 = s ** 2
    return float(s2.sum() ** 2 / (s2 ** 2).sum())


@torch.no_grad()
def forward_references(spec, model, prompts, tensors):
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    d = cfg.hidden_size
    stores = []
    for i, ids in enumerate(prompts):
        n = len(ids)
        out, st = run_with_hooks(model, ids)
        logits = out.logits.to(torch.float32)
        tensors[f"p{i}.input_ids"] = torch.tensor([ids], dtype=torch.int64)
        tensors[f"p{i}.logits"] = logits.contiguous()
        for k, v in st.items():
            tensors[f"p{i}.{k}"] = v
        stores.append(st)
        # shapes
        expect = {"hook_embed": (1, n, d), "ln_final.hook_normalized": (1, n, d)}
        for L in range(n_layers):
            p = f"blocks.{L}."
            for k in ("hook_resid_pre", "ln1.hook_normalized", "hook_attn_out", "hook_resid_mid",
                      "ln2.hook_normalized", "hook_mlp_out", "hook_resid_post"):
                expect[p + k] = (1, n, d)
            expect[p + "attn.hook_q"] = (1, n, H, dh)
            expect[p + "attn.hook_rot_q"] = (1, n, H, dh)
            expect[p + "attn.hook_z"] = (1, n, H, dh)
            for k in ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k"):
                expect[p + k] = (1, n, KV, dh)
            expect[p + "attn.hook_pattern"] = (1, H, n, n)
        bad = [k for k, s in expect.items() if k not in st or tuple(st[k].shape) != s]
        extra = [k for k in st if k not in expect]
        check(not bad and not extra, f"p{i} (n={n}): {len(st)} hook tensors with the documented shapes"
              + (f" missing/bad {bad[:5]}" if bad else "") + (f" extra {extra[:5]}" if extra else ""))
        # consistency
        errs = []
        errs.append(("resid_pre[0] == embed", (st["blocks.0.hook_resid_pre"] - st["hook_embed"]).abs().max()))
        for L in range(n_layers):
            p = f"blocks.{L}."
            errs.append((f"L{L} resid_mid == resid_pre + attn_out",
                         (st[p + "hook_resid_mid"] - st[p + "hook_resid_pre"] - st[p + "hook_attn_out"]).abs().max()))
            errs.append((f"L{L} resid_post == resid_mid + mlp_out",
                         (st[p + "hook_resid_post"] - st[p + "hook_resid_mid"] - st[p + "hook_mlp_out"]).abs().max()))
            if L + 1 < n_layers:
                errs.append((f"L{L} resid_post == resid_pre[L+1]",
                             (st[p + "hook_resid_post"] - st[f"blocks.{L + 1}.hook_resid_pre"]).abs().max()))
            errs.append((f"L{L} pattern rows sum to 1",
                         (st[p + "attn.hook_pattern"].sum(-1) - 1).abs().max()))
            errs.append((f"L{L} attn_out == o_proj(z)",
                         (model.model.layers[L].self_attn.o_proj(st[p + "attn.hook_z"].reshape(1, n, H * dh))
                          - st[p + "hook_attn_out"]).abs().max()))
            errs.append((f"L{L} rot_q at position 0 == q (no rotation at 0)",
                         (st[p + "attn.hook_rot_q"][:, 0] - st[p + "attn.hook_q"][:, 0]).abs().max()))
        errs.append(("logits == lm_head(ln_final)",
                     (model.lm_head(st["ln_final.hook_normalized"]) - logits).abs().max()))
        worst = max(errs, key=lambda e: float(e[1]))
        check(all(float(e) <= 1e-5 for _, e in errs),
              f"p{i} consistency checks ({len(errs)}), worst {worst[0]}: {float(worst[1]):.2e}")
        att = getattr(out, "attentions", None)
        if att is not None and len(att) == n_layers:
            diff = max(float((att[L] - st[f"blocks.{L}.attn.hook_pattern"]).abs().max()) for L in range(n_layers))
            check(diff == 0.0, f"p{i} outputs.attentions == hooked pattern (max diff {diff:.1e})")
        std = float(logits[0].std(dim=-1).mean())
        log(f"  p{i}: n={n} logits std across vocab (mean over positions) {std:.3f}")
        check(std >= 1.0, f"p{i} logits std {std:.3f} >= 1")
    return stores


def sliding_window_check(model, store, n):
    W = model.config.sliding_window
    ok = True
    for L in range(model.config.num_hidden_layers):
        pat = store[f"blocks.{L}.attn.hook_pattern"][0]  # [H, n, n]
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        visible = (i - j >= 0) & (i - j < W)
        ok &= bool((pat[:, ~visible] == 0).all()) and bool((pat[:, visible] > 0).all())
    check(ok, f"sliding window {W}: query i sees key j iff 0 <= i - j < {W} "
              f"({W} keys including itself), checked on the eager pattern, n={n}")


def rv_numbers(model, store):
    n_layers = model.config.num_hidden_layers
    pr, prc = {}, {}
    for L in range(n_layers):
        v = store[f"blocks.{L}.attn.hook_v"][0]  # [n, KV, dh]
        x = v[-RV_WINDOW:].reshape(RV_WINDOW, -1).double().numpy()
        pr[str(L)] = participation_ratio(x)
        prc[str(L)] = participation_ratio(x - x.mean(axis=0, keepdims=True))
    early, late = 1, min(3, n_layers - 1)
    rv = {
        "window": RV_WINDOW,
        "prompt": "p2",
        "rows": "last 16 positions of blocks.L.attn.hook_v, all KV heads concatenated: [16, KV*d_head]",
        "pr": pr,
        "pr_centered": prc,
        "rv": {"early": early, "late": late, "value": pr[str(late)] / pr[str(early)],
               "value_centered": prc[str(late)] / prc[str(early)]},
    }
    log(f"  R_V (p2, W=16): PR {', '.join(f'{k}:{v:.3f}' for k, v in pr.items())}; "
        f"R_V(late {late}/early {early}) = {rv['rv']['value']:.4f} (centred {rv['rv']['value_centered']:.4f})")
    return rv


# --------------------------------------------------------------------------------------------
# interventions (issue 4)
# --------------------------------------------------------------------------------------------

INTERVENTION_SITES = ["q_proj", "k_proj", "v_proj", "layer", "head_z"]
INTERVENTION_POSITIONS = {"all": list(range(12)), "last4": [8, 9, 10, 11], "one": [5]}
INTERVENTION_LAYERS = [0, 2, 3]
SITE_HOOK = {
    "q_proj": "blocks.{L}.attn.hook_q",
    "k_proj": "blocks.{L}.attn.hook_k",
    "v_proj": "blocks.{L}.attn.hook_v",
    "layer": "blocks.{L}.hook_resid_post",
    "head_z": "blocks.{L}.attn.hook_z",
}
SITE_MODULE = {
    "q_proj": "model.layers.{L}.self_attn.q_proj (output)",
    "k_proj": "model.layers.{L}.self_attn.k_proj (output, before rotary)",
    "v_proj": "model.layers.{L}.self_attn.v_proj (output)",
    "layer": "model.layers.{L} (decoder layer output hidden state)",
    "head_z": "model.layers.{L}.self_attn.o_proj (input), columns [d_head*head, d_head*(head+1))",
}


@torch.no_grad()
def interventions(spec, model, gen):
    n = 12
    cfg = model.config
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    head = 1
    target = rand_ids(gen, n)
    source = rand_ids(gen, n)
    layers = model.model.layers

    def site_module(site, L):
        sa = layers[L].self_attn
        return {"q_proj": sa.q_proj, "k_proj": sa.k_proj, "v_proj": sa.v_proj,
                "layer": layers[L], "head_z": sa.o_proj}[site]

    # capture every site of the source
    cap = {}
    handles = []
    for L in INTERVENTION_LAYERS:
        for site in INTERVENTION_SITES:
            mod = site_module(site, L)
            if site == "head_z":
                handles.append(mod.register_forward_pre_hook(
                    lambda m, a, key=(site, L): cap.__setitem__(key, a[0].detach().clone())))
            else:
                handles.append(mod.register_forward_hook(
                    lambda m, a, o, key=(site, L): cap.__setitem__(
                        key, (o[0] if isinstance(o, tuple) else o).detach().clone())))
    src_logits = model(input_ids=torch.tensor([source]), use_cache=False).logits.float()
    for h in handles:
        h.remove()
    tgt_logits = model(input_ids=torch.tensor([target]), use_cache=False).logits.float()

    tensors = {
        "target_ids": torch.tensor([target], dtype=torch.int64),
        "source_ids": torch.tensor([source], dtype=torch.int64),
        "target_logits": tgt_logits.contiguous(),
        "source_logits": src_logits.contiguous(),
    }
    cases = []
    k = 0
    min_change = float("inf")
    for site in INTERVENTION_SITES:
        for pname, pos in INTERVENTION_POSITIONS.items():
            for L in INTERVENTION_LAYERS:
                src = cap[(site, L)]
                mod = site_module(site, L)
                idx = torch.tensor(pos)
                if site == "head_z":
                    def pre(m, a, src=src, idx=idx):
                        x = a[0].clone()
                        x[:, idx, dh * head:dh * (head + 1)] = src[:, idx, dh * head:dh * (head + 1)]
                        return (x,) + tuple(a[1:])
                    h = mod.register_forward_pre_hook(pre)
                else:
                    def post(m, a, o, src=src, idx=idx):
                        t = o[0] if isinstance(o, tuple) else o
                        t = t.clone()
                        t[:, idx] = src[:, idx]
                        return (t,) + tuple(o[1:]) if isinstance(o, tuple) else t
                    h = mod.register_forward_hook(post)
                try:
                    lg = model(input_ids=torch.tensor([target]), use_cache=False).logits.float()
                finally:
                    h.remove()
                key = f"case{k}.logits"
                tensors[key] = lg.contiguous()
                change = float((lg - tgt_logits).abs().max())
                min_change = min(min_change, change)
                cases.append({
                    "site": site,
                    "positions": pos,
                    "positions_name": pname,
                    "layer": L,
                    "head": head if site == "head_z" else None,
                    "columns": [dh * head, dh * (head + 1)] if site == "head_z" else None,
                    "hook": SITE_HOOK[site].format(L=L),
                    "module": SITE_MODULE[site].format(L=L),
                    "key": key,
                    "max_abs_change_vs_target": change,
                })
                if site == "layer" and pname == "all":
                    check(float((lg - src_logits).abs().max()) <= 1e-5,
                          f"patching layer {L}'s output at all positions gives the source's logits")
                k += 1
    log(f"  interventions: {k} cases; smallest max|change| vs target logits {min_change:.3e}")
    check(min_change > 1e-4, "every intervention case changes the target's logits")
    meta = {
        "seq_len": n,
        "target_ids": target,
        "source_ids": source,
        "d_head": dh,
        "logits_shape": [1, n, VOCAB],
        "semantics": "run the source, capture the module output (or o_proj input for head_z), run the "
                     "target with that tensor replaced at the listed positions (all heads, or head 1's "
                     "columns for head_z); key holds the target's logits [1, 12, vocab]",
        "sites": {s: {"hook": SITE_HOOK[s], "module": SITE_MODULE[s]} for s in INTERVENTION_SITES},
        "cases": cases,
    }
    return tensors, meta


# --------------------------------------------------------------------------------------------
# generation (issue 5)
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def feed(model, cache, ids, start):
    out = model(input_ids=torch.tensor([ids]), past_key_values=cache,
                position_ids=torch.arange(start, start + len(ids))[None], use_cache=True)
    return out.past_key_values if out.past_key_values is not None else cache


@torch.no_grad()
def prefill(model, ids):
    """Prompt state: every token but the last in the cache; the last is pending."""
    cache = DynamicCache()
    cache = feed(model, cache, ids[:-1], 0)
    return cache, ids[-1], len(ids) - 1


@torch.no_grad()
def decode(model, cache, pending, pos, n_new):
    new, margins = [], []
    tok = pending
    for _ in range(n_new):
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=cache,
                    position_ids=torch.tensor([[pos]]), use_cache=True)
        if out.past_key_values is not None:
            cache = out.past_key_values
        top = torch.topk(out.logits[0, -1].float(), 2)
        tok = int(top.indices[0])
        new.append(tok)
        margins.append(float(top.values[0] - top.values[1]))
        pos += 1
    return new, margins


def greedy(model, ids, n_new):
    cache, pending, pos = prefill(model, ids)
    return decode(model, cache, pending, pos, n_new)


def cache_len(cache, layer=0):
    return int(cache.layers[layer].keys.shape[-2])


@torch.no_grad()
def hf_generate(model, ids, n_new):
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n_new,
                         do_sample=False)
    return out[0, len(ids):].tolist()


def truncate_at_eos(ids):
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


@torch.no_grad()
def generation(spec, model, prompts, gen, batch_rows=None):
    n_layers = model.config.num_hidden_layers
    res = {
        "eos_token_id": EOS,
        "notes": [
            "Greedy, float32, fixed number of new tokens: decoding does NOT stop at eos.",
            "Prompt state: prefill runs every prompt token but the last (positions 0..len-2); the last "
            "token is pending and is fed first, at position len-1.",
            "margins[k] = top-1 minus top-2 logit at the step that produced new_ids[k]; compare a "
            "token only where every margin up to it is above 1e-3.",
        ],
        "greedy": [],
    }
    worst_margin = float("inf")
    for i, ids in enumerate(prompts):
        new, margins = greedy(model, ids, GREEDY_NEW)
        worst_margin = min(worst_margin, min(margins))
        entry = {"prompt": f"p{i}", "prompt_ids": ids, "new_ids": new, "margins": margins}

        def cmp(ids=ids, new=new, entry=entry):
            g = hf_generate(model, ids, GREEDY_NEW)
            same = g == truncate_at_eos(new)
            entry["matches_hf_generate"] = same
            return check(same, f"greedy p{i} (len {len(ids)}) manual loop == model.generate "
                               f"{new if same else (new, g)}")
        soft(cmp, f"greedy p{i} vs generate")
        res["greedy"].append(entry)
    log(f"  greedy: {len(prompts)} prompts x {GREEDY_NEW} tokens; smallest margin {worst_margin:.4f}")
    distinct = min(len(set(e["new_ids"])) for e in res["greedy"])
    check(distinct >= 3, f"greedy continuations are not one repeated token (fewest distinct ids: {distinct})")

    if spec["splice"]:
        res["splice"] = []
        half = n_layers // 2
        ranges = [(0, n_layers), (half, n_layers), (0, half), (n_layers - 1, n_layers)]
        for (lt, ls) in [(10, 10), (9, 13), (13, 9)]:
            tgt = rand_ids(gen, lt)
            src = rand_ids(gen, ls)
            Lt, Ls = lt - 1, ls - 1
            m = min(Lt, Ls)
            base_new, base_margins = greedy(model, tgt, SPLICE_NEW)
            src_cache, _, _ = prefill(model, src)
            for lo, hi in ranges:
                for align in ("left", "right"):
                    t0, s0 = (0, 0) if align == "left" else (Lt - m, Ls - m)
                    cache, pending, pos = prefill(model, tgt)
                    for l in range(lo, hi):
                        tl, sl = cache.layers[l], src_cache.layers[l]
                        tl.keys[:, :, t0:t0 + m, :] = sl.keys[:, :, s0:s0 + m, :]
                        tl.values[:, :, t0:t0 + m, :] = sl.values[:, :, s0:s0 + m, :]
                    assert cache_len(cache) == Lt
                    new, margins = decode(model, cache, pending, pos, SPLICE_NEW)
                    worst_margin = min(worst_margin, min(margins))
                    res["splice"].append({
                        "target_ids": tgt, "source_ids": src, "layers": [lo, hi], "align": align,
                        "target_slots": [t0, t0 + m], "source_slots": [s0, s0 + m],
                        "new_ids": new, "margins": margins,
                        "unspliced_new_ids": base_new, "unspliced_margins": base_margins,
                    })
                    if (lo, hi) == (0, n_layers) and lt == ls:
                        s_cache, _, _ = prefill(model, src)
                        ref, _ = decode(model, s_cache, tgt[-1], Ls, SPLICE_NEW)
                        check(ref == new, f"splice all layers ({lt},{ls}) {align} == source cache + "
                                          f"target's pending token")
        changed = sum(e["new_ids"] != e["unspliced_new_ids"] for e in res["splice"])
        log(f"  splice: {len(res['splice'])} cases, {changed} of them change the target's tokens")
        check(changed >= len(res["splice"]) // 2, "most splices change the generated tokens")

        src = rand_ids(gen, 7)
        tgt = rand_ids(gen, 6)
        cache = DynamicCache()
        cache = feed(model, cache, src, 0)
        cache = feed(model, cache, tgt[:-1], len(src))
        assert cache_len(cache) == len(src) + len(tgt) - 1
        new, margins = decode(model, cache, tgt[-1], len(src) + len(tgt) - 1, PREFIX_NEW)
        worst_margin = min(worst_margin, min(margins))
        cat_new, _ = greedy(model, src + tgt, PREFIX_NEW)
        check(cat_new == new, f"prefix == greedy decoding of the concatenation {new}")
        res["prefix"] = [{"source_ids": src, "target_ids": tgt, "new_ids": new, "margins": margins,
                          "target_positions": [len(src), len(src) + len(tgt) - 1],
                          "pending_position": len(src) + len(tgt) - 1}]
    if batch_rows:
        T = max(len(r) for r in batch_rows)
        ids = [[PAD] * (T - len(r)) + r for r in batch_rows]
        mask = [[0] * (T - len(r)) + [1] * len(r) for r in batch_rows]
        rows = []
        for r in batch_rows:
            new, margins = greedy(model, r, SPLICE_NEW)
            worst_margin = min(worst_margin, min(margins))
            rows.append({"prompt_ids": r, "new_ids": new, "margins": margins})
        res["batch"] = {"input_ids": ids, "attention_mask": mask, "pad_token_id": PAD,
                        "note": "rows decoded one by one (the same as the padded batch must give); "
                                "the batch's prompts are reference.safetensors' batch.input_ids",
                        "rows": rows}

        def cmp_batch():
            out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 max_new_tokens=SPLICE_NEW, do_sample=False, pad_token_id=PAD)
            ok = True
            for r, row in enumerate(rows):
                want = truncate_at_eos(row["new_ids"])
                ok &= out[r, T:T + len(want)].tolist() == want
            res["batch"]["matches_hf_batched_generate"] = bool(ok)
            return check(ok, f"left-padded batched model.generate == rows one by one "
                             f"{[row['new_ids'] for row in rows]}")
        soft(cmp_batch, "batched generate")
    log(f"  generation: smallest margin anywhere {worst_margin:.4f}")
    return res


@torch.no_grad()
def batch_reference(model, gen, tensors):
    lens = [5, 9, 13]
    T = max(lens)
    rows = [rand_ids(gen, n) for n in lens]
    ids = torch.full((len(lens), T), PAD, dtype=torch.int64)
    mask = torch.zeros((len(lens), T), dtype=torch.int64)
    for r, p in enumerate(rows):
        ids[r, T - len(p):] = torch.tensor(p)
        mask[r, T - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0) * mask
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    logits = out.logits.float()
    worst = 0.0
    for r, p in enumerate(rows):
        single = model(input_ids=torch.tensor([p]), use_cache=False).logits.float()[0]
        worst = max(worst, float((logits[r, T - len(p):] - single).abs().max()))
    tensors["batch.input_ids"] = ids
    tensors["batch.attention_mask"] = mask
    tensors["batch.position_ids"] = pos
    tensors["batch.logits"] = logits.contiguous()
    log(f"  batch (left-padded, lengths {lens}): max |batch - single| at real positions {worst:.2e}")
    check(worst <= 1e-4, "padded batch == rows one by one")
    return rows


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def do_model(spec, out_dir):
    name = spec["name"]
    path = os.path.join(out_dir, name)
    log(f"== {name}")
    saved = build_and_save(spec, path)
    files, shards, keys = describe_files(path)
    log(f"  {len(shards)} weight file(s), {len(keys)} tensors, lm_head.weight saved: {'lm_head.weight' in keys}")
    if spec["max_shard_size"]:
        check(len(shards) >= 2 and "model.safetensors.index.json" in files,
              f"sharded: {len(shards)} shards + model.safetensors.index.json")
    else:
        check(shards == ["model.safetensors"], "single model.safetensors")

    install_rotary_wrapper(modeling_module(spec))
    model = load_reference_model(spec, path)
    install_instance_rotary_wrappers(model)
    cfg = model.config
    rp = getattr(cfg, "rope_parameters", None)
    log(f"  reloaded config.rope_parameters: {rp}")
    got_dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    check(got_dh == 16, f"reloaded head_dim is 16 (got {got_dh})")
    sd = model.state_dict()
    wdiff = max(float((sd[k].float() - v).abs().max()) for k, v in saved.items() if k in sd)
    check(wdiff == 0.0 and all(k in sd for k in saved),
          f"reloaded float32 weights == saved ({spec['save_dtype']}) weights")
    if cfg.tie_word_embeddings:
        check(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
              "lm_head is tied to embed_tokens after reload")

    # rope
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    want_rp = spec["config"]["rope_parameters"]
    mine, bands, unscaled = llama3_inv_freq(dh, want_rp)
    theirs = model.model.rotary_emb.inv_freq.double().tolist()
    rerr = max(abs(a - b) / abs(a) for a, b in zip(mine, theirs))
    check(rerr < 1e-5, f"rotary inv_freq == independent computation (max rel err {rerr:.1e})")
    rope_info = {"rope_type": want_rp["rope_type"], "rope_theta": want_rp["rope_theta"], "head_dim": dh,
                 "inv_freq": theirs, "inv_freq_unscaled": unscaled, "bands": bands}
    if want_rp["rope_type"] == "llama3":
        rope_info.update({k: want_rp[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                                   "original_max_position_embeddings")})
        orig = want_rp["original_max_position_embeddings"]
        log(f"  llama3 bands (high-freq wavelength < {orig / want_rp['high_freq_factor']:g}, "
            f"low-freq wavelength > {orig / want_rp['low_freq_factor']:g}):")
        for i, (f, b) in enumerate(zip(unscaled, bands)):
            log(f"    pair {i}: wavelength {2 * math.pi / f:10.2f}  {b}")
        check(any(b.startswith("high") for b in bands) and any(b.startswith("medium") for b in bands)
              and any(b.startswith("low") for b in bands), "all three llama3 frequency bands occur")
        soft(lambda: check(cfg.rope_parameters.get("rope_type") == "llama3"
                           and float(cfg.rope_parameters.get("factor")) == 8.0
                           and int(cfg.rope_parameters.get("original_max_position_embeddings")) == orig
                           and float(cfg.rope_parameters.get("rope_theta")) == 500000.0,
                           "transformers reads the classic config.json as llama3 rope"),
             "reading rope_parameters of the classic config")

    gen = torch.Generator().manual_seed(spec["seed"] + 7)
    prompts = [rand_ids(gen, n) for n in PROMPT_LENGTHS]
    tensors = {"rope.inv_freq": torch.tensor(theirs, dtype=torch.float32)}
    stores = forward_references(spec, model, prompts, tensors)
    if getattr(cfg, "sliding_window", None) and spec["family"] == "mistral":
        sliding_window_check(model, stores[2], len(prompts[2]))
    rv = rv_numbers(model, stores[2])
    batch_rows = None
    if spec["batch"]:
        batch_rows = soft(lambda: batch_reference(model, gen, tensors), "batch reference")
    save_file(tensors, os.path.join(path, "reference.safetensors"))
    with open(os.path.join(path, "rv.json"), "w") as f:
        json.dump(rv, f, indent=2)
        f.write("\n")
    with open(os.path.join(path, "rope.json"), "w") as f:
        json.dump(rope_info, f, indent=2)
        f.write("\n")
    log(f"  reference.safetensors: {len(tensors)} tensors")

    if spec["interventions"]:
        def iv():
            t, meta = interventions(spec, model, torch.Generator().manual_seed(spec["seed"] + 11))
            save_file(t, os.path.join(path, "interventions.safetensors"))
            meta["model"] = name
            with open(os.path.join(path, "interventions.json"), "w") as f:
                json.dump(meta, f, indent=1)
                f.write("\n")
        soft(iv, f"{name} interventions")

    def gn():
        res = generation(spec, model, prompts, torch.Generator().manual_seed(spec["seed"] + 13), batch_rows)
        res["model"] = name
        with open(os.path.join(path, "generation.json"), "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    soft(gn, f"{name} generation")

    total = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    log(f"  {name}: {total / 1e6:.2f} MB in {len(os.listdir(path))} files")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", help="folder to write <model name>/ into (e.g. tests/data/models)")
    ap.add_argument("--pack", action="store_true",
                    help="replace each <model name>/ folder by <model name>.tar (for transfer)")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    args = ap.parse_args()
    torch.set_num_threads(4)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
    os.makedirs(args.out_dir, exist_ok=True)
    for spec in SPECS:
        if args.only and spec["name"] not in args.only.split(","):
            continue
        try:
            path = do_model(spec, args.out_dir)
        except Exception:  # noqa: BLE001
            log(f"  FAIL (exception) building {spec['name']}:\n{traceback.format_exc()}")
            FAILURES.append(spec["name"])
            path = os.path.join(args.out_dir, spec["name"])
        if args.pack and os.path.isdir(path):
            with tarfile.open(path + ".tar", "w") as tar:
                tar.add(path, arcname=spec["name"])
            shutil.rmtree(path)
    log("")
    log(f"{len(FAILURES)} failure(s)" + (": " + "; ".join(FAILURES) if FAILURES else ""))
    with open(os.path.join(args.out_dir, "summary.txt"), "w") as f:
        f.write("\n".join(SUMMARY) + "\n")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
