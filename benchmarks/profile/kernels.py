"""Summarises a Kineto trace of profile_decode or profile_phase1: GPU kernels grouped by name, and
by kind (GEMM, attention, sampling, the rest), against the traced span of wall time."""
import collections, json, sys

events = json.load(open(sys.argv[1]))["traceEvents"]
kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
kernels.sort(key=lambda e: e["ts"])
print(f"{len(kernels)} GPU activities, {sum(e['dur'] for e in kernels)/1e3:.2f} ms busy in total")
# Split into graph-launched and eagerly launched kernels where the trace says so.
by = collections.defaultdict(lambda: [0, 0.0])
for e in kernels:
    graph = "graph" if e.get("args", {}).get("graph id") or e.get("args", {}).get("graph node id") else "eager"
    k = (graph, e["name"][:90])
    by[k][0] += 1
    by[k][1] += e["dur"]
for graph in ("eager", "graph"):
    rows = sorted(((v[1], v[0], k[1]) for k, v in by.items() if k[0] == graph), reverse=True)
    total = sum(r[0] for r in rows)
    count = sum(r[1] for r in rows)
    print(f"\n== {graph}: {count} kernels, {total/1e3:.2f} ms GPU time")
    for dur, n, name in rows[:40]:
        print(f"{dur/1e3:9.3f} ms {n:6d}x {dur/max(n,1):8.2f} us  {name}")


def kind(name):
    n = name.lower()
    if any(k in n for k in ("gemm", "gemv", "cutlass", "xmma", "nvjet", "matvec", "cublas")):
        return "GEMM / matrix-vector"
    if any(k in n for k in ("flash", "fmha", "attention", "efficient")):
        return "attention"
    if any(k in n for k in ("multinomial", "sort", "topk", "exponential", "argmax", "cumsum", "distribution")):
        return "sampling"
    if "memcpy" in n or "memset" in n:
        return "copies"
    return "other (norms, rotary, elementwise, softmax, index)"


totals = collections.defaultdict(float)
for e in kernels:
    totals[kind(e["name"])] += e["dur"]
span = (kernels[-1]["ts"] + kernels[-1]["dur"] - kernels[0]["ts"]) if kernels else 0
print(f"\n== by kind (first kernel start to last kernel end: {span/1e3:.2f} ms)")
for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"{v/1e3:9.3f} ms  {100 * v / max(span, 1):5.1f} % of the span  {k}")
busy = sum(totals.values())
print(f"{busy/1e3:9.3f} ms  {100 * busy / max(span, 1):5.1f} % busy; idle (host-bound gaps) {(span - busy)/1e3:.3f} ms")
