"""The purchase models by name (BG/NBD until the i21-core branch brings Pareto/NBD and MBG/NBD)."""
from dataclasses import dataclass
from typing import Callable

from . import bgnbd


class UnidentifiedModel(ValueError):
    """The data do not identify the model's parameters (e.g. no repeat buyers)."""


@dataclass(frozen=True)
class PurchaseModel:
    name: str
    params_cls: type
    parameter_names: tuple[str, ...]
    fit: Callable
    log_likelihood: Callable
    expected_purchases: Callable
    probability_alive: Callable
    conditional_expected_purchases: Callable


MODELS = {
    "bgnbd": PurchaseModel("bgnbd", bgnbd.BGNBDParams, ("r", "alpha", "a", "b"), bgnbd.fit_bgnbd,
                           bgnbd.bgnbd_log_likelihood, bgnbd.expected_purchases, bgnbd.probability_alive,
                           bgnbd.conditional_expected_purchases),
}
