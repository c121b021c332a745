#!/usr/bin/env python3
"""Expected values for mechlens' metrics tests, computed with scipy and numpy.

Usage: python3 tests/reference/make_stats_reference.py OUT_DIR

Writes three JSON files into OUT_DIR (copy them into tests/data/stats/):

* stats_reference.json     descriptive statistics, effect sizes, t-tests, Wilcoxon signed-rank,
                           Mann-Whitney U, Spearman, Pearson, paired permutation test, Holm and
                           Benjamini-Hochberg, the study's sanity numbers.
* bootstrap_reference.json the resample indices a seeded numpy Generator draws (the same draws
                           scipy.stats.bootstrap makes with that seed) and the percentile and BCa
                           intervals, both from scipy.stats.bootstrap and from a plain numpy
                           re-implementation of its formulas on those indices.
* pr_reference.json        participation ratio, effective rank and R_V of fixed matrices from
                           numpy.linalg.svd in float64, centred and not.

Every float is written with repr() (shortest round-trip form), NaN as null. Each section is
computed inside its own try block; a failure is recorded under "errors" instead of aborting, so
one run on a machine with another scipy version still returns everything else. The samples are
generated from fixed numpy seeds and written into the JSON, so the C++ tests read exactly the
numbers scipy saw.
"""

import json
import math
import os
import sys
import traceback

import numpy as np
import scipy
from scipy import special, stats

ALTERNATIVES = ["two-sided", "less", "greater"]
ERRORS = []


def fl(v):
    """A float (or None for NaN / missing) ready for JSON."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def flist(a):
    return [fl(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def record_error(where):
    ERRORS.append({"where": where, "error": traceback.format_exc()})
    print("ERROR in", where, file=sys.stderr)
    traceback.print_exc()


def scipy_at_least(major, minor):
    parts = scipy.__version__.split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------

def paired_cases():
    rng = np.random.default_rng(20240607)
    cases = []

    # Continuous, no ties, small n: exact Wilcoxon.
    x = rng.normal(5.0, 2.0, 8)
    y = x - rng.normal(0.8, 1.5, 8)
    cases.append(("small_normal_n8", x, y))

    x = rng.normal(0.0, 1.0, 5)
    y = rng.normal(0.3, 1.0, 5)
    cases.append(("tiny_n5", x, y))

    # Continuous, n = 30 (still exact under scipy's auto rule, n <= 50).
    x = rng.normal(10.0, 3.0, 30)
    y = x + rng.normal(-0.5, 2.0, 30)
    cases.append(("medium_normal_n30", x, y))

    # Continuous, n = 60 (auto: normal approximation, no ties).
    x = rng.gamma(2.0, 1.5, 60)
    y = rng.gamma(2.0, 1.2, 60)
    cases.append(("gamma_n60", x, y))

    # Behaviour-score-like: multiples of 0.5, many zeros, ties and zero differences, n = 12.
    x = np.round(rng.exponential(2.0, 12) * 2) / 2
    y = np.round(rng.exponential(1.0, 12) * 2) / 2
    y[0] = x[0]
    y[5] = x[5]
    cases.append(("ties_zeros_n12", x, y))

    # Ties without zero differences, n = 10 (auto: exact permutation of signs).
    d = np.array([1.0, -1.0, 2.0, 2.0, 3.0, -0.5, 1.0, 4.0, 2.0, -3.0])
    y = np.round(rng.normal(3.0, 1.0, 10), 1)
    x = y + d
    cases.append(("ties_no_zeros_n10", x, y))

    # Ties and zeros, n = 20 (auto: normal approximation with tie correction).
    x = np.round(rng.normal(2.0, 1.5, 20))
    y = np.round(rng.normal(1.5, 1.5, 20))
    cases.append(("integer_ties_n20", x, y))

    # The study's shape: n = 100 pairs, baseline mostly zero, patched skewed with a long tail.
    base = np.where(rng.random(100) < 0.8, 0.0, np.round(rng.exponential(2.0, 100), 2))
    patched = np.where(rng.random(100) < 0.35, 0.0, np.round(rng.exponential(6.0, 100), 2))
    cases.append(("study_like_n100", patched, base))

    # Skewed, large n, no ties (lognormal).
    x = rng.lognormal(0.0, 1.0, 200)
    y = rng.lognormal(0.15, 1.0, 200)
    cases.append(("lognormal_n200", x, y))
    return cases


def independent_cases():
    rng = np.random.default_rng(777)
    cases = []
    cases.append(("small_5_7", rng.normal(0.0, 1.0, 5), rng.normal(1.0, 1.0, 7)))
    cases.append(("exact_8_12", rng.normal(2.0, 1.0, 8), rng.normal(1.2, 1.0, 12)))
    cases.append(("ties_6_9", np.round(rng.normal(3.0, 1.0, 6)), np.round(rng.normal(2.0, 1.0, 9))))
    cases.append(("skewed_40_55", rng.exponential(2.0, 40), rng.exponential(3.0, 55)))
    cases.append(("unequal_var_10_30", rng.normal(0.0, 0.5, 10), rng.normal(0.4, 3.0, 30)))
    cases.append(("exact_3_200", rng.normal(1.0, 1.0, 3), rng.normal(0.0, 1.0, 200)))
    base = np.where(rng.random(50) < 0.8, 0.0, np.round(rng.exponential(2.0, 50), 1))
    rec = np.where(rng.random(50) < 0.2, 0.0, np.round(rng.exponential(6.0, 50), 1))
    cases.append(("study_like_ties_50_50", rec, base))
    return cases


def correlation_cases():
    rng = np.random.default_rng(4242)
    cases = []
    x = rng.normal(0.0, 1.0, 10)
    cases.append(("continuous_n10", x, 0.6 * x + rng.normal(0.0, 1.0, 10)))
    x = rng.normal(0.0, 1.0, 5)
    cases.append(("tiny_n5", x, -x + rng.normal(0.0, 0.8, 5)))
    x = np.round(rng.normal(0.0, 2.0, 30))
    cases.append(("ties_n30", x, np.round(x + rng.normal(0.0, 2.0, 30))))
    x = rng.exponential(1.0, 100)
    cases.append(("skewed_n100", x, np.exp(-x) + rng.normal(0.0, 0.2, 100)))
    # R_V against behaviour: a negative dose-response.
    rv = rng.uniform(0.4, 1.1, 50)
    score = np.maximum(0.0, np.round(8.0 * (1.1 - rv) + rng.normal(0.0, 1.5, 50), 1))
    cases.append(("rv_vs_score_n50", rv, score))
    return cases


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

def descriptive(x):
    x = np.asarray(x, dtype=np.float64)
    return {"mean": fl(np.mean(x)), "sd": fl(np.std(x, ddof=1)), "sem": fl(stats.sem(x))}


def effect_sizes(x, y, paired):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n1, n2 = len(x), len(y)
    m1, m2 = np.mean(x), np.mean(y)
    v1, v2 = np.var(x, ddof=1), np.var(y, ddof=1)
    out = {}
    out["cohen_d_average"] = fl((m1 - m2) / np.sqrt((v1 + v2) / 2.0))
    sp = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    d_pooled = (m1 - m2) / sp
    out["cohen_d_pooled"] = fl(d_pooled)
    df = n1 + n2 - 2
    j = np.exp(special.gammaln(df / 2.0) - np.log(np.sqrt(df / 2.0)) - special.gammaln((df - 1) / 2.0))
    out["hedges_correction"] = fl(j)
    out["hedges_g"] = fl(j * d_pooled)
    if paired:
        d = x - y
        out["cohen_dz"] = fl(np.mean(d) / np.std(d, ddof=1))
    return out


def ttest_dict(res):
    d = {"statistic": fl(res.statistic), "p_value": fl(res.pvalue)}
    df = getattr(res, "df", None)
    d["df"] = fl(df) if df is not None else None
    return d


def wilcoxon_method(name):
    """scipy renamed 'approx' to 'asymptotic' in 1.15."""
    if name == "asymptotic" and not scipy_at_least(1, 15):
        return "approx"
    return name


def wilcoxon_dict(x, y, alternative, method):
    res = stats.wilcoxon(x, y, alternative=alternative, method=wilcoxon_method(method))
    d = {"statistic": fl(res.statistic), "p_value": fl(res.pvalue)}
    z = getattr(res, "zstatistic", None)
    if z is not None:
        d["z"] = fl(z)
    return d


def wilcoxon_permutation_p(x, y, alternative):
    """Exact sign-flip distribution of R+ (what scipy's auto method does for n <= 13 with ties
    or zeros since 1.15), computed with permutation_test directly so older scipy gives it too."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)

    def r_plus(dd, axis):
        dd = np.moveaxis(dd, axis, -1)
        out = []
        for row in dd.reshape(-1, dd.shape[-1]):
            nz = row[row != 0]
            r = stats.rankdata(np.abs(nz))
            out.append(np.sum(r[nz > 0]))
        return np.asarray(out).reshape(dd.shape[:-1])

    res = stats.permutation_test((d,), r_plus, permutation_type="samples", n_resamples=np.inf,
                                 alternative=alternative, vectorized=True)
    return fl(res.pvalue)


def paired_section():
    out = []
    for name, x, y in paired_cases():
        try:
            x = np.asarray(x, dtype=np.float64)
            y = np.asarray(y, dtype=np.float64)
            d = x - y
            nz = d[d != 0]
            has_zeros = bool(np.any(d == 0))
            has_ties = len(np.unique(np.abs(nz))) != len(nz)
            case = {"name": name, "x": flist(x), "y": flist(y), "n": len(x),
                    "has_zeros": has_zeros, "has_ties": has_ties,
                    "x_stats": descriptive(x), "y_stats": descriptive(y), "d_stats": descriptive(d),
                    "effect_sizes": effect_sizes(x, y, paired=True)}
            case["ttest_rel"] = {}
            case["ttest_1samp_d"] = {}
            case["wilcoxon"] = {}
            case["permutation_mean"] = {}
            for alt in ALTERNATIVES:
                case["ttest_rel"][alt] = ttest_dict(stats.ttest_rel(x, y, alternative=alt))
                case["ttest_1samp_d"][alt] = ttest_dict(stats.ttest_1samp(d, 0.0, alternative=alt))
                w = {}
                if not has_zeros and not has_ties:
                    w["exact"] = wilcoxon_dict(x, y, alt, "exact")
                w["asymptotic"] = wilcoxon_dict(x, y, alt, "asymptotic")
                w["auto"] = wilcoxon_dict(x, y, alt, "auto")
                if len(x) <= 13:
                    w["permutation_p"] = wilcoxon_permutation_p(x, y, alt)
                case["wilcoxon"][alt] = w
                if len(x) <= 14:
                    res = stats.permutation_test(
                        (x, y), lambda a, b, axis: np.mean(a - b, axis=axis),
                        permutation_type="samples", n_resamples=np.inf, alternative=alt,
                        vectorized=True)
                    case["permutation_mean"][alt] = {"statistic": fl(res.statistic),
                                                     "p_value": fl(res.pvalue)}
            out.append(case)
        except Exception:
            record_error("paired case " + name)
    return out


def independent_section():
    out = []
    for name, x, y in independent_cases():
        try:
            x = np.asarray(x, dtype=np.float64)
            y = np.asarray(y, dtype=np.float64)
            xy = np.concatenate([x, y])
            case = {"name": name, "x": flist(x), "y": flist(y), "n1": len(x), "n2": len(y),
                    "has_ties": len(np.unique(xy)) != len(xy),
                    "x_stats": descriptive(x), "y_stats": descriptive(y),
                    "effect_sizes": effect_sizes(x, y, paired=False),
                    "ttest_student": {}, "ttest_welch": {}, "mannwhitneyu": {}}
            for alt in ALTERNATIVES:
                case["ttest_student"][alt] = ttest_dict(stats.ttest_ind(x, y, equal_var=True, alternative=alt))
                case["ttest_welch"][alt] = ttest_dict(stats.ttest_ind(x, y, equal_var=False, alternative=alt))
                m = {}
                for method in (["exact"] if not case["has_ties"] and min(len(x), len(y)) <= 12 else []) + \
                        ["asymptotic", "auto"]:
                    res = stats.mannwhitneyu(x, y, alternative=alt, method=method)
                    m[method] = {"statistic": fl(res.statistic), "p_value": fl(res.pvalue)}
                res = stats.mannwhitneyu(x, y, alternative=alt, method="asymptotic", use_continuity=False)
                m["asymptotic_no_continuity"] = {"statistic": fl(res.statistic), "p_value": fl(res.pvalue)}
                case["mannwhitneyu"][alt] = m
            out.append(case)
        except Exception:
            record_error("independent case " + name)
    return out


def correlation_section():
    out = []
    for name, x, y in correlation_cases():
        try:
            x = np.asarray(x, dtype=np.float64)
            y = np.asarray(y, dtype=np.float64)
            case = {"name": name, "x": flist(x), "y": flist(y), "n": len(x), "spearman": {}, "pearson": {}}
            for alt in ALTERNATIVES:
                r = stats.spearmanr(x, y, alternative=alt)
                case["spearman"][alt] = {"statistic": fl(r.statistic if hasattr(r, "statistic") else r.correlation),
                                         "p_value": fl(r.pvalue)}
                r = stats.pearsonr(x, y, alternative=alt)
                case["pearson"][alt] = {"statistic": fl(r.statistic if hasattr(r, "statistic") else r[0]),
                                        "p_value": fl(r.pvalue if hasattr(r, "pvalue") else r[1])}
            out.append(case)
        except Exception:
            record_error("correlation case " + name)
    return out


def holm_numpy(p):
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adj_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out


def bh_numpy(p):
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    scaled = p[order] * m / np.arange(1, m + 1)
    adj_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adj_sorted
    return out


def corrections_section():
    rng = np.random.default_rng(99)
    vectors = {
        "seven_layer_ranges": [0.97, 0.61, 0.58, 0.09, 0.41, 0.0002, 0.00004],
        "with_ties": [0.01, 0.04, 0.04, 0.03, 0.2, 0.01, 0.5, 1.0],
        "single": [0.03],
        "random_40": list(rng.uniform(0, 1, 40) ** 3),
    }
    out = []
    for name, p in vectors.items():
        try:
            case = {"name": name, "p": flist(p), "holm": flist(holm_numpy(p)), "bh": flist(bh_numpy(p))}
            if hasattr(stats, "false_discovery_control"):
                case["bh_scipy"] = flist(stats.false_discovery_control(np.asarray(p), method="bh"))
            try:
                from statsmodels.stats.multitest import multipletests
                case["holm_statsmodels"] = flist(multipletests(p, method="holm")[1])
                case["bh_statsmodels"] = flist(multipletests(p, method="fdr_bh")[1])
            except ImportError:
                pass
            out.append(case)
        except Exception:
            record_error("corrections case " + name)
    return out


def sanity_section():
    """The study's published summary numbers (docs/study.md), recomputed by plain Python."""
    return {
        "sufficiency": {"delta": 3.78, "sd_patched": 4.38, "sd_baseline": 1.11,
                        "d_average": 3.78 / math.sqrt((1.11 ** 2 + 4.38 ** 2) / 2.0)},
        # NOTE: the write-up's necessity row (delta -5.42, d -1.43) cannot be recomputed from its
        # own table: blocked minus recursive means is 1.50 - 6.27 = -4.77. Only the table is used.
        "necessity_from_table": {"mean_blocked": 1.50, "sd_blocked": 4.41, "mean_recursive": 6.27,
                                 "sd_recursive": 4.76, "delta": 1.50 - 6.27,
                                 "d_average": (1.50 - 6.27) / math.sqrt((4.41 ** 2 + 4.76 ** 2) / 2.0)},
        "transfer_efficiency": {"baseline": 0.35, "recursive": 6.27, "patched": 4.11,
                                "value": (4.11 - 0.35) / (6.27 - 0.35)},
    }


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------

def np_percentile_interval(theta_b, alpha_low, alpha_high):
    return (float(np.percentile(theta_b, alpha_low * 100)), float(np.percentile(theta_b, alpha_high * 100)))


def bca_alphas(theta_hat, theta_b, jackknife_per_sample, alpha):
    """scipy's _bca_interval formulas (multi-sample form), on given replicates. The bias
    correction uses the 'mean' percentile of the estimate, (#{b < t} + #{b <= t}) / 2B, as scipy
    does (its early versions counted #{b < t} / B only)."""
    percentile = (np.sum(theta_b < theta_hat) + np.sum(theta_b <= theta_hat)) / (2.0 * len(theta_b))
    z0 = special.ndtri(percentile)
    nums, dens = [], []
    for th_i in jackknife_per_sample:
        th_i = np.asarray(th_i)
        n = len(th_i)
        u = (n - 1) * (th_i.mean() - th_i)
        nums.append(np.sum(u ** 3) / n ** 3)
        dens.append(np.sum(u ** 2) / n ** 2)
    a_hat = 1.0 / 6.0 * sum(nums) / sum(dens) ** 1.5
    z_alpha = special.ndtri(alpha)
    num1 = z0 + z_alpha
    a1 = special.ndtr(z0 + num1 / (1 - a_hat * num1))
    num2 = z0 - z_alpha
    a2 = special.ndtr(z0 + num2 / (1 - a_hat * num2))
    return float(a1), float(a2), float(z0), float(a_hat)


def jackknife(samples, statistic, paired):
    if paired:
        n = len(samples[0])
        vals = []
        for i in range(n):
            keep = np.delete(np.arange(n), i)
            vals.append(statistic(*[s[keep] for s in samples]))
        return [vals]
    per = []
    for j, s in enumerate(samples):
        vals = []
        for i in range(len(s)):
            reduced = list(samples)
            reduced[j] = np.delete(s, i)
            vals.append(statistic(*reduced))
        per.append(vals)
    return per


def scipy_bootstrap(samples, vec_statistic, paired, level, method, seed, n_resamples):
    kwargs = dict(n_resamples=n_resamples, paired=paired, confidence_level=level, method=method,
                  vectorized=True)
    try:
        res = stats.bootstrap(samples, vec_statistic, rng=np.random.default_rng(seed), **kwargs)
    except TypeError:
        res = stats.bootstrap(samples, vec_statistic, random_state=np.random.default_rng(seed), **kwargs)
    ci = res.confidence_interval
    return {"low": fl(ci.low), "high": fl(ci.high), "standard_error": fl(res.standard_error)}


def bootstrap_section():
    rng = np.random.default_rng(31337)
    B = 2000

    def mean_stat(a, axis=-1):
        return np.mean(a, axis=axis)

    def median_stat(a, axis=-1):
        return np.median(a, axis=axis)

    def diff_means(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    def transfer(b, r, p, axis=-1):
        mb = np.mean(b, axis=axis)
        return (np.mean(p, axis=axis) - mb) / (np.mean(r, axis=axis) - mb)

    n_te = 30
    base = np.where(rng.random(n_te) < 0.8, 0.0, np.round(rng.exponential(1.5, n_te), 2))
    rec = np.round(rng.exponential(6.0, n_te), 2)
    pat = np.where(rng.random(n_te) < 0.3, 0.0, np.round(rng.exponential(4.5, n_te), 2))

    cases = [
        ("mean_skewed_n25", "mean", [np.round(rng.lognormal(0.5, 0.9, 25), 3)], mean_stat, False, 101),
        ("median_n21", "median", [rng.normal(3.0, 2.0, 21)], median_stat, False, 202),
        ("diff_means_15_20", "difference_of_means",
         [rng.exponential(2.0, 15), rng.exponential(1.0, 20)], diff_means, False, 303),
        ("transfer_efficiency_n30", "transfer_efficiency", [base, rec, pat], transfer, True, 404),
    ]
    out = []
    for name, stat_name, samples, stat, paired, seed in cases:
        try:
            samples = [np.asarray(s, dtype=np.float64) for s in samples]
            gen = np.random.default_rng(seed)
            if paired:
                idx = [gen.integers(0, len(samples[0]), (B, len(samples[0])))]
                theta_b = stat(*[s[idx[0]] for s in samples], axis=-1)
            else:
                idx = [gen.integers(0, len(s), (B, len(s))) for s in samples]
                theta_b = stat(*[s[i] for s, i in zip(samples, idx)], axis=-1)
            theta_hat = float(stat(*samples, axis=-1))
            jk = jackknife(samples, lambda *a: float(stat(*a, axis=-1)), paired)
            case = {"name": name, "statistic": stat_name, "paired": paired, "seed": seed,
                    "n_resamples": B, "samples": [flist(s) for s in samples],
                    "indices": [i.tolist() for i in idx], "estimate": fl(theta_hat),
                    "standard_error": fl(np.std(theta_b, ddof=1)), "intervals": []}
            for level in (0.95, 0.9):
                alpha = (1 - level) / 2
                lo, hi = np_percentile_interval(theta_b, alpha, 1 - alpha)
                entry = {"confidence_level": level, "method": "percentile", "low": fl(lo), "high": fl(hi)}
                try:
                    entry["scipy"] = scipy_bootstrap(samples, stat, paired, level, "percentile", seed, B)
                except Exception:
                    record_error(f"scipy bootstrap {name} percentile {level}")
                case["intervals"].append(entry)
                a1, a2, z0, a_hat = bca_alphas(theta_hat, theta_b, jk, alpha)
                lo, hi = np_percentile_interval(theta_b, a1, a2)
                entry = {"confidence_level": level, "method": "bca", "low": fl(lo), "high": fl(hi),
                         "z0": fl(z0), "acceleration": fl(a_hat), "alpha_low": fl(a1), "alpha_high": fl(a2)}
                try:
                    entry["scipy"] = scipy_bootstrap(samples, stat, paired, level, "BCa", seed, B)
                except Exception:
                    record_error(f"scipy bootstrap {name} BCa {level}")
                case["intervals"].append(entry)
            out.append(case)
        except Exception:
            record_error("bootstrap case " + name)
    return out


# --------------------------------------------------------------------------------------------
# Participation ratio
# --------------------------------------------------------------------------------------------

def pr_numpy(m, centered):
    m = np.asarray(m, dtype=np.float64)
    if centered:
        m = m - m.mean(axis=-2, keepdims=True)
    s = np.linalg.svd(m, compute_uv=False)
    s2 = s ** 2
    pr = s2.sum(axis=-1) ** 2 / (s2 ** 2).sum(axis=-1)
    p = s / s.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return pr, np.exp(h), s


def pr_section():
    rng = np.random.default_rng(1618)
    mats = {}
    mats["gaussian_16x32"] = rng.normal(0, 1, (16, 32))
    low = rng.normal(0, 1, (16, 3)) @ rng.normal(0, 1, (3, 64))
    mats["rank3_plus_noise_16x64"] = low + 1e-3 * rng.normal(0, 1, (16, 64))
    mats["tall_20x5"] = rng.normal(0, 1, (20, 5)) * np.array([3.0, 1.0, 0.5, 0.1, 0.01])
    mats["offset_16x8"] = rng.normal(0, 1, (16, 8)) + 5.0  # centring matters here
    mats["identity_4x4"] = np.eye(4)
    mats["batched_2x3x16x8"] = rng.normal(0, 1, (2, 3, 16, 8)) * rng.uniform(0.1, 3.0, (2, 3, 1, 8))
    out = {"matrices": []}
    for name, m in mats.items():
        try:
            entry = {"name": name, "shape": list(m.shape), "values": flist(m)}
            for centered in (False, True):
                pr, er, s = pr_numpy(m, centered)
                key = "centered" if centered else "uncentered"
                entry[key] = {"participation_ratio": flist(pr), "effective_rank": flist(er),
                              "singular_values": flist(s)}
            out["matrices"].append(entry)
        except Exception:
            record_error("pr matrix " + name)
    try:
        # R_V: late-layer PR over early-layer PR for a batch of 3 prompts, W = 16, D = 8 heads x 4.
        early = rng.normal(0, 1, (3, 16, 32))
        late = rng.normal(0, 1, (3, 16, 3)) @ rng.normal(0, 1, (3, 3, 32)) + 0.3 * rng.normal(0, 1, (3, 16, 32))
        rv = {"early_shape": list(early.shape), "early": flist(early), "late": flist(late)}
        for centered in (False, True):
            key = "centered" if centered else "uncentered"
            pr_e = pr_numpy(early, centered)[0]
            pr_l = pr_numpy(late, centered)[0]
            rv[key] = {"pr_early": flist(pr_e), "pr_late": flist(pr_l), "rv": flist(pr_l / pr_e)}
        # Per KV head: D = 8 heads of 4 features each, concatenated head-major.
        heads = 8
        e_h = early.reshape(3, 16, heads, 4).transpose(0, 2, 1, 3)
        l_h = late.reshape(3, 16, heads, 4).transpose(0, 2, 1, 3)
        rv["per_head_heads"] = heads
        rv["per_head_uncentered_rv"] = flist(pr_numpy(l_h, False)[0] / pr_numpy(e_h, False)[0])
        out["rv"] = rv
    except Exception:
        record_error("rv")
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    meta = {"scipy_version": scipy.__version__, "numpy_version": np.__version__,
            "python_version": sys.version.split()[0], "generator": "tests/reference/make_stats_reference.py"}

    sections = {}
    for key, fn in [("paired", paired_section), ("independent", independent_section),
                    ("correlation", correlation_section), ("corrections", corrections_section),
                    ("study_sanity", sanity_section)]:
        try:
            sections[key] = fn()
        except Exception:
            record_error(key)
    try:
        boot = bootstrap_section()
    except Exception:
        record_error("bootstrap")
        boot = []
    try:
        pr = pr_section()
    except Exception:
        record_error("pr")
        pr = {}

    def write(name, payload, compact=False):
        payload = dict(meta, **payload, errors=ERRORS)
        with open(os.path.join(out_dir, name), "w") as f:
            if compact:  # the bootstrap file holds index matrices: one line per case keeps it small
                json.dump(payload, f, separators=(",", ":"), allow_nan=False)
            else:
                json.dump(payload, f, indent=1, allow_nan=False)
        print("wrote", name)

    write("stats_reference.json", sections)
    write("bootstrap_reference.json", {"cases": boot}, compact=True)
    write("pr_reference.json", pr)
    print("scipy", scipy.__version__, "numpy", np.__version__, "errors:", len(ERRORS))
    for e in ERRORS:
        print(e["where"])


if __name__ == "__main__":
    main()
