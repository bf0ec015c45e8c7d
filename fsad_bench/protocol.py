"""Protocol specs: one declarative TOML file per experiment of the paper (``protocols/*.toml``).

A spec says what the protocol changes, nothing about the methods' own hyper-parameters (those live
beside each detector, ``Detector.budgets``): the split rule and its settings grid, the datasets (and
the fallback used when none of them is present), the default methods, seeds and budget, the
hyper-parameters it sweeps (``[method_settings]``), protocol-wide changes at a budget
(``[set.<budget>]``, e.g. the K sweep's larger images) and how its report is laid out. Users may pass
the path of their own spec instead of a name.

:class:`ProtocolSpec` is the one model of a spec: the file is validated against it (strict types,
unknown keys are errors with the closest known key suggested), then the split rule's arguments are
checked, so a bad spec fails at load, before any cell is built.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import sys
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
)

from fsad_bench.budgets import BUDGETS
from fsad_bench.detectors.hparams import NonNegInt, validate_value
from fsad_bench.errors import UserError
from fsad_bench.registry import Registry
from fsad_bench.splits import SPLIT_RULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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


def _unique(items: list[Any]) -> list[Any]:
    """Without repeats, in first order: a seed, method or setting listed twice runs once."""
    return list(dict.fromkeys(items))


def _unscoped(table: dict[str, Any]) -> dict[str, Any]:
    for key in table:
        if "." in key:
            raise ValueError(f"{key!r} names one method: a spec changes every method alike (a method's own "
                             "hyper-parameters belong in its Detector.budgets)")
    return table


def _layout(obj: object, name: str) -> Any:
    if not (isinstance(obj, type) and callable(getattr(obj, "parts", None))
            and callable(getattr(obj, "axis", None))):
        raise UserError(f"report layout {name!r} is not a fsad_bench.report.layouts.Layout subclass")
    return obj


#: the report layouts a spec's ``report`` may name (:mod:`fsad_bench.report.layouts`), registered through
#: the entry-point group ``fsad_bench.layouts`` (ours in pyproject.toml, as a plugin's would be), so a
#: spec is checked without the report code being imported
LAYOUTS: Registry = Registry("report layout", "fsad_bench.layouts", _layout)

SettingValues = Annotated[list[Any], BeforeValidator(_as_values), AfterValidator(_unique)]
Scalar = Annotated[Any, AfterValidator(_scalar)]
Unique = AfterValidator(_unique)


class ProtocolSpec(BaseModel):
    """Every key a protocol spec may have (docs/reference/protocols.md), validated strictly:
    ``seeds = "02"`` or ``datasets = "mvtec"`` are errors, not coerced; unknown keys are errors."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)

    name: str
    title: str = ""  # "" = the name
    split: str
    datasets: Annotated[list[str], Unique]
    #: used when none of ``datasets`` is present under the data root
    fallback_datasets: Annotated[list[str], Unique] = []
    methods: Annotated[list[str], Unique]
    seeds: Annotated[list[NonNegInt], Unique] = [0]
    default_budget: str = "quick"
    #: the split rule's swept arguments, e.g. ``n_anomaly = [10]``
    settings: dict[str, SettingValues] = {}
    #: detector hyper-parameters swept as settings (e.g. ksweep's ``topk_ratio``)
    method_settings: dict[str, SettingValues] = {}
    #: constant keyword arguments of the split rule (e.g. q5's ``max_anomaly``)
    split_args: dict[str, Scalar] = {}
    #: per-dataset values of the ``known_class`` setting where "*" (every class) is not wanted
    known_classes: dict[str, list[str]] = {}
    #: per-dataset subset of categories (e.g. q2 uses MVTec AD's carpet and metal_nut only)
    categories: dict[str, list[str]] = {}
    #: compute pixel-level metrics from Detector.explain (q3)
    pixel_metrics: bool = False
    #: budget -> ``key = value`` applied to every method of the protocol at that budget, as ``--set
    #: key=value`` would (before the command line's); e.g. ``[set.quick] img_size = 128``
    set_: dict[str, Annotated[dict[str, Scalar], AfterValidator(_unscoped)]] = Field({}, alias="set")
    #: the report layout: "table2" | "table3" | "table4" | "table5" | "curve"
    report: str = "table2"
    #: the setting on the x axis of a "curve" report (e.g. "n_anomaly")
    curve_x: str | None = None
    #: the method the report tests every other against (p-value rows); None = no p-value rows
    reference_method: str | None = None
    #: method -> column title in this protocol's report, overriding the detector's display name
    display: dict[str, str] = {}
    #: the published tables (``results/paper/<name>.csv``) ``report --compare-paper`` sets this
    #: protocol's numbers beside
    paper_tables: list[str] = []

    _source: str = PrivateAttr("")

    @property
    def source(self) -> str:
        """Where the spec was read from: ``packaged:q1.toml`` or the file's path."""
        return self._source

    def setting_grid(self, replaced: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
        """Cartesian product of the split settings and the method settings, e.g. [{'n_anomaly': 10}];
        ``replaced``: setting values given on the command line instead of the spec's."""
        grid = {**self.settings, **(replaced or {}), **self.method_settings}
        keys = sorted(grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]

    def layout(self) -> Any:
        """The report layout this spec names (a :class:`fsad_bench.report.layouts.Layout`)."""
        return LAYOUTS[self.report]()

    def stored(self) -> dict[str, Any]:
        """The spec as JSON, as a results store and a run manifest record it."""
        return {**self.model_dump(mode="json", by_alias=True), "source": self.source}

    def set_at(self, budget: str) -> dict[str, Any]:
        """The protocol's changes at ``budget`` (``[set.<budget>]``)."""
        return dict(self.set_.get(budget, {}))


def packaged_protocols() -> list[str]:
    files = resources.files("fsad_bench.protocols")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_protocol(name_or_path: str) -> ProtocolSpec:
    """Spec by packaged name (``q1``) or by path to a TOML file, validated against :class:`ProtocolSpec`.

    Every problem (unknown key, wrong type, unknown split rule, a missing split argument) is one
    :class:`UserError` line naming the file and the key.
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
        text = (resources.files("fsad_bench.protocols") / f"{name_or_path}.toml").read_text(encoding="utf-8")
        source = f"packaged:{name_or_path}.toml"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"protocol {source} is not valid TOML: {exc}") from None
    for old in ("budgets", "budgets_from"):
        if old in raw:
            raise UserError(f"protocol {source}: '{old}' is gone: each method declares its own budgets "
                            "beside its class (Detector.budgets); a spec keeps only what the protocol "
                            "changes ([set.<budget>] for a change to every method, --set for one run)")
    try:
        spec = ProtocolSpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_error_line(exc, source)) from None
    spec._source = source
    _check(spec, source)
    return spec


def _error_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if err["type"] == "extra_forbidden":
        allowed = [f.alias or n for n, f in ProtocolSpec.model_fields.items()] if len(loc) == 1 else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"protocol {source}: unknown key {path!r}{hint}"
    if err["type"] == "missing":
        return f"protocol {source} lacks the key {path!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"protocol {source}: {path} = {err['input']!r}: {msg[:1].lower()}{msg[1:]}"


def _check_choice(value: str, known: Any, what: str, source: str, key: str) -> None:
    if value not in known:
        known = list(known)
        close = difflib.get_close_matches(value, known, n=1)
        raise UserError(f"protocol {source}: {key} = {value!r} is no {what}"
                        f"{f'; did you mean {close[0]!r}?' if close else ''} (known: {', '.join(known)})")


@functools.cache
def split_arguments(rule: str) -> dict[str, tuple[TypeAdapter, bool]]:
    """The arguments of split rule ``rule`` a spec sets (all but ``index`` and ``seed``): name ->
    (validator of its annotation, required)."""
    fn = SPLIT_RULES[rule]
    hints = typing.get_type_hints(fn, include_extras=True)
    params = inspect.signature(fn).parameters
    return {p: (TypeAdapter(hints.get(p, Any)), params[p].default is inspect.Parameter.empty)
            for p in params if p not in ("index", "seed")}


def setting_values(spec: ProtocolSpec, key: str, values: list[Any], what: str, from_text: bool = False
                   ) -> list[Any]:
    """``values`` of the split argument ``key`` validated against the split rule's annotation (text from
    ``--set`` is parsed, ``from_text``; TOML values must have the type: ``n_anomaly = ["10"]`` is an
    error); a one-line UserError naming ``what`` otherwise."""
    adapter, _ = split_arguments(spec.split)[key]
    out = []
    for value in values:
        try:
            out.append(validate_value(adapter, value, False) if from_text
                       else adapter.validate_python(value, strict=True))
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise UserError(f"{what} = {value!r}: {msg[:1].lower()}{msg[1:]} (an argument of split rule "
                            f"{spec.split!r})") from None
    return _unique(out)


def _check(spec: ProtocolSpec, source: str) -> None:
    """What the schema cannot say: known names, and [settings] (minus swept hyper-parameters) plus
    [split_args] being exactly the split rule's arguments (a misspelt or missing one would otherwise
    fail every cell of the grid)."""
    _check_choice(spec.split, SPLIT_RULES, "split rule", source, "split")
    _check_choice(spec.report, LAYOUTS, "report layout", source, "report")
    spec.layout().check(spec, source)
    if spec.default_budget not in BUDGETS:
        raise UserError(f"protocol {source}: default_budget = {spec.default_budget!r} is not one of the "
                        f"budgets ({', '.join(BUDGETS)}); a method's own budget is chosen with --budget")
    arguments = split_arguments(spec.split)
    wanted = list(arguments)
    for a, b in (("settings", "method_settings"), ("settings", "split_args")):
        both = set(getattr(spec, a)) & set(getattr(spec, b))
        if both:
            raise UserError(f"protocol {source}: {sorted(both)[0]!r} is in both [{a}] and [{b}]")
    given = {**{k: "settings" for k in spec.settings}, **{k: "split_args" for k in spec.split_args}}
    for key, table in given.items():
        if key not in wanted:
            close = difflib.get_close_matches(key, wanted, n=1)
            raise UserError(f"protocol {source}: {table}.{key} is no argument of split rule {spec.split!r}"
                            f"{f'; did you mean {close[0]!r}?' if close else ''} "
                            f"(its arguments: {', '.join(wanted)})")
    missing = [k for k in wanted if k not in given and arguments[k][1]]
    if missing:
        raise UserError(f"protocol {source}: split rule {spec.split!r} needs {', '.join(missing)} "
                        "in [settings] or [split_args]")
    for key, values in spec.settings.items():
        if key != "known_class":  # "*" stands for every class of the data
            spec.settings[key] = setting_values(spec, key, values, f"protocol {source}: settings.{key}")
    for key, value in spec.split_args.items():
        setting_values(spec, key, [value], f"protocol {source}: split_args.{key}")
    if not spec.title:
        spec.title = spec.name
