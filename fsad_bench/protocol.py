"""Protocol specs: one declarative TOML file per experiment of the paper (``protocols/*.toml``).

A spec names the split rule, the datasets (and the fallback used when none of them is present), the
default methods, seeds and settings grid, and the budgets (``paper``, ``quick``, ``smoke``): for each
budget the image size, the weights, and per-method hyper-parameters. Users may pass the path of
their own spec instead of a name.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fsad_bench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class Budget:
    name: str
    description: str
    img_size: int
    weights: str
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def method_params(self, method: str) -> dict[str, Any]:
        return dict(self.methods.get(method, {}))


@dataclass
class ProtocolSpec:
    name: str
    title: str
    split: str
    datasets: list[str]
    fallback_datasets: list[str]
    methods: list[str]
    seeds: list[int]
    settings: dict[str, list[Any]]
    budgets: dict[str, Budget]
    default_budget: str = "quick"
    source: str = ""

    def budget(self, name: str | None) -> Budget:
        name = name or self.default_budget
        if name not in self.budgets:
            raise UserError(f"unknown budget {name!r} for protocol {self.name}; "
                            f"known: {', '.join(self.budgets)}")
        return self.budgets[name]

    def setting_grid(self) -> list[dict[str, Any]]:
        """Cartesian product of the settings lists, e.g. [{'n_anomaly': 10}]."""
        keys = sorted(self.settings)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.settings[k] for k in keys))]


def packaged_protocols() -> list[str]:
    files = resources.files("fsad_bench.protocols")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_protocol(name_or_path: str) -> ProtocolSpec:
    """Spec by packaged name (``q1``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"protocol file {path} not found")
        text, source = path.read_text(), str(path)
    else:
        if name_or_path not in packaged_protocols():
            raise UserError(f"unknown protocol {name_or_path!r}; known: {', '.join(packaged_protocols())} "
                            "(or give the path of a .toml spec)")
        res = resources.files("fsad_bench.protocols") / f"{name_or_path}.toml"
        text, source = res.read_text(), f"packaged:{name_or_path}.toml"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"protocol {source} is not valid TOML: {exc}") from None
    return _parse(raw, source)


def _parse(raw: dict, source: str) -> ProtocolSpec:
    try:
        budgets = {}
        for bname, b in raw["budgets"].items():
            budgets[bname] = Budget(bname, b.get("description", ""), int(b["img_size"]),
                                    str(b.get("weights", "imagenet")), dict(b.get("methods", {})))
        settings = {k: v if isinstance(v, list) else [v] for k, v in raw.get("settings", {}).items()}
        return ProtocolSpec(
            name=raw["name"], title=raw.get("title", raw["name"]), split=raw["split"],
            datasets=list(raw["datasets"]), fallback_datasets=list(raw.get("fallback_datasets", [])),
            methods=list(raw["methods"]), seeds=[int(s) for s in raw.get("seeds", [0])],
            settings=settings, budgets=budgets, default_budget=raw.get("default_budget", "quick"),
            source=source)
    except KeyError as exc:
        raise UserError(f"protocol {source} lacks the key {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"protocol {source} is malformed: {exc}") from None
