"""Pure-numerical core of the Pulse analytics service (numpy/scipy, no I/O).

* :mod:`.summary` -- transaction log -> per-customer (x, t_x, T, m) and RFM facts
* :mod:`.bgnbd` -- BG/NBD (Fader, Hardie & Lee 2005): fit, P(alive), expected purchases
* :mod:`.pareto_nbd` -- Pareto/NBD (Schmittlein, Morrison & Colombo 1987), the same functions
* :mod:`.mbgnbd` -- MBG/NBD (Batislam, Denizel & Filiztekin 2007), the same functions
* :mod:`.registry` -- the three by name (``MODELS``), for callers that iterate over models
* :mod:`.gamma_gamma` -- Gamma-Gamma spend model (Fader & Hardie 2013)
* :mod:`.clv` -- discounted CLV (lifetimes' method, weeks)
* :mod:`.rfm` -- RFM quintile scores, and their breakpoints for scoring one customer
* :mod:`.rules` -- the companion guide's segment / churn rules and the engagement score
* :mod:`.recommend` -- user-based cosine recommendations, and the item x item form that scores one user
"""

from .bgnbd import (
    BGNBDParams,
    bgnbd_log_likelihood,
    conditional_expected_purchases,
    expected_purchases,
    fit_bgnbd,
    probability_alive,
)
from .clv import WEEKS_PER_MONTH, customer_lifetime_value
from .errors import UnidentifiedModel
from .frequency_recency import FrequencyRecency, frequency_recency
from .gamma_gamma import (
    GammaGammaParams,
    conditional_expected_average_spend,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)
from .mbgnbd import MBGNBDParams, fit_mbgnbd
from .pareto_nbd import ParetoNBDParams, fit_pareto_nbd
from .recommend import CoPurchases, fit_co_purchases, recommend
from .registry import MODELS
from .rfm import RFMScores, quintile_breakpoints, quintile_scores, rfm_scores, score_with_breakpoints
from .rules import (
    ACTIVE,
    AT_RISK,
    DORMANT,
    ENGAGEMENT_WEIGHTS,
    VIP,
    churn_risks,
    days_since_last_purchase,
    engagement_scores,
    segments,
)
from .simulate import simulate_bgnbd, simulate_gamma_gamma_spend, simulate_mbgnbd, simulate_pareto_nbd

__all__ = [
    "BGNBDParams", "bgnbd_log_likelihood", "conditional_expected_purchases",
    "expected_purchases", "fit_bgnbd", "probability_alive",
    "ParetoNBDParams", "fit_pareto_nbd", "MBGNBDParams", "fit_mbgnbd", "MODELS", "UnidentifiedModel",
    "WEEKS_PER_MONTH", "customer_lifetime_value",
    "GammaGammaParams", "conditional_expected_average_spend", "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "CoPurchases", "fit_co_purchases", "recommend",
    "RFMScores", "quintile_breakpoints", "quintile_scores", "rfm_scores", "score_with_breakpoints",
    "ACTIVE", "AT_RISK", "DORMANT", "VIP", "ENGAGEMENT_WEIGHTS", "churn_risks",
    "days_since_last_purchase", "engagement_scores", "segments",
    "simulate_bgnbd", "simulate_gamma_gamma_spend", "simulate_mbgnbd", "simulate_pareto_nbd",
    "FrequencyRecency", "frequency_recency",
]
