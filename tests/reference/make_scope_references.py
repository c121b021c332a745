#!/usr/bin/env python3
"""Interventions in each generation scope, recorded from transformers' own generate() with hooks.

For each checkpoint named on the command line (tests/data/models/<name>/) this loads the model in
float32 with eager attention (as make_model_reference.py does), and writes scopes.json beside it:
greedy generations under an intervention that acts in one scope, made with PyTorch forward hooks
on transformers' modules during model.generate(). transformers' generate runs the whole prompt in
its first forward (step 0) and then one forward per generated token (step g feeds the g-th
generated token), so a scope is which forwards, and which positions in them, a hook changes:

  prompt     the first forward only (every prompt token)
  generated  every later forward
  both       every forward
  steps a:b  forwards a..b-1

The cases (L = a middle layer, h = KV head / query head 1; every vector and prompt is seeded):

  resid_patch_prompt       the decoder layer L's output replaced by a source prompt's of the same
                           length, scope prompt, exact alignment
  resid_patch_right_long   the same from a source 3 tokens longer, right-aligned
  resid_patch_right_short  the same from a source 3 tokens shorter, right-aligned (the target's
                           first 3 tokens keep their own values)
  v_patch_last2            v_proj's output at the prompt's last 2 positions only (the pending token
                           is one of them), from a same-length source
  resid_patch_both         layer L's output replaced over the prompt AND the generated tokens by a
                           source's generation (the source prompt, greedily continued, run as one
                           sequence: position n-1+g is its g-th generated token)
  steer_prompt / steer_generated / steer_both / steer_steps_2_4
                           scale × v added to layer L's output in that scope
  zero_head_generated      query head 1's slice of o_proj's input zeroed on generated tokens

Each record holds the target and source ids, the intervention's parameters, new_ids (greedy, no
stop at eos) and margins (top-1 minus top-2 logit of each step, from generate's raw logits).
"plain" (no intervention) also holds hidden_generated: layer L's output at each generated token
generate() feeds (forwards 1..N-1), what an activation cache over the generated tokens records.
The run checks itself: a scope that leaves the prompt alone gives the unpatched first token, the
prompt scope changes the first token's logits, and the last generated token of the source feeds
nothing (the source sequence holds n + N - 1 positions).

    python3 tests/reference/make_scope_references.py tests/data/models llama_gqa_llama3 llama_tied mistral_swa qwen2_bias
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_reference as ref  # noqa: E402

N_NEW = 8
PROMPT = 9
SCALE = 2.0


def layer_output(o):
    return o[0] if isinstance(o, tuple) else o


def with_output(o, new):
    return (new,) + tuple(o[1:]) if isinstance(o, tuple) else new


class StepCounter:
    """Counts generate()'s forwards: step 0 is the prompt, g the g-th generated token."""

    def __init__(self, model):
        self.step = -1
        self.handle = model.register_forward_pre_hook(self._tick)

    def _tick(self, module, args, kwargs=None):
        self.step += 1

    def remove(self):
        self.handle.remove()


def in_steps(step, steps):
    a, b = steps
    return a <= step < (b if b is not None else 1 << 62)


SCOPES = {"prompt": (0, 1), "generated": (1, None), "both": (0, None)}


@torch.no_grad()
def generate(model, ids, install=None):
    """Greedy generate() of N_NEW tokens under the hooks `install(counter)` attaches."""
    counter = StepCounter(model)
    handles = install(counter) if install else []
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                         do_sample=False, output_logits=True, return_dict_in_generate=True, eos_token_id=None,
                         pad_token_id=0)
    for h in handles:
        h.remove()
    counter.remove()
    ref.check(counter.step == N_NEW - 1, f"generate ran {counter.step + 1} forwards for {N_NEW} tokens")
    new = out.sequences[0, len(ids):].tolist()
    margins = []
    for logits in out.logits:
        top = torch.topk(logits[0].float(), 2)
        margins.append(float(top.values[0] - top.values[1]))
    return new, margins, [l[0].float() for l in out.logits]


@torch.no_grad()
def generated_hidden(model, ids, L):
    """Decoder layer L's output at each generated token generate() feeds (forwards 1..N-1), as an
    activation cache over the generated tokens records it."""
    rows = []

    def install(counter):
        def hook(m, a, o):
            if counter.step >= 1:
                rows.append(layer_output(o)[0, -1].tolist())
            return None

        return [model.model.layers[L].register_forward_hook(hook)]

    generate(model, ids, install)
    ref.check(len(rows) == N_NEW - 1, f"recorded {len(rows)} generated tokens, expected {N_NEW - 1}")
    return rows


@torch.no_grad()
def hidden_after(model, ids, L):
    """Decoder layer L's output over the whole sequence (one forward)."""
    return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[L + 1][0]


@torch.no_grad()
def v_proj_output(model, ids, L):
    store = {}
    h = model.model.layers[L].self_attn.v_proj.register_forward_hook(lambda m, a, o: store.__setitem__("v", o))
    model(input_ids=torch.tensor([ids]))
    h.remove()
    return store["v"][0]


def resid_replace(model, L, steps, source_at):
    """Replaces layer L's output: in step 0 position j gets source_at(j) (None: kept); in step g the
    one new token gets source_at(n - 1 + g)."""

    def install(counter):
        def hook(m, a, o):
            if not in_steps(counter.step, steps):
                return None
            hs = layer_output(o).clone()
            n = hs.shape[1]
            for j in range(n):
                col = j if counter.step == 0 else PROMPT - 1 + counter.step
                src = source_at(col)
                if src is not None:
                    hs[0, j] = src
            return with_output(o, hs)

        return [model.model.layers[L].register_forward_hook(hook)]

    return install


def steer(model, L, steps, vec):
    def install(counter):
        def hook(m, a, o):
            if not in_steps(counter.step, steps):
                return None
            return with_output(o, layer_output(o) + SCALE * vec)

        return [model.model.layers[L].register_forward_hook(hook)]

    return install


def run(models_dir, name):
    spec = next(s for s in ref.SPECS if s["name"] == name)
    path = os.path.join(models_dir, name)
    model = ref.load_reference_model(spec, path)
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    L = n_layers // 2
    H = cfg.num_attention_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    gen = torch.Generator().manual_seed(20261204 + sum(map(ord, name)))
    target = ref.rand_ids(gen, PROMPT)
    source = ref.rand_ids(gen, PROMPT)
    longer = ref.rand_ids(gen, PROMPT + 3)
    shorter = ref.rand_ids(gen, PROMPT - 3)
    vec = torch.randn(cfg.hidden_size, generator=gen)

    plain_new, plain_margins, plain_logits = generate(model, target)
    plain_hidden = generated_hidden(model, target, L)
    cases = []

    def add(case, install, **params):
        new, margins, logits = generate(model, target, install)
        rec = {"case": case, "target_ids": target, "new_ids": new, "margins": margins, "layer": L}
        rec.update(params)
        cases.append(rec)
        return new, logits

    src_h = hidden_after(model, source, L)
    new, logits = add("resid_patch_prompt", resid_replace(model, L, SCOPES["prompt"], lambda c: src_h[c] if c < PROMPT else None),
                      hook=f"blocks.{L}.hook_resid_post", scope="prompt", align="exact", source_ids=source)
    ref.check(not torch.allclose(logits[0], plain_logits[0]), f"{name}: a prompt-scope patch changes the first token's logits")

    long_h = hidden_after(model, longer, L)
    add("resid_patch_right_long",
        resid_replace(model, L, SCOPES["prompt"], lambda c: long_h[c + 3] if c < PROMPT else None),
        hook=f"blocks.{L}.hook_resid_post", scope="prompt", align="right", source_ids=longer)
    short_h = hidden_after(model, shorter, L)
    add("resid_patch_right_short",
        resid_replace(model, L, SCOPES["prompt"], lambda c: short_h[c - 3] if 3 <= c < PROMPT else None),
        hook=f"blocks.{L}.hook_resid_post", scope="prompt", align="right", source_ids=shorter)

    src_v = v_proj_output(model, source, L)

    def v_last2(counter):
        def hook(m, a, o):
            if counter.step != 0:
                return None
            o = o.clone()
            o[0, PROMPT - 2:] = src_v[PROMPT - 2:]
            return o

        return [model.model.layers[L].self_attn.v_proj.register_forward_hook(hook)]

    add("v_patch_last2", v_last2, hook=f"blocks.{L}.attn.hook_v", scope="prompt", align="exact", positions_last=2,
        source_ids=source)

    # The source's own generation, run as one sequence: what an accumulating activation cache of
    # that generation holds (the last generated token is never fed back).
    src_new, _, _ = generate(model, source)
    src_seq = source + src_new[:-1]
    seq_h = hidden_after(model, src_seq, L)
    ref.check(seq_h.shape[0] == PROMPT + N_NEW - 1, f"{name}: the source sequence holds n + N - 1 positions")
    add("resid_patch_both", resid_replace(model, L, SCOPES["both"], lambda c: seq_h[c]),
        hook=f"blocks.{L}.hook_resid_post", scope="both", align="exact", source_ids=source, source_new_ids=src_new)

    for scope, steps in (("prompt", SCOPES["prompt"]), ("generated", SCOPES["generated"]), ("both", SCOPES["both"]),
                         ("steps 2:4", (2, 4))):
        case = "steer_" + scope.replace(" ", "_").replace(":", "_")
        new, logits = add(case, steer(model, L, steps, vec), hook=f"blocks.{L}.hook_resid_post", scope=scope,
                          vector=vec.tolist(), scale=SCALE)
        if steps[0] >= 1:
            ref.check(torch.equal(logits[0], plain_logits[0]),
                      f"{name}: {scope} steering leaves the first token's logits as they were")
        else:
            ref.check(not torch.allclose(logits[0], plain_logits[0]), f"{name}: {scope} steering changes the first token")

    head = 1

    def zero_head(counter):
        def pre(m, a):
            if counter.step < 1:
                return None
            z = a[0].clone()
            z[..., head * dh:(head + 1) * dh] = 0
            return (z,) + tuple(a[1:])

        return [model.model.layers[L].self_attn.o_proj.register_forward_pre_hook(pre)]

    new, logits = add("zero_head_generated", zero_head, hook=f"blocks.{L}.attn.hook_z", scope="generated", head=head)
    ref.check(torch.equal(logits[0], plain_logits[0]), f"{name}: a generated-scope ablation leaves the first token alone")

    out = {
        "notes": [
            "transformers generate(), greedy, float32, eager attention, N new tokens, no stop at eos.",
            "Scopes: prompt = generate's first forward (the whole prompt); generated = every later forward; "
            "steps a:b = forwards a..b-1.",
            "margins[k] = top-1 minus top-2 raw logit at the step that produced new_ids[k].",
            "resid_patch_both's source is source_ids + source_new_ids[:-1] run as one sequence.",
        ],
        "torch": torch.__version__,
        "transformers": ref.transformers.__version__,
        "plain": {"target_ids": target, "new_ids": plain_new, "margins": plain_margins, "layer": L,
                  "hidden_generated": plain_hidden},
        "cases": cases,
    }
    with open(os.path.join(path, "scopes.json"), "w") as f:
        json.dump(out, f, indent=1)
    changed = sum(c["new_ids"] != plain_new for c in cases)
    print(f"{name}: {len(cases)} cases, {changed} change the greedy tokens; smallest margin "
          f"{min(min(c['margins']) for c in cases):.4f}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(f"torch {torch.__version__}, transformers {ref.transformers.__version__}")
    torch.set_num_threads(4)
    for name in sys.argv[2:]:
        run(sys.argv[1], name)
    sys.exit(1 if ref.FAILURES else 0)


if __name__ == "__main__":
    main()
