#!/usr/bin/env bash
# Runs every libFuzzer target in tests/fuzz for SECONDS each (default 60), two at a time, and
# prints per target: executions, coverage, corpus size, findings. Exits 1 when any target found
# something; the inputs are under build-fuzz/findings/<target>/, to become regression tests.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev; installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
bash scripts/install-deps.sh --tests --fuzz
build=build-fuzz
CXX=clang++ CC=clang cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMECHLENS_BUILD_FUZZERS=ON \
  -DMECHLENS_BUILD_TESTS=OFF -DMECHLENS_BUILD_EXAMPLES=OFF -DMECHLENS_BUILD_BENCHMARKS=OFF -DMECHLENS_INSTALL=OFF >/dev/null
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls tests/fuzz/*.cpp | xargs -n1 basename | sed 's/\.cpp$//'))
cmake --build "$build" --target "${targets[@]}"
# fuzz_encode loads the real Llama vocabularies the tokenizer tests use.
bash tests/tokenizer/fetch_vocabularies.sh >/dev/null
export MECHLENS_TOKENIZER_CACHE=${MECHLENS_TOKENIZER_CACHE:-$HOME/.cache/mechlens/tokenizers}
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1  # LibTorch's process-lifetime allocations
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
run_one() {
  local t=$1 corpus=$build/corpus/$1 findings=$build/findings/$1
  mkdir -p "$corpus" "$findings"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  # -timeout: an input that runs 10 s is a hang; -rss_limit_mb: one that allocates 4 GB is a finding.
  "$build/tests/fuzz/$t" "$corpus" -dict=tests/fuzz/json.dict -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=4096 -max_len=65536 -artifact_prefix="$findings/" -print_final_stats=1 \
    >"$build/$t.log" 2>&1 || true
}
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait
status=0
printf '%-22s %12s %8s %8s %9s\n' target executions cov corpus findings
for t in "${targets[@]}"; do
  log=$build/$t.log
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  corpus=$(ls "$build/corpus/$t" | wc -l)
  found=$(ls "$build/findings/$t" | wc -l)
  printf '%-22s %12s %8s %8s %9s\n' "$t" "${execs:-?}" "${cov:-?}" "$corpus" "$found"
  if [ "$found" -gt 0 ]; then status=1; grep -m3 -E 'ERROR|SUMMARY|terminate|what\(\)' "$log" | sed "s/^/  $t: /"; fi
done
exit $status
