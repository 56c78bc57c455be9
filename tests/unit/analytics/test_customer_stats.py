"""The dashboard's customer distributions (services.analytics.customer_stats) on rows as the
summaries give them: every customer counted once, purchases stamped ahead of now included."""
from datetime import UTC, datetime

import numpy as np

from services.analytics import customer_stats
from shared.analytics.fitted_models import FittedModel
from shared.analytics.stats import BGNBDParams, GammaGammaParams, churn_risks, probability_alive
from shared.contracts.event_time import EPOCH

NOW = datetime(2026, 11, 30, 0, 0, 5, tzinfo=UTC)  # five seconds into a UTC day
TODAY = (NOW.date() - EPOCH).days
MODEL = FittedModel(3, BGNBDParams(0.243, 4.414, 0.793, 2.426, -1.0, 5), GammaGammaParams(6.25, 3.74, 15.44, -1.0, 5),
              None, None)


def row(first: int, last: int, purchase_days: int, spent: float, first_day_spent: float, last_at: float) -> list:
    return [first, last, purchase_days, spent, first_day_spent, last_at]


def test_every_customer_is_counted_even_with_a_purchase_stamped_tomorrow():
    rows = np.array([
        row(TODAY - 100, TODAY - 40, 3, 300.0, 100.0, (TODAY - 40) * 86400 + 600),
        row(TODAY - 10, TODAY - 10, 1, 20.0, 20.0, (TODAY - 10) * 86400),
        # Events may carry a timestamp up to a day ahead: the last purchase is tomorrow (UTC) ...
        row(TODAY - 30, TODAY + 1, 4, 120.0, 30.0, (TODAY + 1) * 86400 + 60),
        # ... or every purchase is.
        row(TODAY + 1, TODAY + 1, 1, 15.0, 15.0, (TODAY + 1) * 86400 + 30),
    ], dtype=np.float64)
    doc = customer_stats.compute(rows, MODEL, NOW)
    assert doc["customers"] == 4 and doc["model_version"] == 3
    for name in ("churn_risk", "p_alive", "predicted_ltv"):
        assert sum(doc[name]["counts"]) == 4, name
    # Days since the last purchase as a profile counts them (whole days), a future one as today.
    expected = [round(float(risk), 1) for risk in churn_risks([40, 10, 0, 0])]
    counts, _ = np.histogram(expected, bins=customer_stats.CHURN_EDGES)
    assert doc["churn_risk"]["counts"] == counts.tolist()


def test_p_alive_is_binned_as_profiles_round_it_and_the_matrix_is_the_models():
    rows = np.array([row(TODAY - 200 + i, TODAY - 5 * i, 2 + i % 7, 50.0 + i, 20.0, (TODAY - 5 * i) * 86400)
                     for i in range(30)], dtype=np.float64)
    doc = customer_stats.compute(rows, MODEL, NOW)
    first, last, days = rows[:, 0], rows[:, 1], rows[:, 2]
    p = probability_alive(MODEL.bgnbd, days - 1, (last - first) / 7.0, (TODAY - first) / 7.0)
    counts, _ = np.histogram(np.round(p, 4), bins=customer_stats.P_ALIVE_EDGES)
    assert doc["p_alive"]["counts"] == counts.tolist()
    matrix = doc["p_alive_matrix"]
    assert matrix["frequency"][-1] == 7 and matrix["age_weeks"] == round((TODAY - first.min()) / 7.0, 2)
    assert matrix["p_alive"][0] == [1.0] * len(matrix["recency_weeks"])  # no repeat purchase: alive
    oldest = (TODAY - first.min()) / 7.0  # weeks: the matrix is drawn for a customer this old
    assert matrix["p_alive"][3][-1] == round(float(probability_alive(MODEL.bgnbd, [3], [oldest], [oldest])[0]), 4)
    assert matrix["p_alive"][3][0] < matrix["p_alive"][3][-1]  # the same purchases, the last long ago


def test_no_customers_and_no_model():
    doc = customer_stats.compute(np.zeros((0, 6)), None, NOW)
    assert doc["customers"] == 0 and doc["churn_risk"]["counts"] == [0] * 10
    assert doc["p_alive"] is None and doc["predicted_ltv"] is None and doc["p_alive_matrix"] is None
