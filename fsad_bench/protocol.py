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
    #: detector hyper-parameters swept as settings (e.g. ksweep's topk_ratio)
    method_settings: dict[str, list[Any]] = field(default_factory=dict)
    #: constant keyword arguments of the split rule (e.g. q5's max_anomaly)
    split_args: dict[str, Any] = field(default_factory=dict)
    #: per-dataset values of the ``known_class`` setting where "*" (every class) is not wanted
    known_classes: dict[str, list[str]] = field(default_factory=dict)
    #: per-dataset subset of categories (e.g. q2 uses MVTec AD's carpet and metal_nut only)
    categories: dict[str, list[str]] = field(default_factory=dict)
    #: compute pixel-level metrics from Detector.explain (q3)
    pixel_metrics: bool = False
    #: the report layout: "table2" | "table3" | "table4" | "table5" | "curve"
    report: str = "table2"
    #: the setting on the x axis of a "curve" report (e.g. "n_anomaly")
    curve_x: str | None = None
    #: the method the report tests every other against (p-value rows); None = no p-value rows
    reference_method: str | None = None
    #: method -> column title in this protocol's report, overriding the detector's display name
    display: dict[str, str] = field(default_factory=dict)

    def budget(self, name: str | None) -> Budget:
        name = name or self.default_budget
        if name not in self.budgets:
            raise UserError(f"unknown budget {name!r} for protocol {self.name}; "
                            f"known: {', '.join(self.budgets)}")
        return self.budgets[name]

    def setting_grid(self) -> list[dict[str, Any]]:
        """Cartesian product of the split settings and the method settings, e.g. [{'n_anomaly': 10}]."""
        grid = {**self.settings, **self.method_settings}
        keys = sorted(grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


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
    raw = _toml(text, source)
    if "budgets_from" in raw:
        # share budget tables with another packaged spec (q1 holds every method's), overriding per key
        base = _toml((resources.files("fsad_bench.protocols") / f"{raw['budgets_from']}.toml").read_text(),
                     raw["budgets_from"])
        raw["budgets"] = _merge(base.get("budgets", {}), raw.get("budgets", {}))
    return _parse(raw, source)


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"protocol {source} is not valid TOML: {exc}") from None


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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
            source=source,
            method_settings={k: v if isinstance(v, list) else [v]
                             for k, v in raw.get("method_settings", {}).items()},
            split_args=dict(raw.get("split_args", {})), known_classes=dict(raw.get("known_classes", {})),
            pixel_metrics=bool(raw.get("pixel_metrics", False)), report=raw.get("report", "table2"),
            categories=dict(raw.get("categories", {})), curve_x=raw.get("curve_x"),
            reference_method=raw.get("reference_method"),
            display={str(k): str(v) for k, v in raw.get("display", {}).items()})
    except KeyError as exc:
        raise UserError(f"protocol {source} lacks the key {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"protocol {source} is malformed: {exc}") from None
