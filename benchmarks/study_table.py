#!/usr/bin/env python3
"""The table of benchmarks/run_study_benchmarks.sh: loads (loads.jsonl) and whole programs
(programs.tsv), as Markdown, with the ratio of mechlens' load to transformers' on the same files.

    python3 benchmarks/study_table.py OUT_DIR
"""
import csv
import json
import os
import sys


def main():
    out = sys.argv[1]
    loads = [json.loads(line) for line in open(os.path.join(out, "loads.jsonl")) if line.strip()]
    hf = {(os.path.basename(r["model"]), r["dtype"]): r for r in loads if "from_pretrained_s" in r}
    ml = {(os.path.basename(r["model"]), r["dtype"]): r for r in loads if "staged_s" in r}
    print("| checkpoint | dtype | GB | mechlens load_model (median) | GB/s | plain per-tensor path | transformers "
          "from_pretrained (median) | mechlens / transformers | peak GPU memory over the weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(ml):
        m, h = ml[key], hf.get(key, {})
        hs = h.get("from_pretrained_median_s")
        ratio = f"{m['staged_median_s'] / hs:.2f}" if hs else "-"
        print(f"| {key[0]} | {key[1]} | {m['checkpoint_gb']:.2f} | {m['staged_median_s']:.2f} s | "
              f"{m['staged_gb_per_s']:.1f} | {m.get('plain_s', float('nan')):.2f} s | "
              f"{hs:.2f} s | {ratio} | {m['staged_peak_over_weights_gib']:.2f} GiB |" if hs else
              f"| {key[0]} | {key[1]} | {m['checkpoint_gb']:.2f} | {m['staged_median_s']:.2f} s | "
              f"{m['staged_gb_per_s']:.1f} | {m.get('plain_s', float('nan')):.2f} s | - | - | "
              f"{m['staged_peak_over_weights_gib']:.2f} GiB |")
    print()
    print("| checkpoint | tokenizer.json load: mechlens (median) | transformers AutoTokenizer (median) |")
    print("|---|---|---|")
    for key in sorted(ml):
        if key[1] != "bfloat16" or "tokenizer_median_s" not in ml[key]:
            continue
        h = hf.get(key, {}).get("tokenizer_median_s")
        print(f"| {key[0]} | {ml[key]['tokenizer_median_s']:.3f} s | {h:.3f} s |" if h else
              f"| {key[0]} | {ml[key]['tokenizer_median_s']:.3f} s | - |")
    print()
    print("| checkpoint | whole process | seconds | exit |")
    print("|---|---|---|---|")
    with open(os.path.join(out, "programs.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            print(f"| {row['model']} | `{row['program']}` | {float(row['seconds']):.1f} | {row['exit']} |")


if __name__ == "__main__":
    main()
