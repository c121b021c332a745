#!/usr/bin/env python3
"""The study's workloads with Hugging Face transformers (issue 10), beside bench_study.cpp.

Same shapes, dtype and work as mechlens' benchmark: a Llama-3-8B-shaped LlamaForCausalLM in bf16
with random weights built on the GPU (no download), no stop tokens (every generation has its full
length). Weights are drawn independently on each side; the work does not depend on their values.

    python3 benchmarks/hf_baseline.py --out hf.json

Workloads (medians of repeats):
  decode_splice_loop   batch-1, 64-token prompts, layers 16:32 of the KV cache spliced from a
                       second prompt, 128 greedy tokens in a Python loop (the study's way)
  generate_plain       model.generate, 128 greedy new tokens, eager
  phase1_loop          one pair at a time, 4 conditions, 50 tokens at T = 0.7 (measured on the
                       first --loop-pairs pairs; tokens/s does not depend on the count)
  phase1_batched32     the same 100 pairs x 4 conditions, 32 pairs per batch
  rv_hooked            R_V at layers 4 and 24 (W = 16) over 1,000 prompts, forward hooks on
                       v_proj, batches of 50, logits for the last position only
  forward_plain        forward throughput, batch 32 x 64 tokens, full logits
"""
import argparse
import json
import statistics
import time

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

P = 64  # prompt length


def sync():
    torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def rand_prompts(gen, n, length, vocab):
    return torch.randint(3, vocab, (n, length), generator=gen).tolist()


@torch.no_grad()
def prefill(model, batch_ids):
    """Prompt state: every token but the last into a fresh cache."""
    cache = DynamicCache()
    x = torch.tensor([ids[:-1] for ids in batch_ids], device="cuda")
    out = model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.past_key_values if out.past_key_values is not None else cache


@torch.no_grad()
def decode_loop(model, cache, pending, n_new, temperature=None, gen=None):
    tok = torch.tensor([[t] for t in pending], device="cuda")
    pos = torch.full((len(pending), 1), P - 1, device="cuda", dtype=torch.long)
    for _ in range(n_new):
        out = model(input_ids=tok, past_key_values=cache, position_ids=pos, use_cache=True)
        cache = out.past_key_values if out.past_key_values is not None else cache
        logits = out.logits[:, -1].float()
        if temperature is None:
            tok = logits.argmax(-1, keepdim=True)
        else:
            tok = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)
        pos = pos + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-pairs", type=int, default=4)
    args = ap.parse_args()

    torch.manual_seed(1234)
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
                      max_position_embeddings=8192, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    rows = []

    def add(workload, metric, value, unit, note=""):
        rows.append({"workload": workload, "metric": metric, "value": value, "unit": unit, "note": note})
        print(f"{workload:20s} {metric:22s} {value:12.3f} {unit} {note}", flush=True)

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    add("model", "weight_bytes", weight_bytes / 2**30, "GiB", f"transformers, {torch.cuda.get_device_name()}")
    gen = torch.Generator().manual_seed(7)
    vocab = cfg.vocab_size

    # --- batch-1 decode with a KV splice of layers 16:32, Python loop ------------------------
    tgt, src = rand_prompts(gen, 2, P, vocab)
    times, peak = [], 0.0
    for r in range(args.repeats + 1):
        torch.cuda.reset_peak_memory_stats()
        cache = prefill(model, [tgt])
        scache = prefill(model, [src])
        for layer in range(16, 32):
            cache.layers[layer].keys.copy_(scache.layers[layer].keys)
            cache.layers[layer].values.copy_(scache.layers[layer].values)
        t = timed(lambda: decode_loop(model, cache, [tgt[-1]], 128))
        if r:
            times.append(t)
        peak = max(peak, torch.cuda.max_memory_allocated() / 2**30)
    add("decode_splice_loop", "new_tokens_per_s", 128 / statistics.median(times), "tok/s", "decode only, batch 1")
    add("decode_splice_loop", "peak_gib", peak, "GiB")

    times = []
    x = torch.tensor([tgt], device="cuda")
    for r in range(args.repeats + 1):
        torch.cuda.reset_peak_memory_stats()
        t = timed(lambda: model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=128,
                                         min_new_tokens=128, do_sample=False))
        if r:
            times.append(t)
    add("generate_plain", "new_tokens_per_s", 128 / statistics.median(times), "tok/s", "incl. prefill, eager")
    add("generate_plain", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    # --- phase 1 ------------------------------------------------------------------------------
    pairs = 100
    base = rand_prompts(gen, pairs, P, vocab)
    recu = rand_prompts(gen, pairs, P, vocab)
    conditions = [(base, base), (recu, recu), (recu, base), (base, recu)]  # (cache from, pending from)
    sgen = torch.Generator(device="cuda").manual_seed(1)

    def loop_pairs(n):
        for i in range(n):
            for cache_from, pend_from in conditions:
                cache = prefill(model, [cache_from[i]])
                decode_loop(model, cache, [pend_from[i][-1]], 50, 0.7, sgen)

    loop_pairs(1)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t = timed(lambda: loop_pairs(args.loop_pairs))
    add("phase1_loop", "new_tokens_per_s", args.loop_pairs * 4 * 50 / t, "tok/s",
        f"one pair at a time, measured on {args.loop_pairs} pairs")
    add("phase1_loop", "seconds_for_100_pairs", t * pairs / args.loop_pairs, "s", "extrapolated")
    add("phase1_loop", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    def batched(b=32):
        for lo in range(0, pairs, b):
            hi = min(pairs, lo + b)
            for cache_from, pend_from in conditions:
                cache = prefill(model, cache_from[lo:hi])
                decode_loop(model, cache, [p[-1] for p in pend_from[lo:hi]], 50, 0.7, sgen)

    times = []
    for r in range(args.repeats + 1):
        torch.cuda.reset_peak_memory_stats()
        t = timed(batched)
        if r:
            times.append(t)
    add("phase1_batched32", "new_tokens_per_s", pairs * 4 * 50 / statistics.median(times), "tok/s",
        "32 pairs per batch, Python decode loop")
    add("phase1_batched32", "seconds", statistics.median(times), "s")
    add("phase1_batched32", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    # --- R_V with forward hooks ---------------------------------------------------------------
    prompts = torch.tensor(rand_prompts(gen, 1000, P, vocab), device="cuda")
    grabbed = {}

    def grab(layer):
        def hook(_module, _inp, out):
            grabbed[layer] = out[:, -16:, :].detach()
        return hook

    handles = [model.model.layers[l].self_attn.v_proj.register_forward_hook(grab(l)) for l in (4, 24)]

    def pr(x):
        s = torch.linalg.svdvals(x.double())
        s2 = s * s
        return s2.sum(-1) ** 2 / (s2 * s2).sum(-1)

    @torch.no_grad()
    def rv_all(b=50):
        out = []
        for lo in range(0, 1000, b):
            model(input_ids=prompts[lo:lo + b], logits_to_keep=1)
            out.append(pr(grabbed[24]) / pr(grabbed[4]))
        return torch.cat(out)

    times = []
    for r in range(args.repeats + 1):
        torch.cuda.reset_peak_memory_stats()
        t = timed(rv_all)
        if r:
            times.append(t)
    for h in handles:
        h.remove()
    add("rv_hooked", "prompts_per_s", 1000 / statistics.median(times), "prompts/s", "batches of 50")
    add("rv_hooked", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    # --- forward throughput -------------------------------------------------------------------
    x = prompts[:32]
    times = []
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for r in range(3 * args.repeats + 2):
            t = timed(lambda: model(input_ids=x))
            if r >= 2:
                times.append(t)
    add("forward_plain", "tokens_per_s", 32 * P / statistics.median(times), "tok/s", "batch 32 x 64, full logits")
    add("forward_plain", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    with open(args.out, "w") as f:
        json.dump({"tool": "transformers", "device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
