"""The one shape of a fitted model's result: its own parameters, then what every fit reports
(log-likelihood, customers, convergence, parameters held at a bound, iterations, standard
errors). BG/NBD, Pareto/NBD, MBG/NBD and Gamma-Gamma declare only their parameters."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

# (name, annotation, default) in constructor order, after the model's parameters: positional
# construction `BGNBDParams(r, alpha, a, b, log_likelihood, n_customers)` keeps working.
_Params = TypeVar("_Params")
# The arrays the models compute on, one entry per customer.
Floats = npt.NDArray[np.float64]

_FIT_REPORT: tuple[tuple[str, str, Any], ...] = (
    ("log_likelihood", "float", MISSING),
    ("n_customers", "int", MISSING),
    ("converged", "bool", True),
    ("at_bounds", "tuple[str, ...]", ()),  # parameters the fit held at a bound (see bgnbd.LOG_PARAM_BOUND)
    ("iterations", "int", 0),
    # observed-information standard errors (NaN for a parameter held at a bound); derived from the
    # rest, so left out of == and hash: the params stay hashable
    ("standard_errors", "dict[str, float]", field(default_factory=dict, compare=False)),
)


def fitted_params(cls: type[_Params]) -> type[_Params]:
    """A frozen dataclass of the class's parameters (its fields without a default), the fit
    report, then the class's own fields with a default (e.g. Pareto/NBD's `limit`).
    `cls.parameter_names` lists the parameters in order."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    parameters = {name: kind for name, kind in own.items() if name not in cls.__dict__}
    defaulted = {name: kind for name, kind in own.items() if name in cls.__dict__}
    cls.__annotations__ = {**parameters, **{name: kind for name, kind, _ in _FIT_REPORT}, **defaulted}
    for name, _, default in _FIT_REPORT:
        if default is not MISSING:
            setattr(cls, name, default)
    cls.parameter_names = tuple(parameters)  # type: ignore[attr-defined]  # read through names_of
    return dataclass(frozen=True)(cls)


def names_of(cls: type) -> tuple[str, ...]:
    """The parameters of a `fitted_params` class, in constructor order."""
    return cast("tuple[str, ...]", cls.__dict__["parameter_names"])


def unpack(params: Any, cls: type) -> tuple[float, ...]:
    """The parameters of a fit of `cls` (or of any result with those attributes), or of a
    sequence of values in `cls.parameter_names` order."""
    if not isinstance(params, tuple | list | np.ndarray):
        return tuple(getattr(params, name) for name in names_of(cls))
    values = tuple(float(v) for v in params)
    names = names_of(cls)
    if len(values) != len(names):
        raise ValueError(f"expected {len(names)} parameters {names}, got {len(values)}")
    return values
