#!/usr/bin/env python3
"""Draws a DEC7 phase's figure from its summary.csv with matplotlib, for those who restyle.

    python3 scripts/plot_dec7.py RUN/phase1/summary.csv --out phase1.pdf [--title TEXT]

The panels are those of figure.svg (docs/experiments.md): the behaviour score of each condition
with its 95 % CI, and the % transfer of each contrast that has one, with its CI and its test —
***/**/*/ns from the family's adjusted p (or the plain p), "vs B" where the efficiency is measured
from another condition than the one tested against, "=" where both conditions scored alike on
every pair (no test), and no bar where the efficiency is withheld (no natural gap). The output
format follows --out's suffix (.pdf, .png, .svg). Needs matplotlib (python3-matplotlib), which
mechlens itself does not.
"""

import argparse
import csv
import math
import sys


def number(text):
    return float(text) if text not in ("", None) else math.nan


def stars(p):
    if math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"kind", "name", "mean", "mean_ci_low", "mean_ci_high", "transfer_efficiency", "te_ci_low", "te_ci_high"}
    if not rows or not need <= set(rows[0]):
        sys.exit(f"{path}: not a mechlens summary.csv (expected the columns {', '.join(sorted(need))})")
    return rows


def error_bars(values, lows, highs):
    """matplotlib's yerr: distances below and above, 0 where the CI is undefined."""
    below = [v - lo if not (math.isnan(lo) or math.isnan(v)) else 0.0 for v, lo in zip(values, lows)]
    above = [hi - v if not (math.isnan(hi) or math.isnan(v)) else 0.0 for v, hi in zip(values, highs)]
    return [below, above]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", help="a phase's summary.csv")
    ap.add_argument("--out", required=True, help="figure file: .pdf, .png or .svg")
    ap.add_argument("--title", default=None, help="figure title (default: the summary's folder)")
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_dec7.py needs matplotlib: apt-get install python3-matplotlib (or pip install matplotlib)")

    rows = read(args.summary)
    conditions = [r for r in rows if r["kind"] == "condition"]
    contrasts = [r for r in rows if r["kind"] == "contrast" and r["transfer_efficiency"] != ""]
    withheld = [r for r in rows if r["kind"] == "contrast" and r.get("no_natural_gap") == "true"]
    panels = [p for p in (conditions, contrasts + withheld) if p]
    if not panels:
        sys.exit(f"{args.summary}: no conditions or transfers to plot")

    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.55 * max(len(p) for p in panels) + 2), 4.2 * len(panels)),
                             squeeze=False)
    ax_i = 0
    if conditions:
        ax = axes[ax_i][0]
        ax_i += 1
        means = [number(r["mean"]) for r in conditions]
        ax.bar(range(len(conditions)), means, color="#4C72B0",
               yerr=error_bars(means, [number(r["mean_ci_low"]) for r in conditions],
                               [number(r["mean_ci_high"]) for r in conditions]), capsize=3)
        ax.set_xticks(range(len(conditions)))
        ax.set_xticklabels([r["name"] for r in conditions], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("behaviour score (95% CI)")
        ax.set_title("score by condition", fontsize=10)
    if contrasts or withheld:
        ax = axes[ax_i][0]
        shown = contrasts + withheld
        values = [100 * number(r["transfer_efficiency"]) if r in contrasts else 0.0 for r in shown]
        lows = [100 * number(r["te_ci_low"]) if r in contrasts else math.nan for r in shown]
        highs = [100 * number(r["te_ci_high"]) if r in contrasts else math.nan for r in shown]
        ax.bar(range(len(shown)), values, color=["#DD8452" if r in contrasts else "none" for r in shown],
               yerr=error_bars(values, lows, highs), capsize=3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
        corrected = ""
        for i, r in enumerate(shown):
            if r in withheld:
                note = "n/a: no natural gap"
            elif r.get("identical") == "true":
                note = "="
            else:
                p = number(r["p_adjusted"]) if r["p_adjusted"] != "" else number(r["p"])
                if r["p_adjusted"] != "" and r["correction"]:
                    corrected = r["correction"]
                note = stars(p)
                if note and r.get("te_baseline") and r["b"] != r["te_baseline"]:
                    note += " vs " + r["b"]
            top = highs[i] if not math.isnan(highs[i]) else values[i]
            ax.annotate(note, (i, max(top, values[i], 0.0)), textcoords="offset points", xytext=(0, 3), ha="center",
                        fontsize=8)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([r["name"] for r in shown], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("% transfer (95% CI)")
        ax.set_title("% transfer by contrast", fontsize=10)
        test = "paired t-test" + (f", {corrected}-adjusted across the family" if corrected else "")
        ax.text(0, -0.42, f"*** p < 0.001, ** p < 0.01, * p < 0.05, ns: not significant ({test})\n"
                "\"vs B\": tested against B; =: the two conditions scored alike on every pair (no test)",
                transform=ax.transAxes, fontsize=7, va="top", wrap=True)
    fig.suptitle(args.title if args.title is not None else args.summary.rsplit("/", 2)[-2], fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out} ({len(conditions)} conditions, {len(contrasts)} transfers, {len(withheld)} withheld)")


if __name__ == "__main__":
    main()
