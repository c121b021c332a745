#!/usr/bin/env bash
# Runs mechlens' and transformers' study workloads on this GPU, one after the other, and prints
# one table (benchmarks/compare.py). Needs the build of docs/gpu.md (BUILD_DIR, default build-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
out=${OUT_DIR:-$build/bench}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$build/benchmarks/bench_study" --device cuda --out "$out/mechlens.json" "$@" | tee "$out/mechlens.txt"
PYTHONUNBUFFERED=1 python3 benchmarks/hf_baseline.py --out "$out/hf.json" | tee "$out/hf.txt"
python3 benchmarks/compare.py "$out/mechlens.json" "$out/hf.json" | tee "$out/table.md"
