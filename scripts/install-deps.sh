#!/usr/bin/env bash
# Installs the Debian 12 packages mechlens needs (as root). Safe to run again: apt skips what is there.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libtorch-dev libopenblas0-pthread libfmt-dev catch2 xtensor-dev nlohmann-json3-dev
      libpcre2-dev libboost-math-dev libcli11-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "mechlens: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
