#!/usr/bin/env python3
"""One table from bench_study's and hf_baseline.py's JSON: medians and mechlens/HF ratios, each
mechlens row against the fastest transformers way measured, and against the physical limits
(copy bandwidth and bf16 matrix rate) hf_baseline.py measured in the same run."""
import json
import sys


def load(path):
    with open(path) as f:
        d = json.load(f)
    return d, {(r["workload"], r["metric"]): r["value"] for r in d["rows"]}


def main():
    ml_doc, ml = load(sys.argv[1])
    hf_doc, hf = load(sys.argv[2])
    gpu = hf_doc.get("device", "?")
    print(f"GPU: {gpu}\n")
    pairs = [
        ("batch-1 decode, KV splice 16:32 (tok/s)", ("decode_splice", "new_tokens_per_s"), ("decode_splice_loop", "new_tokens_per_s")),
        ("batch-1 decode, KV splice, eager steps (tok/s)", ("decode_splice_eager", "new_tokens_per_s"), ("decode_splice_loop", "new_tokens_per_s")),
        ("batch-1 decode, KV splice, ATen kernels, no fused ones (tok/s)", ("decode_splice_aten", "new_tokens_per_s"), ("decode_splice_loop", "new_tokens_per_s")),
        ("batch-1 decode, plain (tok/s) vs HF generate", ("decode_plain", "new_tokens_per_s"), ("generate_plain", "new_tokens_per_s")),
        ("phase 1, 400 x 50 tokens (tok/s) vs HF batched 32", ("phase1", "new_tokens_per_s"), ("phase1_batched32", "new_tokens_per_s")),
        ("phase 1 (tok/s) vs HF one pair at a time", ("phase1", "new_tokens_per_s"), ("phase1_loop", "new_tokens_per_s")),
        ("R_V, 1,000 prompts (prompts/s) vs HF hooked", ("rv", "prompts_per_s"), ("rv_hooked", "prompts_per_s")),
        ("forward, batch 32 x 64 (tok/s)", ("forward_plain", "tokens_per_s"), ("forward_plain", "tokens_per_s")),
    ]
    print(f"| workload | mechlens | transformers | ratio |\n|---|---|---|---|")
    for label, a, b in pairs:
        if a in ml and b in hf:
            print(f"| {label} | {ml[a]:.1f} | {hf[b]:.1f} | {ml[a] / hf[b]:.2f}x |")
    # Interventions at every decoding step (capturable: inside the CUDA graph) against plain decode.
    plain_decode = ml.get(("decode_plain", "new_tokens_per_s"))
    for mode in ("steer", "ablate", "cache", "steer_eager"):
        v = ml.get((f"decode_{mode}", "new_tokens_per_s"))
        if plain_decode and v:
            graph = ml.get((f"decode_{mode}", "cuda_graph"))
            where = "" if graph is None else (", CUDA graph" if graph else ", eager steps")
            print(f"| batch-1 decode with {mode}{where} vs plain (mechlens) | {v:.1f} | {plain_decode:.1f} | "
                  f"{v / plain_decode:.3f}x |")
    plain = ml.get(("forward_plain", "tokens_per_s"))
    for mode in ("noop_hooks", "cache_hook_v", "patch_v", "plain_again"):
        v = ml.get((f"forward_{mode}", "tokens_per_s"))
        if plain and v:
            print(f"| forward with {mode} vs plain (mechlens) | {v:.1f} | {plain:.1f} | {v / plain:.3f}x |")
    # Each mechlens row beside the fastest transformers way measured in the same run.
    fastest = [
        ("batch-1 decode, KV splice (tok/s)", ("decode_splice", "new_tokens_per_s"),
         [("generate_static_compiled", "new_tokens_per_s"), ("decode_splice_loop", "new_tokens_per_s"),
          ("generate_plain", "new_tokens_per_s")]),
        ("phase 1, 400 x 50 tokens (tok/s)", ("phase1", "new_tokens_per_s"),
         [("phase1_prefill_splice", "new_tokens_per_s"), ("phase1_generate_all", "new_tokens_per_s"),
          ("phase1_batched32", "new_tokens_per_s"), ("phase1_loop", "new_tokens_per_s")]),
    ]
    print("\n| workload | mechlens | fastest transformers way | its value | ratio |\n|---|---|---|---|---|")
    for label, a, candidates in fastest:
        have = [(hf[c], c[0]) for c in candidates if c in hf]
        if a in ml and have:
            best, name = max(have)
            print(f"| {label} | {ml[a]:.1f} | {name} | {best:.1f} | {ml[a] / best:.2f}x |")
    # Physical limits measured in the same run (hf_baseline.py's "limits" rows).
    copy = hf.get(("limits", "copy_tb_s"))
    tflops = hf.get(("limits", "bf16_tflops"))
    wb_ml = ml.get(("model", "weight_bytes"))
    if copy and wb_ml and ("decode_splice", "new_tokens_per_s") in ml:
        # Read per token: every weight but the embedding table (one row of it), and the KV cache
        # (on average 64 + 64 slots of the 128-token decode).
        kv_kib = ml.get(("model", "kv_bytes_per_token"), 0.0)
        per_token = wb_ml * 2**30 - 128256 * 4096 * 2 + kv_kib * 1024 * 128
        bound = copy * 1e12 / per_token
        for w in ("decode_splice", "decode_plain", "decode_steer", "decode_ablate", "decode_cache"):
            if (w, "new_tokens_per_s") in ml:
                got = ml[(w, "new_tokens_per_s")]
                print(f"\n{w}: bound at the measured copy bandwidth {copy:.2f} TB/s, {per_token / 1e9:.2f} GB read "
                      f"per token (weights but the embedding table, KV cache): {bound:.0f} tok/s; mechlens {got:.1f} "
                      f"tok/s = {100 * got / bound:.1f} %", end="")
        print()
    if tflops and wb_ml and ("phase1", "new_tokens_per_s") in ml:
        params = wb_ml * 2**30 / 2  # bf16
        vocab_d = 128256 * 4096
        body = params - 2 * vocab_d  # every matrix but the embedding and the unembedding
        flops = 2 * (200 * 63 + 400 * 50) * body + 2 * (200 + 400 * 50) * vocab_d
        bound_s = flops / (tflops * 1e12)
        got_s = 400 * 50 / ml[("phase1", "new_tokens_per_s")]
        print(f"phase-1 bound (measured bf16 rate {tflops:.0f} TFLOP/s, {flops:.3g} FLOP): {bound_s:.2f} s; "
              f"mechlens {got_s:.2f} s = {100 * bound_s / got_s:.0f} % of the roofline")
    kv = ml.get(("model", "kv_bytes_per_token"))
    print("\n| workload | mechlens peak GiB | transformers peak GiB | weights + KV cache GiB |\n|---|---|---|---|")
    kv_tokens = {"decode_splice": 64 + 128, "phase1": 400 * 114 + 200 * 63, "rv": 0, "forward_plain": 0}
    hf_name = {"decode_splice": "decode_splice_loop", "phase1": "phase1_batched32", "rv": "rv_hooked",
               "forward_plain": "forward_plain"}
    for w, tokens in kv_tokens.items():
        if (w, "peak_gib") in ml:
            need = wb_ml + (kv or 0) * tokens / 2**20
            print(f"| {w} | {ml[(w, 'peak_gib')]:.2f} | {hf.get((hf_name[w], 'peak_gib'), float('nan')):.2f} | {need:.2f} |")


if __name__ == "__main__":
    main()
