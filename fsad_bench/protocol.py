"""Protocol specs: one declarative TOML file per experiment of the paper (``protocols/*.toml``).

A spec names the split rule, the datasets (and the fallback used when none of them is present), the
default methods, seeds and settings grid, and the budgets (``paper``, ``quick``, ``smoke``): for each
budget the image size, the weights, and per-method hyper-parameters. Users may pass the path of
their own spec instead of a name.

A spec file is validated against the pydantic model :class:`SpecFile` (strict types, unknown keys are
errors with the closest known key suggested); the split rule's arguments, ``budgets_from`` and the
default budget are checked too, so a bad spec fails at load, before any cell is built.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from fsad_bench.detectors.hparams import NonNegInt, PositiveInt
from fsad_bench.errors import UserError
from fsad_bench.splits import SPLIT_RULES

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
    """Spec by packaged name (``q1``) or by path to a TOML file, validated against :class:`SpecFile`.

    Every problem (unknown key, wrong type, unknown split rule, missing ``budgets_from`` spec, a budget
    without ``img_size``) is one :class:`UserError` line naming the file and the key.
    """
    path = Path(name_or_path)
    # a path when it looks like one; a folder that happens to be called "q1" (e.g. results) is not a spec
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise UserError(f"protocol file {path} not found")
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"protocol {source} is not UTF-8 text (TOML must be): byte {exc.start} "
                            f"is {exc.object[exc.start:exc.start + 1]!r}") from None
        except OSError as exc:
            raise UserError(f"cannot read protocol {source}: {exc.strerror or exc}") from None
    else:
        if name_or_path not in packaged_protocols():
            raise UserError(f"unknown protocol {name_or_path!r}; known: {', '.join(packaged_protocols())} "
                            "(or give the path of a .toml spec)")
        text, source = _packaged_text(name_or_path), f"packaged:{name_or_path}.toml"
    raw = _toml(text, source)
    _validated(raw, source)  # the file as written, before budget tables are shared into it
    if "budgets_from" in raw:
        # share budget tables with another packaged spec (q1 holds every method's), overriding per key
        raw["budgets"] = _merge(_shared_budgets(raw["budgets_from"], source, [source]),
                                raw.get("budgets", {}))
    return _spec(_validated(raw, source), source)


def _packaged_text(name: str) -> str:
    return (resources.files("fsad_bench.protocols") / f"{name}.toml").read_text(encoding="utf-8")


def _shared_budgets(name: str, source: str, chain: list[str]) -> dict:
    """The budget tables of packaged spec ``name`` (following its own ``budgets_from``)."""
    if name not in packaged_protocols():
        close = difflib.get_close_matches(name, packaged_protocols(), n=1)
        raise UserError(f"protocol {source}: budgets_from = {name!r} names no packaged protocol"
                        f"{f'; did you mean {close[0]!r}?' if close else ''} "
                        f"(known: {', '.join(packaged_protocols())})")
    if name in chain:
        raise UserError(f"protocol {source}: budgets_from forms a cycle: {' -> '.join(chain + [name])}")
    base = _toml(_packaged_text(name), f"packaged:{name}.toml")
    budgets = base.get("budgets", {})
    if "budgets_from" in base:
        budgets = _merge(_shared_budgets(base["budgets_from"], source, chain + [name]), budgets)
    return budgets


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


# --- the schema -------------------------------------------------------------------------------

#: report layouts the report knows (paper Tables 2-5, and the curves of Figs. 6-8)
REPORT_LAYOUTS = ("table2", "table3", "table4", "table5", "curve")
_SCALAR = (bool, int, float, str)


def _as_values(value: Any) -> list[Any]:
    """A settings entry: one value or a list of values, each a number, string or boolean."""
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, _SCALAR):
            raise ValueError(f"values must be numbers, strings or booleans, got {v!r}")
    return values


def _scalar(value: Any) -> Any:
    if not isinstance(value, _SCALAR):
        raise ValueError(f"must be a number, string or boolean, got {value!r}")
    return value


SettingValues = Annotated[list[Any], BeforeValidator(_as_values)]
Scalar = Annotated[Any, AfterValidator(_scalar)]


class _Strict(BaseModel):
    # strict: `seeds = "02"` or `datasets = "mvtec"` are errors, not coerced; unknown keys are errors
    model_config = ConfigDict(strict=True, extra="forbid")


class BudgetTable(_Strict):
    """``[budgets.<name>]``: image size, weights and per-method hyper-parameter tables."""

    description: str = ""
    img_size: PositiveInt | None = None  # required once budgets_from is merged in
    weights: Literal["imagenet", "none"] = "imagenet"
    #: method -> hyper-parameters (checked against the detector's Config when a grid is built)
    methods: dict[str, dict[str, Any]] = {}


class SpecFile(_Strict):
    """Every key a protocol spec may have (see README, Protocols)."""

    name: str
    title: str | None = None
    split: str
    report: str = "table2"
    datasets: list[str]
    fallback_datasets: list[str] = []
    methods: list[str]
    seeds: list[NonNegInt] = [0]
    default_budget: str = "quick"
    budgets_from: str | None = None
    settings: dict[str, SettingValues] = {}
    method_settings: dict[str, SettingValues] = {}
    split_args: dict[str, Scalar] = {}
    known_classes: dict[str, list[str]] = {}
    categories: dict[str, list[str]] = {}
    pixel_metrics: bool = False
    budgets: dict[str, BudgetTable] = {}
    #: the setting on the x axis of a "curve" report (e.g. "n_anomaly")
    curve_x: str | None = None
    #: the method the report tests every other against (p-value rows); None = no p-value rows
    reference_method: str | None = None
    #: method -> column title in this protocol's report, overriding the detector's display name
    display: dict[str, str] = {}


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys allowed where an unknown key was found (top level or inside a budget table)."""
    if len(loc) == 3 and loc[0] == "budgets":
        return list(BudgetTable.model_fields)
    return list(SpecFile.model_fields) if len(loc) == 1 else []


def _error_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"protocol {source}: unknown key {path!r}{hint}"
    if err["type"] == "missing":
        return f"protocol {source} lacks the key {path!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"protocol {source}: {path} = {err['input']!r}: {msg[:1].lower()}{msg[1:]}"


def _validated(raw: dict, source: str) -> SpecFile:
    try:
        spec = SpecFile.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_error_line(exc, source)) from None
    _check_choice(spec.split, SPLIT_RULES, "split rule", source, "split")
    _check_choice(spec.report, REPORT_LAYOUTS, "report layout", source, "report")
    return spec


def _check_choice(value: str, known: Any, what: str, source: str, key: str) -> None:
    if value not in known:
        close = difflib.get_close_matches(value, list(known), n=1)
        raise UserError(f"protocol {source}: {key} = {value!r} is no {what}"
                        f"{f'; did you mean {close[0]!r}?' if close else ''} (known: {', '.join(known)})")


def _check_split_arguments(spec: SpecFile, source: str) -> None:
    """[settings] (minus swept hyper-parameters) and [split_args] must be exactly the split rule's
    arguments: a misspelt or missing one would otherwise fail every cell of the grid."""
    params = inspect.signature(SPLIT_RULES[spec.split]).parameters
    wanted = [p for p in params if p not in ("index", "seed")]
    both = set(spec.settings) & set(spec.method_settings)
    if both:
        raise UserError(f"protocol {source}: {sorted(both)[0]!r} is in both [settings] and [method_settings]")
    both = set(spec.settings) & set(spec.split_args)
    if both:
        raise UserError(f"protocol {source}: {sorted(both)[0]!r} is in both [settings] and [split_args]")
    given = {**{k: "settings" for k in spec.settings}, **{k: "split_args" for k in spec.split_args}}
    for key, table in given.items():
        if key not in wanted:
            close = difflib.get_close_matches(key, wanted, n=1)
            raise UserError(f"protocol {source}: {table}.{key} is no argument of split rule {spec.split!r}"
                            f"{f'; did you mean {close[0]!r}?' if close else ''} "
                            f"(its arguments: {', '.join(wanted)})")
    missing = [k for k in wanted if k not in given and params[k].default is inspect.Parameter.empty]
    if missing:
        raise UserError(f"protocol {source}: split rule {spec.split!r} needs {', '.join(missing)} "
                        "in [settings] or [split_args]")


def _spec(spec: SpecFile, source: str) -> ProtocolSpec:
    _check_split_arguments(spec, source)
    for bname, b in spec.budgets.items():
        if b.img_size is None:
            raise UserError(f"protocol {source} lacks the key 'budgets.{bname}.img_size'")
        for method, table in b.methods.items():
            size = table.get("img_size")
            if size is not None and (type(size) is not int or size < 1):
                raise UserError(f"protocol {source}: budgets.{bname}.methods.{method}.img_size = {size!r}: "
                                "input should be an integer >= 1")
    if not spec.budgets:
        raise UserError(f"protocol {source} has no [budgets] table (or budgets_from = \"q1\")")
    if spec.default_budget not in spec.budgets:
        raise UserError(f"protocol {source}: default_budget = {spec.default_budget!r} is not one of its "
                        f"budgets ({', '.join(spec.budgets)})")
    budgets = {bname: Budget(bname, b.description, b.img_size, b.weights, dict(b.methods))
               for bname, b in spec.budgets.items()}
    return ProtocolSpec(
        name=spec.name, title=spec.title or spec.name, split=spec.split,
        datasets=_unique(spec.datasets), fallback_datasets=_unique(spec.fallback_datasets),
        methods=_unique(spec.methods), seeds=_unique(spec.seeds),
        settings={k: _unique(v) for k, v in spec.settings.items()}, budgets=budgets,
        default_budget=spec.default_budget, source=source,
        method_settings={k: _unique(v) for k, v in spec.method_settings.items()},
        split_args=dict(spec.split_args), known_classes=dict(spec.known_classes),
        categories=dict(spec.categories), pixel_metrics=spec.pixel_metrics, report=spec.report,
        curve_x=spec.curve_x, reference_method=spec.reference_method, display=dict(spec.display))


def _unique(items: list[Any]) -> list[Any]:
    """Without repeats, in first order: a seed, method or setting listed twice runs once."""
    return list(dict.fromkeys(items))
