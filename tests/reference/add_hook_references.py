#!/usr/bin/env python3
"""The hook points added after the reference checkpoints were made, recorded from transformers.

For each checkpoint named on the command line (tests/data/models/<name>/) this loads the model
with transformers twice — float32 and bfloat16, eager attention, as make_model_reference.py and
make_bf16_reference.py do — runs the prompts p0, p1, ... of reference.safetensors, and adds to
reference.safetensors and reference_bf16.safetensors (every tensor already there is kept as it is):

  p{i}.blocks.{L}.mlp.hook_pre          gate_proj's output        (forward hook on gate_proj)
  p{i}.blocks.{L}.mlp.hook_pre_linear   up_proj's output          (forward hook on up_proj)
  p{i}.blocks.{L}.mlp.hook_post         down_proj's input         (forward pre-hook on down_proj)
  p{i}.blocks.{L}.attn.hook_attn_scores the input of the attention softmax (the eager attention's
                                        q kᵀ · scaling + additive mask), with the mask's minimum
                                        written as -inf (TransformerLens' convention)
  p{i}.blocks.{L}.attn.hook_result      z_h W_O[:, h]ᵀ per head, from transformers' own o_proj input
                                        and weight (transformers has no per-head output)

and checks itself: softmax of the recorded scores is transformers' returned attention weights,
SiLU(pre) · pre_linear is down_proj's input, and the results summed over heads are o_proj's output.
Values are stored as float32 (bfloat16 ones exactly). Needs torch, transformers (5.x), safetensors.

    python3 tests/reference/add_hook_references.py tests/data/models llama_gqa_llama3 llama_tied mistral_swa qwen2_bias
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_reference as ref  # noqa: E402


def f32(t):
    return t.detach().to(torch.float32).clone().contiguous()


@torch.no_grad()
def record(model, ids, dtype):
    cfg = model.config
    H = cfg.num_attention_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    store, handles, scores = {}, [], []
    for L, layer in enumerate(model.model.layers):
        p = f"blocks.{L}."
        mlp, sa = layer.mlp, layer.self_attn
        handles.append(mlp.gate_proj.register_forward_hook(lambda m, a, o, p=p: store.__setitem__(p + "mlp.hook_pre", o)))
        handles.append(mlp.up_proj.register_forward_hook(lambda m, a, o, p=p: store.__setitem__(p + "mlp.hook_pre_linear", o)))
        handles.append(mlp.down_proj.register_forward_pre_hook(lambda m, a, p=p: store.__setitem__(p + "mlp.hook_post", a[0])))
        handles.append(sa.o_proj.register_forward_pre_hook(lambda m, a, p=p: store.__setitem__(p + "z", a[0])))
        handles.append(sa.o_proj.register_forward_hook(lambda m, a, o, p=p: store.__setitem__(p + "attn_out", o)))
    softmax = F.softmax

    def tapped(x, *args, **kwargs):
        if x.dim() == 4 and x.size(1) == H:
            scores.append(x)
        return softmax(x, *args, **kwargs)

    F.softmax = tapped
    try:
        out = model(input_ids=torch.tensor([ids]), use_cache=False, output_attentions=True)
    finally:
        F.softmax = softmax
        for h in handles:
            h.remove()
    n_layers = cfg.num_hidden_layers
    ref.check(len(scores) == n_layers, f"one attention softmax per layer ({len(scores)} for {n_layers})")
    added = {}
    lowest = torch.finfo(dtype).min
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for L in range(n_layers):
        p = f"blocks.{L}."
        s = scores[L]
        weights = out.attentions[L]
        ref.check(torch.allclose(softmax(s.float(), dim=-1), weights.float(), atol=tol),
                  f"layer {L}: softmax of the recorded scores is the returned attention pattern")
        masked = s.float() <= lowest / 2
        added[p + "attn.hook_attn_scores"] = f32(s.float().masked_fill(masked, float("-inf")))
        pre, lin, post = store[p + "mlp.hook_pre"], store[p + "mlp.hook_pre_linear"], store[p + "mlp.hook_post"]
        ref.check(torch.allclose(F.silu(pre.float()) * lin.float(), post.float(), atol=tol * max(1.0, post.float().abs().max().item())),
                  f"layer {L}: silu(pre) * pre_linear is down_proj's input")
        for k in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
            added[p + k] = f32(store[p + k])
        z = store[p + "z"]  # [b, n, H * dh]
        b, n, _ = z.shape
        w = model.model.layers[L].self_attn.o_proj.weight  # [d_model, H * dh]
        result = torch.einsum("bnhd,mhd->bnhm", z.float().view(b, n, H, dh), w.float().view(-1, H, dh))
        attn_out = store[p + "attn_out"].float()
        if model.model.layers[L].self_attn.o_proj.bias is not None:
            attn_out = attn_out - model.model.layers[L].self_attn.o_proj.bias.float()
        ref.check(torch.allclose(result.sum(2), attn_out, atol=tol * max(1.0, attn_out.abs().max().item())),
                  f"layer {L}: the per-head results sum to o_proj's output")
        added[p + "attn.hook_result"] = f32(result.to(dtype))  # rounded as a bfloat16 run would hold it
    return added


def run(models_dir, name):
    spec = next(s for s in ref.SPECS if s["name"] == name)
    path = os.path.join(models_dir, name)
    for dtype, file in ((torch.float32, "reference.safetensors"), (torch.bfloat16, "reference_bf16.safetensors")):
        model = ref.model_class(spec).from_pretrained(path, dtype=dtype, attn_implementation="eager")
        model.eval()
        target = os.path.join(path, file)
        tensors = load_file(target)
        i, added = 0, 0
        while f"p{i}.input_ids" in tensors:
            ids = tensors[f"p{i}.input_ids"][0].tolist()
            for k, v in record(model, ids, dtype).items():
                tensors[f"p{i}.{k}"] = v
                added += 1
            i += 1
        save_file(tensors, target)
        print(f"{name}: {added} tensors added to {file} ({i} prompts, {dtype})")


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
