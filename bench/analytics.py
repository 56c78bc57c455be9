"""Benchmark: our BG/NBD + Gamma-Gamma core against ``lifetimes`` 0.11.3 on 1,000,000 customers.

What it does, in one run:

1. Simulates ``--n`` customers (default 1,000,000) exactly and vectorised from known parameters
   (the CDNOW estimates: BG/NBD r=0.243, alpha=4.414, a=0.793, b=2.426; Gamma-Gamma p=6.25,
   q=3.74, gamma=15.44), ages uniform over 1..364 days, purchase times on a daily grid
   (``simulate_bgnbd(..., day_resolution=True)``), and writes them to a temporary ``.npz``.
2. Runs two worker subprocesses on that same file, one after the other, so that neither's memory
   contaminates the other's:  ``ours`` (this interpreter, ``shared.analytics.stats``) and
   ``lifetimes`` (``BetaGeoFitter`` and ``GammaGammaFitter`` in a separate virtualenv).
   Each times: fitting BG/NBD on everyone, fitting Gamma-Gamma on the repeat buyers, and scoring
   everyone (P(alive), conditional expected purchases over the next 90 days = 90/7 weeks,
   expected average spend, 12-month CLV at 1 %/month, time in weeks).  Each reports its peak
   resident memory (VmHWM of its own process image, see ``_rss_mib``) and the peak right after
   loading the data (interpreter + libraries + input), so the increment is visible.  Both
   workers run with OPENBLAS/OMP/MKL_NUM_THREADS=1.
3. Prints seconds, peak memory, the speed ratio and the parameters side by side to 3 decimals.

Targets: >= 3x faster than lifetimes, peak memory < 1 GiB, same parameters to 3 decimals.

lifetimes is a dev-only baseline.  Its virtualenv is created on first use at
``$PULSE_LIFETIMES_VENV`` (default ``~/.cache/pulse/bench-lifetimes-venv``) with the pins in
``LIFETIMES_PINS`` -- lifetimes 0.11.3 (2020, the last release) works unmodified with numpy 2.4,
scipy 1.17, pandas 3.1 and autograd 1.9 for the API used here; we pin the same numpy/scipy as
our own environment so the comparison is of the algorithms, not of the libraries.  Pass
``--lifetimes-python PATH`` to use an existing interpreter instead, or ``--skip-lifetimes``.

Usage:  python bench/analytics.py [--n 1000000] [--seed 2024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

TRUE_BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
TRUE_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}
HORIZON_WEEKS = 90.0 / 7.0
CLV_MONTHS = 12
CLV_RATE = 0.01

LIFETIMES_PINS = [
    "lifetimes==0.11.3",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "pandas==3.1.1",
    "autograd==1.9.1",
    "dill==0.4.1",
]


def _rss_mib() -> float:
    """Peak resident memory of THIS process image, MiB.

    ``/proc/self/status`` VmHWM (Linux) is per address space, so it starts afresh at exec.
    ``ru_maxrss`` is not: Linux carries the parent's peak across fork+exec, so a worker started
    by a driver holding the simulated data would report the driver's peak (fallback only).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- workers
def worker_ours(data_path: str) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from shared.analytics.stats import (
        conditional_expected_average_spend,
        conditional_expected_purchases,
        customer_lifetime_value,
        fit_bgnbd,
        fit_gamma_gamma,
        probability_alive,
    )

    d = np.load(data_path)
    x, t_x, T, m = d["x"], d["t_x"], d["T"], d["m"]
    rss_loaded = _rss_mib()

    t0 = time.perf_counter()
    bg = fit_bgnbd(x, t_x, T)
    t1 = time.perf_counter()
    gg = fit_gamma_gamma(x, m)
    t2 = time.perf_counter()
    p_alive = probability_alive(bg, x, t_x, T)
    e90 = conditional_expected_purchases(bg, HORIZON_WEEKS, x, t_x, T)
    spend = conditional_expected_average_spend(gg, x, m)
    clv = customer_lifetime_value(bg, gg, x, t_x, T, m, horizon_months=CLV_MONTHS,
                                  monthly_discount_rate=CLV_RATE)
    t3 = time.perf_counter()
    return {
        "fit_bgnbd_s": t1 - t0, "fit_gg_s": t2 - t1, "score_s": t3 - t2, "total_s": t3 - t0,
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_mib(),
        "bg": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "ll": bg.log_likelihood},
        "gg": {"p": gg.p, "q": gg.q, "gamma": gg.gamma, "ll": gg.log_likelihood},
        "checks": {"p_alive_mean": float(p_alive.mean()), "e90_sum": float(e90.sum()),
                   "spend_mean": float(spend.mean()), "clv_sum": float(clv.sum()),
                   "n_nonfinite": int((~np.isfinite(p_alive)).sum() + (~np.isfinite(e90)).sum()
                                      + (~np.isfinite(spend)).sum() + (~np.isfinite(clv)).sum())},
    }


def worker_lifetimes(data_path: str) -> dict:
    import warnings

    import numpy as np
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    warnings.simplefilter("ignore")
    d = np.load(data_path)
    x = pd.Series(d["x"])
    t_x = pd.Series(d["t_x"])
    T = pd.Series(d["T"])
    m = pd.Series(d["m"])
    rss_loaded = _rss_mib()

    t0 = time.perf_counter()
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(x, t_x, T)
    t1 = time.perf_counter()
    rep = x > 0
    ggf = GammaGammaFitter(penalizer_coef=0.0)
    ggf.fit(x[rep], m[rep])
    t2 = time.perf_counter()
    p_alive = bgf.conditional_probability_alive(x, t_x, T)
    e90 = bgf.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, t_x, T)
    spend = ggf.conditional_expected_average_profit(x, m)
    clv = ggf.customer_lifetime_value(bgf, x, t_x, T, m, time=CLV_MONTHS,
                                      discount_rate=CLV_RATE, freq="W")
    t3 = time.perf_counter()
    bp, gp = bgf.params_, ggf.params_
    n_rep = int(rep.sum())
    return {
        "fit_bgnbd_s": t1 - t0, "fit_gg_s": t2 - t1, "score_s": t3 - t2, "total_s": t3 - t0,
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_mib(),
        "bg": {"r": float(bp["r"]), "alpha": float(bp["alpha"]), "a": float(bp["a"]),
               "b": float(bp["b"]),
               # lifetimes' own likelihood, evaluated on the unscaled data (its fit runs on
               # rescaled time, whose log-likelihood differs by sum(x) * ln(scale))
               "ll": float(-BetaGeoFitter._negative_log_likelihood(
                   np.log(bp[["r", "alpha", "a", "b"]].to_numpy(dtype=float)), d["x"], d["t_x"],
                   d["T"], np.ones(len(x)), 0.0) * len(x))},
        "gg": {"p": float(gp["p"]), "q": float(gp["q"]), "gamma": float(gp["v"]),
               "ll": float(-ggf._negative_log_likelihood_ * n_rep)},
        "checks": {"p_alive_mean": float(np.mean(p_alive)), "e90_sum": float(np.sum(e90)),
                   "spend_mean": float(np.mean(spend)), "clv_sum": float(np.sum(clv)),
                   "n_nonfinite": int((~np.isfinite(np.asarray(p_alive))).sum()
                                      + (~np.isfinite(np.asarray(e90))).sum()
                                      + (~np.isfinite(np.asarray(spend))).sum()
                                      + (~np.isfinite(np.asarray(clv))).sum())},
        "versions": _versions(),
    }


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("lifetimes", "numpy", "scipy", "pandas", "autograd")}


# --------------------------------------------------------------------------- driver
def simulate(n: int, seed: int, path: Path) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from shared.analytics.stats import simulate_bgnbd, simulate_gamma_gamma_spend

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    T = rng.integers(1, 365, n) / 7.0
    x, t_x, T = simulate_bgnbd(**TRUE_BG, T=T, rng=rng, day_resolution=True)
    m = simulate_gamma_gamma_spend(**TRUE_GG, frequency=x, rng=rng)
    np.savez(path, x=x, t_x=t_x, T=T, m=m)
    uniq = np.unique(np.stack([x, np.round(t_x * 7), np.round(T * 7)]), axis=1).shape[1]
    return {"seconds": time.perf_counter() - t0, "repeat_buyers": int((x > 0).sum()),
            "distinct_histories": int(uniq), "mean_x": float(x.mean())}


def ensure_lifetimes_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    venv = Path(os.environ.get("PULSE_LIFETIMES_VENV",
                               Path.home() / ".cache" / "pulse" / "bench-lifetimes-venv"))
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import lifetimes"],
                                      capture_output=True).returncode == 0:
        return str(py)
    print(f"creating lifetimes virtualenv at {venv} ({' '.join(LIFETIMES_PINS)}) ...", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = os.environ.get("PULSE_BENCH_BASE_PYTHON", "python3")
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *LIFETIMES_PINS], check=True)
    return str(py)


def run_worker(python: str, name: str, data: Path) -> dict:
    # Single-threaded BLAS/OpenMP for both: the work is single-threaded algorithmically, and on
    # a 2-core machine an idle-spinning OpenBLAS pool only adds noise to tiny BLAS calls.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    out = subprocess.run([python, str(Path(__file__).resolve()), "--worker", name,
                          "--data", str(data)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(n: int, sim: dict, ours: dict, lt: dict | None) -> None:
    print(f"\ncustomers: {n:,}   repeat buyers: {sim['repeat_buyers']:,}   distinct (x, t_x, T) "
          f"histories: {sim['distinct_histories']:,}   mean x: {sim['mean_x']:.3f}   "
          f"simulation: {sim['seconds']:.2f} s")
    rows = [("fit BG/NBD", "fit_bgnbd_s"), ("fit Gamma-Gamma", "fit_gg_s"),
            ("score everyone", "score_s"), ("TOTAL", "total_s")]
    print(f"\n{'seconds':<18}{'ours':>12}{'lifetimes':>12}{'ratio':>10}")
    for label, key in rows:
        a = ours[key]
        if lt:
            b = lt[key]
            print(f"{label:<18}{a:>12.3f}{b:>12.3f}{b / a:>9.1f}x")
        else:
            print(f"{label:<18}{a:>12.3f}{'-':>12}{'-':>10}")
    print(f"\n{'memory (MiB)':<18}{'ours':>12}{'lifetimes':>12}")
    for label, key in [("RSS after load", "rss_after_load_mib"), ("peak RSS", "peak_rss_mib")]:
        print(f"{label:<18}{ours[key]:>12.1f}{(lt[key] if lt else float('nan')):>12.1f}")
    print(f"\n{'parameter':<10}{'true':>10}{'ours':>12}{'lifetimes':>12}  same to 3 dp")
    true = {**TRUE_BG, **TRUE_GG}
    all_same = True
    for group, names in (("bg", ("r", "alpha", "a", "b")), ("gg", ("p", "q", "gamma"))):
        for k in names:
            o = ours[group][k]
            if lt:
                l_ = lt[group][k]
                same = round(o, 3) == round(l_, 3)
                all_same &= same
                print(f"{k:<10}{true[k]:>10.3f}{o:>12.3f}{l_:>12.3f}  {'yes' if same else 'NO'}")
            else:
                print(f"{k:<10}{true[k]:>10.3f}{o:>12.3f}")
        ll_l = f"{lt[group]['ll']:>12.1f}" if lt else ""
        print(f"{'LL ' + group:<10}{'':>10}{ours[group]['ll']:>12.1f}{ll_l}")
    print(f"\n{'scores':<14}{'ours':>16}{'lifetimes':>16}")
    for k in ("p_alive_mean", "e90_sum", "spend_mean", "clv_sum", "n_nonfinite"):
        lv = f"{lt['checks'][k]:>16.4f}" if lt else ""
        print(f"{k:<14}{ours['checks'][k]:>16.4f}{lv}")
    if lt:
        print(f"\nlifetimes environment: {lt['versions']}")
        ratio = lt["total_s"] / ours["total_s"]
        print(f"\nspeed ratio (lifetimes / ours, total): {ratio:.1f}x  [target >= 3x: "
              f"{'met' if ratio >= 3 else 'NOT met'}]")
        print(f"same parameters to 3 decimals: {'yes' if all_same else 'NO'}")
    print(f"our peak memory: {ours['peak_rss_mib']:.1f} MiB  [target < 1024 MiB: "
          f"{'met' if ours['peak_rss_mib'] < 1024 else 'NOT met'}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--lifetimes-python", default=None)
    ap.add_argument("--skip-lifetimes", action="store_true")
    ap.add_argument("--worker", choices=["ours", "lifetimes"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_lifetimes
        print(json.dumps(fn(args.data)))
        return

    lt_python = None if args.skip_lifetimes else ensure_lifetimes_python(args.lifetimes_python)
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        data = Path(tmp) / "customers.npz"
        sim = simulate(args.n, args.seed, data)
        print(f"simulated {args.n:,} customers; running ours ...", flush=True)
        ours = run_worker(sys.executable, "ours", data)
        lt = None
        if lt_python:
            print("running lifetimes ...", flush=True)
            lt = run_worker(lt_python, "lifetimes", data)
    report(args.n, sim, ours, lt)


if __name__ == "__main__":
    main()
