"""One place that resolves a method's configuration: used by the runner's grid and by ``bench``.

A method's hyper-parameters are, in this order: the detector's ``Config`` defaults; the budget's image
size and weights (:mod:`fsad_bench.budgets`); the method's own table for the budget
(``Detector.budgets[<budget>]``, which may also set ``img_size``); the protocol's ``[set.<budget>]``;
``--weights`` (for a detector whose config has a ``weights`` field); ``--set``. ``key=value`` (in the
spec or on the command line) applies to every method whose config has ``key``, ``method.key=value``
to that method only (an unknown key there is an error), and ``img_size`` changes the image size. The
result goes through ``Detector.config_from_params``, so every path validates names, types and values
the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fsad_bench.budgets import Budget
from fsad_bench.detectors.base import Detector
from fsad_bench.detectors.hparams import PositiveInt, validate_value
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError


@dataclass(frozen=True)
class ResolvedMethod:
    """A method's class, image size and validated configuration for one budget."""

    method: str               # as the user named it: entry-point name or ``package.module:Class``
    cls: type[Detector]
    img_size: int
    config: Any               # an instance of ``cls.Config``
    #: False when the detector declares no table for the budget (it runs on its ``Config`` defaults)
    budget_declared: bool = True

    @property
    def params(self) -> dict[str, Any]:
        """Every hyper-parameter by name (what a cell stores and hashes)."""
        return dataclasses.asdict(self.config)

    def detector(self) -> Detector:
        return self.cls(self.config)

    def with_params(self, changes: Mapping[str, Any]) -> ResolvedMethod:
        """The same method with some hyper-parameters changed, validated again."""
        config = self.cls.config_from_params({**self.params, **changes})
        return dataclasses.replace(self, config=config)


def config_fields(cls: type[Detector]) -> set[str]:
    """The hyper-parameter names of a detector."""
    return {f.name for f in dataclasses.fields(cls.Config)}


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``--set`` strings ``key=value`` / ``method.key=value`` -> {key: value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --set {item!r}: expected key=value or method.key=value")
        out[key.strip()] = value.strip()
    return out


def checked_int(raw: Any, what: str, adapter: TypeAdapter) -> int:
    """``raw`` validated by ``adapter`` (strict: "3.5" or "abc" is no int); a one-line UserError naming
    ``what`` otherwise."""
    try:
        return validate_value(adapter, raw, False)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise UserError(f"bad {what} {raw!r}: {msg[:1].lower()}{msg[1:]}") from None


IMG_SIZE = TypeAdapter(PositiveInt)


def resolve_method_config(budget: Budget, method: str, weights: str | None = None,
                          overrides: Mapping[str, Any] | None = None,
                          protocol_set: Mapping[str, Any] | None = None) -> ResolvedMethod:
    """``method``'s image size and validated configuration at ``budget`` (see the module doc).

    ``weights``: ``--weights`` (None = the budget's). ``overrides``: parsed ``--set`` values
    (:func:`parse_overrides`); ``protocol_set``: the spec's ``[set.<budget>]``. Unscoped keys that
    ``method`` does not have are ignored here (the grid checks that some method of the run has them).
    """
    cls = load_detector(method)
    fields = config_fields(cls)
    declared = budget.name in cls.budgets
    params = dict(cls.budgets.get(budget.name, {}))
    img_size = params.pop("img_size", budget.img_size)
    if img_size is not None:
        img_size = checked_int(img_size, f"img_size of {method} at budget {budget.name}", IMG_SIZE)
    if "weights" in fields and budget.weights is not None:
        params.setdefault("weights", budget.weights)

    def apply(changes: Mapping[str, Any]) -> None:
        nonlocal img_size
        for key, value in changes.items():
            target, dot, name = key.rpartition(".")
            if dot and target != method:
                continue
            if name == "img_size":
                img_size = checked_int(value, f"--set {key}", IMG_SIZE)
            elif name in fields or dot:
                params[name] = value

    apply(protocol_set or {})
    if weights and "weights" in fields:
        params["weights"] = weights
    apply(overrides or {})
    if img_size is None:
        raise UserError(f"method {method} sets no img_size at budget {budget.name!r}, which has no default "
                        "image size; add img_size to its budgets entry, or --set img_size=N")
    return ResolvedMethod(method, cls, img_size, cls.config_from_params(params), declared)
