#!/usr/bin/env bash
# Run on a Debian 12 machine with mechlens' packages installed (scripts/install-deps.sh): copies
# the header-only dependencies a PyTorch-only GPU machine lacks (fmt, xtensor, xtl, Catch2 v2,
# pcre2.h) into .deps/include (git-ignored), to travel with the tree. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/include
for d in fmt xtensor xtl catch2; do cp -r "/usr/include/$d" .deps/include/; done
cp /usr/include/pcre2.h .deps/include/
[ -d /usr/include/xsimd ] && cp -r /usr/include/xsimd .deps/include/ || true
echo "mechlens: header-only dependencies copied to .deps/include" >&2
