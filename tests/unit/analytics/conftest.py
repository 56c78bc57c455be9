"""The CDNOW sample the stats modules are validated on, read once for the folder."""
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
# The sample ships with the tests (tests/data/cdnow, an unchanged copy of the project's shared
# reference data, MIT-licensed via `lifetimes`), so a clone validates on its own.
CDNOW_CSV = Path(os.environ.get(
    "PULSE_CDNOW_CSV",
    REPO_ROOT / "tests" / "data" / "cdnow" / "cdnow_customers_summary_with_transactions.csv",
))


@pytest.fixture(scope="session")
def cdnow() -> np.ndarray:
    """The 2,357 customers of the sample, one record each (x, t_x, T, zbar, ...)."""
    assert CDNOW_CSV.is_file(), f"CDNOW sample not found at {CDNOW_CSV} (set PULSE_CDNOW_CSV)"
    sample = np.genfromtxt(CDNOW_CSV, delimiter=",", names=True)
    assert sample.shape == (2357,)
    return sample


@pytest.fixture(scope="session")
def cdnow_frequency_recency(cdnow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample's frequency/recency arrays: x, t_x, T."""
    return cdnow["x"], cdnow["t_x"], cdnow["T"]
