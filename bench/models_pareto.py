"""Benchmark: our Pareto/NBD core against ``lifetimes`` 0.11.3's ``ParetoNBDFitter``.

What it does, in one run:

1. Simulates ``--n`` customers (default 1,000,000) exactly and vectorised from known parameters
   (the published CDNOW Pareto/NBD estimates r=0.553, alpha=10.578, s=0.606, beta=11.669), ages
   uniform over 1..364 days, purchase times on a daily grid (``simulate_pareto_nbd(...,
   day_resolution=True)``), into a temporary ``.npz``.
2. Runs worker subprocesses on that file, one after the other (so neither's memory contaminates
   the other's): ``ours`` (``shared.analytics.stats.pareto_nbd``) on all ``--n`` customers, and
   ``ours`` and ``lifetimes`` (in its own virtualenv, see bench/analytics.py) on the first
   ``--lifetimes-n`` of them (default 100,000). Each times the fit and the scoring of every customer
   (P(alive) and the conditional expected purchases over the next 90 days = 90/7 weeks) and
   reports its peak resident memory. BLAS/OpenMP run single-threaded in both.
3. Prints seconds, peak memory, the speed ratio at the same size, and the parameters side by
   side to 3 decimals.

lifetimes fits Pareto/NBD with Nelder-Mead over its whole table (one scipy ``hyp2f1`` per
customer per evaluation, no compression of identical rows), so at 1,000,000 customers it takes
a long time (~150 s at 100,000 on 2 cores, growing linearly): by default it is measured on the
first 100,000 customers, and ours on the same ones, so the ratio printed is of the same work
(``--lifetimes-n 1000000`` for everyone); ``--lifetimes-timeout`` caps its run.

Last result (2 cores shared with other work): ours on 1,000,000 customers 9.3 s (fit 4.9 s,
scoring 4.4 s), peak 213 MiB; on the same 100,000, 1.29 s vs lifetimes 152.9 s (118.7x), the
same parameters to 3 decimals and the same log-likelihood (-334,885.4).

Targets: >= 10x faster than lifetimes at the same size, same parameters to 3 decimals.

Usage:  python bench/models_pareto.py [--n 1000000] [--lifetimes-n 100000] [--seed 2024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analytics import _rss_mib, ensure_lifetimes_python  # noqa: E402  (bench/analytics.py)

REPO_ROOT = Path(__file__).resolve().parents[1]
TRUE = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
HORIZON_WEEKS = 90.0 / 7.0
NAMES = ("r", "alpha", "s", "beta")


def _load(data_path: str, rows: int):
    import numpy as np

    d = np.load(data_path)
    return d["x"][:rows], d["t_x"][:rows], d["T"][:rows]


def worker_ours(data_path: str, rows: int) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from shared.analytics.stats.pareto_nbd import (
        conditional_expected_purchases,
        fit_pareto_nbd,
        probability_alive,
    )

    x, t_x, T = _load(data_path, rows)
    rss_loaded = _rss_mib()
    t0 = time.perf_counter()
    fit = fit_pareto_nbd(x, t_x, T)
    t1 = time.perf_counter()
    p_alive = probability_alive(fit, x, t_x, T)
    e90 = conditional_expected_purchases(fit, HORIZON_WEEKS, x, t_x, T)
    t2 = time.perf_counter()
    return {
        "rows": int(x.size), "fit_s": t1 - t0, "score_s": t2 - t1, "total_s": t2 - t0,
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_mib(),
        "params": {k: getattr(fit, k) for k in NAMES}, "ll": fit.log_likelihood,
        "converged": fit.converged, "standard_errors": fit.standard_errors,
        "checks": {"p_alive_mean": float(p_alive.mean()), "e90_sum": float(e90.sum()),
                   "n_nonfinite": int((~np.isfinite(p_alive)).sum() + (~np.isfinite(e90)).sum())},
    }


def worker_lifetimes(data_path: str, rows: int, tol: float) -> dict:
    import warnings

    import numpy as np
    import pandas as pd
    from lifetimes import ParetoNBDFitter

    warnings.simplefilter("ignore")
    x, t_x, T = (pd.Series(a) for a in _load(data_path, rows))
    rss_loaded = _rss_mib()
    t0 = time.perf_counter()
    pnf = ParetoNBDFitter(penalizer_coef=0.0)
    pnf.fit(x, t_x, T, tol=tol)
    t1 = time.perf_counter()
    p_alive = np.asarray(pnf.conditional_probability_alive(x, t_x, T))
    e90 = np.asarray(pnf.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, t_x, T))
    t2 = time.perf_counter()
    p = pnf.params_
    params = {k: float(p[k]) for k in NAMES}
    # its own likelihood on the unscaled data (a sum over customers: it divides by mean weight 1)
    ll = -ParetoNBDFitter._negative_log_likelihood(
        [params[k] for k in NAMES], x.to_numpy(), t_x.to_numpy(), T.to_numpy(), np.ones(len(x)), 0.0)
    from importlib.metadata import version

    return {
        "rows": int(len(x)), "fit_s": t1 - t0, "score_s": t2 - t1, "total_s": t2 - t0,
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_mib(),
        "params": params, "ll": float(ll),
        "checks": {"p_alive_mean": float(np.mean(p_alive)), "e90_sum": float(np.sum(e90)),
                   "n_nonfinite": int((~np.isfinite(p_alive)).sum() + (~np.isfinite(e90)).sum())},
        "versions": {k: version(k) for k in ("lifetimes", "numpy", "scipy", "pandas")},
    }


def simulate(n: int, seed: int, path: Path) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from shared.analytics.stats import simulate_pareto_nbd

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    T = rng.integers(1, 365, n) / 7.0
    x, t_x, T = simulate_pareto_nbd(**TRUE, T=T, rng=rng, day_resolution=True)
    np.savez(path, x=x, t_x=t_x, T=T)
    uniq = np.unique(np.stack([x, np.round(t_x * 7), np.round(T * 7)]), axis=1).shape[1]
    return {"seconds": time.perf_counter() - t0, "repeat_buyers": int((x > 0).sum()),
            "distinct_histories": int(uniq), "mean_x": float(x.mean())}


def run_worker(python: str, name: str, data: Path, rows: int, timeout: float | None,
               tol: float = 1e-4) -> dict | None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        out = subprocess.run([python, str(Path(__file__).resolve()), "--worker", name, "--data", str(data),
                              "--rows", str(rows), "--tol", str(tol)],
                             capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(title: str, ours: dict, lt: dict | None) -> None:
    print(f"\n{title}")
    print(f"{'seconds':<18}{'ours':>12}{'lifetimes':>12}{'ratio':>10}")
    for label, key in (("fit Pareto/NBD", "fit_s"), ("score everyone", "score_s"), ("TOTAL", "total_s")):
        a = ours[key]
        if lt:
            print(f"{label:<18}{a:>12.3f}{lt[key]:>12.3f}{lt[key] / a:>9.1f}x")
        else:
            print(f"{label:<18}{a:>12.3f}{'-':>12}{'-':>10}")
    print(f"{'peak RSS (MiB)':<18}{ours['peak_rss_mib']:>12.1f}{(lt['peak_rss_mib'] if lt else float('nan')):>12.1f}")
    print(f"{'  after load':<18}{ours['rss_after_load_mib']:>12.1f}"
          f"{(lt['rss_after_load_mib'] if lt else float('nan')):>12.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--lifetimes-n", type=int, default=100_000,
                    help="customers lifetimes (and ours, for the same-size ratio) fit; default 100,000 "
                         "(lifetimes takes ~150 s there on 2 cores, and about 10x that on 1,000,000)")
    ap.add_argument("--lifetimes-timeout", type=float, default=None, help="seconds; lifetimes is dropped beyond")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--lifetimes-python", default=None)
    ap.add_argument("--skip-lifetimes", action="store_true")
    ap.add_argument("--worker", choices=["ours", "lifetimes"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--lifetimes-tol", "--tol", dest="tol", type=float, default=1e-6,
                    help="Nelder-Mead tolerance of lifetimes' fit (its default 1e-4 stops ~1e-3 short "
                         "of the maximum along beta, the likelihood's flattest direction)")
    args = ap.parse_args()

    if args.worker:
        out = worker_ours(args.data, args.rows) if args.worker == "ours" else \
            worker_lifetimes(args.data, args.rows, args.tol)
        print(json.dumps(out))
        return

    m = min(args.lifetimes_n or args.n, args.n)
    lt_python = None if args.skip_lifetimes else ensure_lifetimes_python(args.lifetimes_python)
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        data = Path(tmp) / "customers.npz"
        sim = simulate(args.n, args.seed, data)
        print(f"simulated {args.n:,} customers; running ours ...", flush=True)
        ours_full = run_worker(sys.executable, "ours", data, args.n, None)
        ours_sub, lt = ours_full, None
        if lt_python:
            if m < args.n:
                print(f"running ours on the first {m:,} ...", flush=True)
                ours_sub = run_worker(sys.executable, "ours", data, m, None)
            print(f"running lifetimes on {m:,} ...", flush=True)
            lt = run_worker(lt_python, "lifetimes", data, m, args.lifetimes_timeout, args.tol)
            if lt is None:
                print(f"lifetimes did not finish within {args.lifetimes_timeout:.0f} s")

    print(f"\ncustomers: {args.n:,}   repeat buyers: {sim['repeat_buyers']:,}   distinct (x, t_x, T) "
          f"histories: {sim['distinct_histories']:,}   mean x: {sim['mean_x']:.3f}   "
          f"simulation: {sim['seconds']:.2f} s")
    if m < args.n or not lt:
        _table(f"ours on all {args.n:,} customers", ours_full, None)
    if lt_python:
        _table(f"same {m:,} customers, both", ours_sub, lt)
    print(f"\n{'parameter':<10}{'true':>10}{'ours (' + format(m, ',') + ')':>18}"
          f"{'lifetimes':>12}  same to 3 dp   {'ours (all)':>12}{'+/- s.e.':>10}")
    all_same = True
    for k in NAMES:
        o = ours_sub["params"][k]
        row = f"{k:<10}{TRUE[k]:>10.3f}{o:>18.3f}"
        if lt:
            same = round(o, 3) == round(lt["params"][k], 3)
            all_same &= same
            row += f"{lt['params'][k]:>12.3f}  {'yes' if same else 'NO':<13}"
        else:
            row += f"{'-':>12}  {'':<13}"
        row += f"{ours_full['params'][k]:>12.3f}{ours_full['standard_errors'][k]:>10.3f}"
        print(row)
    print(f"{'LL':<10}{'':>10}{ours_sub['ll']:>18.1f}{(format(lt['ll'], '.1f') if lt else '-'):>12}")
    print(f"\n{'scores':<14}{'ours':>16}{'lifetimes':>16}   (same {m:,} customers)")
    for k in ("p_alive_mean", "e90_sum", "n_nonfinite"):
        lv = f"{lt['checks'][k]:>16.4f}" if lt else f"{'-':>16}"
        print(f"{k:<14}{ours_sub['checks'][k]:>16.4f}{lv}")
    if lt:
        print(f"\nlifetimes environment: {lt['versions']}, Nelder-Mead tol {args.tol:g}")
        ratio = lt["total_s"] / ours_sub["total_s"]
        print(f"\nspeed ratio (lifetimes / ours, fit + scoring of the same {m:,} customers): {ratio:.1f}x  "
              f"[target >= 10x: {'met' if ratio >= 10 else 'NOT met'}]")
        print(f"same parameters to 3 decimals: {'yes' if all_same else 'NO'}")
    print(f"our peak memory at {args.n:,} customers: {ours_full['peak_rss_mib']:.1f} MiB; "
          f"fit + scoring {ours_full['total_s']:.2f} s")


if __name__ == "__main__":
    main()
