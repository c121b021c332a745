#!/usr/bin/env bash
# Whole-study timings on this GPU: loading (mechlens' load_model beside transformers'
# from_pretrained, bf16 and float32), the tokenizer, and every DEC7 program and dec7_study end to
# end as whole processes, on Llama-3-8B- and Mistral-7B-shaped checkpoints saved to disk by
# transformers (benchmarks/make_checkpoints.py: random bf16 weights, the real tokenizer files).
# Files are read from the page cache (each checkpoint is read once before it is timed).
#
#   BUILD_DIR=build-gpu TOKENIZERS=.deps/tokenizers benchmarks/run_study_benchmarks.sh
#
# Needs the CUDA build of docs/gpu.md (its mechlens, dec7_* and bench_load), ~32 GB of disk under
# WORK_DIR, and TOKENIZERS holding llama3/ and llama2/ (tests/tokenizer/fetch_vocabularies.sh
# fetches them; copy them next to the tree to carry them). Writes OUT_DIR/{log.txt, loads.jsonl,
# programs.tsv, table.md}; benchmarks/study_table.py makes the table.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
work=${WORK_DIR:-/tmp/mechlens-bench}
out=${OUT_DIR:-$build/bench-study}
tok=${TOKENIZERS:-.deps/tokenizers}
n=${N:-100}
models=${MODELS:-llama3-8b mistral-7b}
# The checkpoints every separate program and the float32 loads run on (the others: bf16 loads and
# dec7_study only), to fit a short lease.
full=${FULL_MODELS:-$models}
programs=${PROGRAMS:-dec7_kv_transfer dec7_layer_sweep dec7_single_pass dec7_rv dec7_positions}
# The dtypes the full checkpoints are loaded in, and extra bench_load flags (e.g. --no-plain to skip
# the slow per-tensor reference path, to fit a short lease).
full_dtypes=${LOAD_DTYPES:-bfloat16 float32}
bench_load_flags=${BENCH_LOAD_FLAGS:-}
mkdir -p "$work" "$out"
: > "$out/loads.jsonl"
printf 'model\tprogram\tseconds\texit\n' > "$out/programs.tsv"
log() { echo "$@" | tee -a "$out/log.txt"; }

log "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
log "$(nproc) CPU cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
PYTHONUNBUFFERED=1 python3 benchmarks/make_checkpoints.py --out "$work" --tokenizers "$tok" --only $models | tee -a "$out/log.txt"

# One whole process, timed by the wall clock; its output goes to the log.
timed() {
  local model=$1 name=$2; shift 2
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" >> "$out/log.txt" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  printf '%s\t%s\t%.2f\t%d\n' "$model" "$name" "$(awk "BEGIN{print $t1 - $t0}")" "$rc" | tee -a "$out/programs.tsv"
}

for m in $models; do
  dir="$work/$m"
  cat "$dir"/*.safetensors > /dev/null  # into the page cache
  log "== $m"
  dtypes=bfloat16
  [[ " $full " == *" $m "* ]] && dtypes=$full_dtypes
  for dtype in $dtypes; do
    PYTHONUNBUFFERED=1 python3 benchmarks/hf_load.py --model "$dir" --dtype "$dtype" | tee -a "$out/loads.jsonl"
    # shellcheck disable=SC2086
    "$build/benchmarks/bench_load" --model "$dir" --device cuda --dtype "$dtype" $bench_load_flags | tee -a "$out/loads.jsonl"
  done
  runs="$work/runs/$m"
  rm -rf "$runs"
  common=(--model "$dir" --device cuda --dtype bfloat16 --progress off)
  if [[ " $full " == *" $m "* ]]; then
    timed "$m" "mechlens forward --ids 1,2,3 (load + 1 forward, bf16)" \
      "$build/examples/cli/mechlens" forward --model "$dir" --device cuda --dtype bfloat16 --ids 1,2,3 --out "$work/forward.safetensors"
    timed "$m" "mechlens forward --ids 1,2,3 (float32)" \
      "$build/examples/cli/mechlens" forward --model "$dir" --device cuda --dtype float32 --ids 1,2,3 --out "$work/forward.safetensors"
    timed "$m" "mechlens tokenize (one text)" \
      "$build/examples/cli/mechlens" tokenize --tokenizer "$dir" --text "observe the observer"
    timed "$m" "python: import transformers + from_pretrained (bf16)" \
      python3 -c "import torch, transformers; transformers.AutoModelForCausalLM.from_pretrained('$dir', dtype=torch.bfloat16, device_map='cuda'); torch.cuda.synchronize()"
    timed "$m" "dec7_kv_transfer --n 2 (almost only loading)" "$build/examples/dec7/dec7_kv_transfer" "${common[@]}" \
      --n 2 --out "$runs/p1-n2"
    for prog in $programs; do
      timed "$m" "$prog --n $n" "$build/examples/dec7/$prog" "${common[@]}" --n "$n" --out "$runs/$prog"
    done
  fi
  if [ -x "$build/examples/dec7/dec7_study" ]; then
    timed "$m" "dec7_study --n $n (every phase)" "$build/examples/dec7/dec7_study" "${common[@]}" --n "$n" --out "$runs/study"
  fi
done
python3 benchmarks/study_table.py "$out" | tee "$out/table.md"
