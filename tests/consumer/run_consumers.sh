#!/usr/bin/env bash
# Installs mechlens into a temporary prefix, then builds and runs the two consumer projects
# (find_package and add_subdirectory) on a reference checkpoint. Extra CMake arguments (the GPU
# recipe's -DMECHLENS_EXTRA_INCLUDE=..., -DCMAKE_PREFIX_PATH=...) are passed to every configure.
set -euo pipefail
src=$1; bin=$2; model=$3; shift 3
work=$bin/consumer-test
rm -rf "$work"; mkdir -p "$work"
cmake --install "$bin" --prefix "$work/prefix" > "$work/install.log" 2>&1 || { tail -n 20 "$work/install.log" >&2; exit 1; }
prefix_path="$work/prefix"
for arg in "$@"; do case $arg in -DCMAKE_PREFIX_PATH=*) prefix_path="$prefix_path;${arg#-DCMAKE_PREFIX_PATH=}";; esac; done
extra=(); for arg in "$@"; do case $arg in -DCMAKE_PREFIX_PATH=*) ;; *) extra+=("$arg");; esac; done
# On failure, show the end of the step's log (configure and build output go to files).
step() { local log=$1; shift; "$@" >> "$log" 2>&1 || { echo "consumer step failed: $*" >&2; tail -n 40 "$log" >&2; exit 1; }; }
step "$work/fp.log" cmake -S "$src/tests/consumer/find_package" -B "$work/fp" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_PREFIX_PATH=$prefix_path" "${extra[@]}"
step "$work/fp.log" cmake --build "$work/fp"
"$work/fp/consumer" "$model"
step "$work/as.log" cmake -S "$src/tests/consumer/add_subdirectory" -B "$work/as" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "-DMECHLENS_SOURCE=$src" "-DCMAKE_PREFIX_PATH=$prefix_path" "${extra[@]}"
step "$work/as.log" cmake --build "$work/as"
"$work/as/consumer" "$model"
