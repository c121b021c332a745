#!/usr/bin/env python3
"""transformers' from_pretrained on a checkpoint folder, timed, beside bench_load.cpp.

    python3 benchmarks/hf_load.py --model /tmp/mechlens-bench/llama3-8b --dtype bfloat16

CUDA is initialised before the clock starts (as bench_load does); each load is synchronised and
the model freed before the next. Prints one JSON object with each load's seconds and the median,
and AutoTokenizer's load time (the fast, Rust tokenizer) where the folder has tokenizer.json.
"""
import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, device_map="cuda")
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del model
        torch.cuda.empty_cache()
    out = {"model": args.model, "dtype": args.dtype, "from_pretrained_s": times,
           "from_pretrained_median_s": statistics.median(times)}
    if os.path.exists(os.path.join(args.model, "tokenizer.json")):
        from transformers import AutoTokenizer
        tok = []
        for _ in range(3):
            t0 = time.perf_counter()
            AutoTokenizer.from_pretrained(args.model)
            tok.append(time.perf_counter() - t0)
        out["tokenizer_s"] = tok
        out["tokenizer_median_s"] = statistics.median(tok)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
