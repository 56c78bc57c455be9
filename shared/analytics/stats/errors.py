"""Errors of the model core that callers turn into answers (a failed job with its reason)."""

from __future__ import annotations

import numpy as np

__all__ = ["UnidentifiedModel", "require_repeat_information"]


class UnidentifiedModel(ValueError):
    """The data do not identify the model's parameters, so no fit is returned.

    Raised instead of returning a "converged" fit that sits at its start point: with nobody who
    made a repeat purchase (or every customer's age 0) the likelihood does not depend on the
    parameters of repeat buying and drop-out, its gradient there is 0, and every prediction of
    such a fit is meaningless (for BG/NBD, a = b = 1 makes the expectations 0/0).
    """

    def __init__(self, model: str, reason: str):
        self.model = model
        self.reason = reason
        super().__init__(f"{model} cannot be fitted: {reason}")


def require_repeat_information(model: str, x: np.ndarray, T: np.ndarray, w: np.ndarray) -> None:
    """Raise UnidentifiedModel unless some customer (of positive weight) has a repeat purchase and
    some customer has a positive age."""
    live = w > 0
    if not np.any(T[live] > 0):
        raise UnidentifiedModel(model, "every customer's observation period is empty (T = 0), "
                                       "so there is nothing to learn purchase rates from")
    if not np.any(x[live] > 0):
        raise UnidentifiedModel(model, "no customer has made a repeat purchase, so repeat-purchase "
                                       "and drop-out rates are not identified")
