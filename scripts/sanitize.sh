#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the tests of the layers where files and
# arguments come in (io, tokenizer, hooks, interventions, experiments, with the DEC7 programs the
# experiments tests run), and those tests. Run by .ci/run after the README's test command.
# Debian's LibTorch is not instrumented: what it leaks for the life of the process is suppressed
# (tests/sanitizers/lsan.supp); everything in mechlens' headers and the tests is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --tests
build=${MECHLENS_SANITIZE_BUILD:-build-sanitize}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
  -DMECHLENS_SANITIZE=address,undefined -DMECHLENS_BUILD_BENCHMARKS=OFF
targets=(test_io test_tokenizer test_hooks test_interventions test_experiments
         dec7_demo dec7_kv_transfer dec7_layer_sweep dec7_single_pass dec7_rv dec7_positions dec7_attribution
         dec7_blind_rating)
cmake --build "$build" --target "${targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export LSAN_OPTIONS=suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=suppressions=$PWD/tests/sanitizers/ubsan.supp:print_stacktrace=1:halt_on_error=1
cd "$build"
ctest --output-on-failure -j 2 --timeout 1500 -R '^(tokenizer_vocabularies|io|tokenizer|hooks|interventions|experiments)$'
