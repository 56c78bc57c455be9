"""bench/scale.py runs end to end (at toy sizes: the figures only mean something at the default
ones, outside `make test`): its private stack starts from the Procfile, the backfill loads each
population, fits and rescoring finish, and it prints every figure and verdict."""
import os
import subprocess
import sys

from tests.fixtures import ROOT


def test_the_scale_benchmark_runs_at_toy_sizes(services):
    env = {**os.environ, "BENCH_SCALE_SIZES": "300,1200", "BENCH_MISSES": "20", "BENCH_BURST": "20"}
    for name in ("DATABASE_URL", "BROKER_URL", "MONGO_URI", "CACHE_PREFIX", "QUEUE_PREFIX"):
        env.pop(name, None)  # the bench sets up its own
    result = subprocess.run([sys.executable, "bench/scale.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "1,200 purchases" in out and "300 purchases" in out
    for figure in ("miss p50 at 1,200 vs 300 purchases", "rescoring at 1,200 vs 300", "two analytics processes",
                   "fit:", "20 signups in a burst"):
        assert figure in out, figure
