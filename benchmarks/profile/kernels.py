"""Summarises a Kineto trace of profile_decode: GPU kernels per decoding step, grouped by name."""
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
