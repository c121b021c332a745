#!/usr/bin/env python3
"""bfloat16 references: transformers run in bfloat16 on the committed test checkpoints.

The float32 references (make_model_reference.py) cannot tell whether mechlens rounds where
transformers rounds in bfloat16 (for example rotary: transformers rounds q*cos and
rotate_half(q)*sin to bfloat16 before adding them). This script loads each checkpoint named on
the command line from tests/data/models/<name>/ in bfloat16 with eager attention, runs the three
prompts of its reference.safetensors (p0, p1, p2) and writes reference_bf16.safetensors beside
it: p{i}.logits and p{i}.<hook> for every hook point, the bfloat16 values stored as float32
(exact), plus p{i}.input_ids. Needs torch, transformers (5.x), safetensors.

    python3 tests/reference/make_bf16_reference.py tests/data/models llama_gqa_llama3 mistral_swa
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_reference as ref  # noqa: E402


@torch.no_grad()
def run(models_dir, name):
    spec = next(s for s in ref.SPECS if s["name"] == name)
    path = os.path.join(models_dir, name)
    ref.install_rotary_wrapper(ref.modeling_module(spec))
    model = ref.model_class(spec).from_pretrained(path, dtype=torch.bfloat16, attn_implementation="eager")
    model.eval()
    ref.install_instance_rotary_wrappers(model)
    fp32 = load_file(os.path.join(path, "reference.safetensors"))
    out = {}
    i = 0
    while f"p{i}.input_ids" in fp32:
        ids = fp32[f"p{i}.input_ids"][0].tolist()
        res, store = ref.run_with_hooks(model, ids)
        out[f"p{i}.input_ids"] = fp32[f"p{i}.input_ids"]
        out[f"p{i}.logits"] = res.logits.to(torch.float32).contiguous()
        for k, v in store.items():
            out[f"p{i}.{k}"] = v  # Recorder stores float32 copies of the bfloat16 values
        # How far bfloat16 is from float32 here: the scale the C++ tolerances are set against.
        d = (out[f"p{i}.logits"] - fp32[f"p{i}.logits"]).abs().max().item()
        s = fp32[f"p{i}.logits"].abs().max().item()
        print(f"{name} p{i}: n={len(ids)} bf16 vs fp32 logits max |diff| {d:.4f} (logit scale {s:.2f})")
        ref.check(str(res.logits.dtype) == "torch.bfloat16", f"{name} p{i} logits are bfloat16")
        i += 1
    save_file(out, os.path.join(path, "reference_bf16.safetensors"))
    print(f"{name}: reference_bf16.safetensors with {len(out)} tensors")


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
