#!/usr/bin/env python3
"""The HF `tokenizers` side of benchmarks/bench_tokenizer.cpp: Llama-3 tokenizer.json load time and
encode throughput on English prose, medians of repeated runs, one thread unless stated.

    python3 benchmarks/bench_tokenizer_hf.py --tokenizer DIR/tokenizer.json --text prose.txt

Prints one JSON object (and writes it to --json when given) with the same keys as the C++ benchmark.
"""
import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # single-threaded unless asked below
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="Llama-3 tokenizer.json")
    ap.add_argument("--text", required=True, help="UTF-8 English prose")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (default 7)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    mb = len(text.encode("utf-8")) / 1e6

    load_s = median_time(lambda: Tokenizer.from_file(args.tokenizer), args.repeats)
    tok = Tokenizer.from_file(args.tokenizer)
    n_tokens = len(tok.encode(text, add_special_tokens=False).ids)  # also warms the BPE cache
    whole_s = median_time(lambda: tok.encode(text, add_special_tokens=False), args.repeats)

    def per_paragraph():
        for p in paragraphs:
            tok.encode(p, add_special_tokens=False)

    para_s = median_time(per_paragraph, args.repeats)

    # A fresh tokenizer per run measures encoding with a cold word cache.
    def cold():
        t = Tokenizer.from_file(args.tokenizer)
        t0 = time.perf_counter()
        t.encode(text, add_special_tokens=False)
        return time.perf_counter() - t0

    cold_s = statistics.median(cold() for _ in range(max(3, args.repeats // 2)))

    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    batch_s = median_time(lambda: tok.encode_batch(paragraphs, add_special_tokens=False), args.repeats)

    result = {
        "implementation": f"HF tokenizers {tokenizers.__version__} (Python {platform.python_version()})",
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "text_bytes": int(mb * 1e6),
        "paragraphs": len(paragraphs),
        "tokens": n_tokens,
        "repeats": args.repeats,
        "load_ms_median": load_s * 1e3,
        "encode_whole_MBps": mb / whole_s,
        "encode_whole_cold_cache_MBps": mb / cold_s,
        "encode_per_paragraph_MBps": mb / para_s,
        "encode_batch_all_threads_MBps": mb / batch_s,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
