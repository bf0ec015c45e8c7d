"""Budgets: named levels of effort (``paper``, ``quick``, ``smoke``) that every method declares its
hyper-parameters for, beside its class (``Detector.budgets``), so a plugin ships its budgets like a
built-in and a protocol spec keeps only what the protocol changes.

A method's configuration at a budget is, in this order: its ``Config`` defaults; the budget's image
size and weights (below, for a method that does not set them); the method's own table for the budget
(``Detector.budgets[name]``, which may set ``img_size``); the protocol's ``[set.<budget>]``;
``--weights``; ``--set`` (see :func:`fsad_bench.config.resolve_method_config`). A method may declare
budgets of other names too; such a budget has no default image size, so it must set ``img_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fsad_bench.errors import UserError


@dataclass(frozen=True)
class Budget:
    name: str
    description: str
    #: image side (px) of a method that sets none at this budget; None: the method must set it
    img_size: int | None = None
    #: ``weights`` of a method that has the field and sets none at this budget; None: its default
    weights: str | None = None


#: the budgets every built-in method declares
BUDGETS: dict[str, Budget] = {b.name: b for b in [
    Budget("paper", "each method's published settings (ImageNet weights, mostly 448 px; docs/fidelity.md): "
           "hours on a GPU", 448, "imagenet"),
    Budget("quick", "CPU-sized: 32-64 px, narrow backbones, random init, 100-250 steps; NOT comparable "
           "with the paper (ImageNet: --weights imagenet --set backbone=resnet18)", 64, "none"),
    Budget("smoke", "tests only: 32-64 px, random init, 2 steps", 32, "none"),
]}

#: the budget that reproduces the paper's settings; numbers of any other are not comparable with it
PAPER_BUDGET = "paper"


def get_budget(name: str, declared: set[str] | None = None) -> Budget:
    """The budget ``name``: a known one, or one that some method of the run declares (``declared``)."""
    if name in BUDGETS:
        return BUDGETS[name]
    if declared and name in declared:
        return Budget(name, "declared by the methods that run at it")
    known = sorted(set(BUDGETS) | set(declared or ()))
    raise UserError(f"unknown budget {name!r}; known: {', '.join(known)} (a method may declare budgets of "
                    "its own in Detector.budgets)")
