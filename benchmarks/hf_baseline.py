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
  generate_static_compiled  the fastest batch-1 way transformers offers: generate() with
                       cache_implementation="static", which compiles the decoding forward
                       itself (torch.compile with CUDA graphs); 128 greedy tokens;
                       decode tok/s from the difference of 128-token and 1-token generates,
                       warm-up (compilation) reported separately
  phase1_generate_all  phase 1 as one generate() over all 400 sequences (100 pairs x 4 prompts of
                       64 tokens, 50 tokens at T = 0.7, top-k off): 400 prefills where the study
                       needs 200
  phase1_prefill_splice  the same work as mechlens' phase 1: 200 prefills, the 400-row cache built
                       by index_select (4 conditions), one batched decode loop of 50 tokens
  limits               the machine's own limits, measured in the same run: device copy bandwidth
                       (bytes read + written / s, 4 GiB) and the bf16 matrix rate (8192^3 GEMM)

--only picks workloads by name (e.g. --only limits generate_static_compiled).
"""
import argparse
import json
import os
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


def median_time(fn, repeats):
    """Median seconds of `repeats` timed calls after one warm-up call (peak memory reset before each)."""
    times = []
    for r in range(repeats + 1):
        torch.cuda.reset_peak_memory_stats()
        t = timed(fn)
        if r:
            times.append(t)
    return statistics.median(times)


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
    ap.add_argument("--only", nargs="*", default=None, help="workloads to run (default: all)")
    args = ap.parse_args()

    def want(name):
        return args.only is None or name in args.only

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
        # Written after every row (atomically), so that a run stopped halfway keeps what it measured.
        with open(args.out + ".tmp", "w") as f:
            json.dump({"tool": "transformers", "device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
        os.replace(args.out + ".tmp", args.out)

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    add("model", "weight_bytes", weight_bytes / 2**30, "GiB", f"transformers, {torch.cuda.get_device_name()}")
    gen = torch.Generator().manual_seed(7)
    vocab = cfg.vocab_size

    # --- the machine's limits -------------------------------------------------------------------
    if want("limits"):
        buf = torch.empty(2**31, dtype=torch.bfloat16, device="cuda")  # 4 GiB
        dst = torch.empty_like(buf)
        times = [timed(lambda: dst.copy_(buf)) for _ in range(args.repeats + 2)][2:]
        add("limits", "copy_tb_s", 2 * buf.numel() * 2 / statistics.median(times) / 1e12, "TB/s",
            "device copy of 4 GiB, bytes read + written")
        del buf, dst
        a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
        b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
        times = [timed(lambda: torch.mm(a, b)) for _ in range(args.repeats + 5)][3:]
        add("limits", "bf16_tflops", 2 * 8192**3 / statistics.median(times) / 1e12, "TFLOP/s", "8192^3 GEMM")
        del a, b

    tgt, src = rand_prompts(gen, 2, P, vocab)
    # --- batch-1 decode with a KV splice of layers 16:32, Python loop ------------------------
    times, peak = [], 0.0
    for r in range(args.repeats + 1 if want("decode_splice_loop") else 0):
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
    if times:
        add("decode_splice_loop", "new_tokens_per_s", 128 / statistics.median(times), "tok/s", "decode only, batch 1")
        add("decode_splice_loop", "peak_gib", peak, "GiB")

    x = torch.tensor([tgt], device="cuda")
    if want("generate_plain"):
        t = median_time(lambda: model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=128,
                                               min_new_tokens=128, do_sample=False), args.repeats)
        add("generate_plain", "new_tokens_per_s", 128 / t, "tok/s", "incl. prefill, eager")
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

    if want("phase1_loop"):
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

    if want("phase1_batched32"):
        t = median_time(batched, args.repeats)
        add("phase1_batched32", "new_tokens_per_s", pairs * 4 * 50 / t, "tok/s", "32 pairs per batch, Python decode loop")
        add("phase1_batched32", "seconds", t, "s")
        add("phase1_batched32", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    # --- phase 1 the fast ways: one generate() over everything, and the study's own work ------
    if want("phase1_generate_all"):
        rows_ids = [ids for cache_from, _ in conditions for ids in cache_from]  # 400 prompts
        x_all = torch.tensor(rows_ids, device="cuda")
        t = median_time(lambda: model.generate(input_ids=x_all, attention_mask=torch.ones_like(x_all), max_new_tokens=50,
                                               min_new_tokens=50, do_sample=True, temperature=0.7, top_k=0, top_p=1.0),
                        args.repeats)
        add("phase1_generate_all", "new_tokens_per_s", 400 * 50 / t, "tok/s", "one generate() over 400 sequences, 400 prefills")
        add("phase1_generate_all", "seconds", t, "s")
        add("phase1_generate_all", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    if want("phase1_prefill_splice"):
        @torch.no_grad()
        def prefill_splice():
            # 200 prefills; the 4 conditions' caches by row selection: (cache from, pending from)
            cache = prefill(model, base + recu)
            rows = torch.tensor(list(range(pairs)) + list(range(pairs, 2 * pairs)) + list(range(pairs, 2 * pairs))
                                + list(range(pairs)), device="cuda")
            for layer in cache.layers:
                layer.keys = layer.keys.index_select(0, rows)
                layer.values = layer.values.index_select(0, rows)
            pending = [p[-1] for p in base] + [p[-1] for p in recu] + [p[-1] for p in base] + [p[-1] for p in recu]
            decode_loop(model, cache, pending, 50, 0.7, sgen)

        t = median_time(prefill_splice, args.repeats)
        add("phase1_prefill_splice", "new_tokens_per_s", 400 * 50 / t, "tok/s",
            "200 prefills, 400-row cache by index_select, one decode loop")
        add("phase1_prefill_splice", "seconds", t, "s")
        add("phase1_prefill_splice", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    # --- R_V with forward hooks ---------------------------------------------------------------
    if want("rv_hooked") or want("forward_plain"):
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

        t = median_time(rv_all, args.repeats)
        for h in handles:
            h.remove()
        add("rv_hooked", "prompts_per_s", 1000 / t, "prompts/s", "batches of 50")
        add("rv_hooked", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")

    # --- forward throughput -------------------------------------------------------------------
    if want("forward_plain"):
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

    # --- batch-1 decode, the fastest way: a static cache, with which generate() compiles the
    # decoding forward itself (torch.compile, CUDA graphs; GenerationConfig.compile_config). A
    # forward compiled by hand on top of it fails in transformers 5.17 ("accessing tensor output
    # of CUDAGraphs that has been overwritten"): generate's own compilation is the way its docs
    # give. Last, as it changes the model's generation config. ----------------------------------
    if want("generate_static_compiled"):
        model.generation_config.cache_implementation = "static"
        x = torch.tensor([tgt], device="cuda")

        def gen_n(n):
            return lambda: model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                          min_new_tokens=n, do_sample=False)

        warm = timed(gen_n(128)) + timed(gen_n(1)) + timed(gen_n(128))
        t128, t1 = [], []
        torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            t128.append(timed(gen_n(128)))
            t1.append(timed(gen_n(1)))
        add("generate_static_compiled", "new_tokens_per_s", 127 / (statistics.median(t128) - statistics.median(t1)),
            "tok/s", "decode only: (128-token generate - 1-token generate) / 127")
        add("generate_static_compiled", "generate_tokens_per_s", 128 / statistics.median(t128), "tok/s", "incl. prefill")
        add("generate_static_compiled", "warmup_s", warm, "s", "compilation and capture, first three calls")
        add("generate_static_compiled", "peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")


if __name__ == "__main__":
    main()
