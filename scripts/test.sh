#!/usr/bin/env bash
# The README's second command (and CI's): installs what is missing, builds everything and runs the
# whole test suite through ctest. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --tests
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
cd build
# Two tests at a time (the suite already runs -j 8 on the GPU machine): the long ones
# (headers_compile_alone, experiments, cli, consumers) overlap instead of queueing.
ctest --output-on-failure -j 2 --timeout 1500
