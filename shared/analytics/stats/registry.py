"""The repeat-purchase models by name, so that callers (validation, scoring, the API) can iterate
over them without knowing each module.

``MODELS[name]`` has ``fit(frequency, recency, T, *, weights=None, initial_params=None)``,
``log_likelihood(params, frequency, recency, T)`` (per customer), ``expected_purchases(params,
t)``, ``probability_alive(params, frequency, recency, T)``, ``conditional_expected_purchases(
params, t, frequency, recency, T)``, ``params_cls`` and ``parameter_names`` (the fields of
``params_cls`` that are the model's parameters, in order). Every fit reports ``converged``,
``at_bounds`` and ``standard_errors`` and raises ``UnidentifiedModel`` (a ValueError) when the
data cannot identify it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import bgnbd, mbgnbd, pareto_nbd
from .errors import UnidentifiedModel

__all__ = ["MODELS", "Model", "UnidentifiedModel", "DEFAULT_MODEL"]

DEFAULT_MODEL = "bgnbd"


@dataclass(frozen=True)
class Model:
    name: str
    label: str                      # how people write it: "BG/NBD"
    fit: Callable[..., Any]
    log_likelihood: Callable[..., Any]
    expected_purchases: Callable[..., Any]
    probability_alive: Callable[..., Any]
    conditional_expected_purchases: Callable[..., Any]
    params_cls: type
    parameter_names: tuple[str, ...]

    def parameters(self, params: Any) -> dict[str, float]:
        """The fitted parameters of ``params`` as a name -> value dict."""
        return {k: float(getattr(params, k)) for k in self.parameter_names}

    def make_params(self, parameters: dict[str, float], **extra: Any) -> Any:
        """``params_cls`` from a name -> value dict (e.g. a stored model); ``extra`` fills the
        other fields (log_likelihood and n_customers default to 0)."""
        extra.setdefault("log_likelihood", 0.0)
        extra.setdefault("n_customers", 0)
        return self.params_cls(**{k: float(parameters[k]) for k in self.parameter_names}, **extra)


MODELS: dict[str, Model] = {
    "bgnbd": Model("bgnbd", "BG/NBD", bgnbd.fit_bgnbd, bgnbd.bgnbd_log_likelihood,
                   bgnbd.expected_purchases, bgnbd.probability_alive,
                   bgnbd.conditional_expected_purchases, bgnbd.BGNBDParams, bgnbd.PARAMETER_NAMES),
    "pareto_nbd": Model("pareto_nbd", "Pareto/NBD", pareto_nbd.fit_pareto_nbd,
                        pareto_nbd.pareto_nbd_log_likelihood, pareto_nbd.expected_purchases,
                        pareto_nbd.probability_alive, pareto_nbd.conditional_expected_purchases,
                        pareto_nbd.ParetoNBDParams, pareto_nbd.PARAMETER_NAMES),
    "mbgnbd": Model("mbgnbd", "MBG/NBD", mbgnbd.fit_mbgnbd, mbgnbd.mbgnbd_log_likelihood,
                    mbgnbd.expected_purchases, mbgnbd.probability_alive,
                    mbgnbd.conditional_expected_purchases, mbgnbd.MBGNBDParams,
                    mbgnbd.PARAMETER_NAMES),
}
