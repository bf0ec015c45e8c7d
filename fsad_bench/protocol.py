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
import inspect
import itertools
import sys
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
    ValidationError,
)

from fsad_bench.budgets import BUDGETS
from fsad_bench.detectors.hparams import NonNegInt
from fsad_bench.errors import UserError
from fsad_bench.splits import SPLIT_RULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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


def _unique(items: list[Any]) -> list[Any]:
    """Without repeats, in first order: a seed, method or setting listed twice runs once."""
    return list(dict.fromkeys(items))


def _unscoped(table: dict[str, Any]) -> dict[str, Any]:
    for key in table:
        if "." in key:
            raise ValueError(f"{key!r} names one method: a spec changes every method alike (a method's own "
                             "hyper-parameters belong in its Detector.budgets)")
    return table


SettingValues = Annotated[list[Any], BeforeValidator(_as_values), AfterValidator(_unique)]
Scalar = Annotated[Any, AfterValidator(_scalar)]
Unique = AfterValidator(_unique)


class ProtocolSpec(BaseModel):
    """Every key a protocol spec may have (README, Protocols), validated strictly: ``seeds = "02"`` or
    ``datasets = "mvtec"`` are errors, not coerced; unknown keys are errors."""

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

    _source: str = PrivateAttr("")

    @property
    def source(self) -> str:
        """Where the spec was read from: ``packaged:q1.toml`` or the file's path."""
        return self._source

    def setting_grid(self) -> list[dict[str, Any]]:
        """Cartesian product of the split settings and the method settings, e.g. [{'n_anomaly': 10}]."""
        grid = {**self.settings, **self.method_settings}
        keys = sorted(grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]

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
        close = difflib.get_close_matches(value, list(known), n=1)
        raise UserError(f"protocol {source}: {key} = {value!r} is no {what}"
                        f"{f'; did you mean {close[0]!r}?' if close else ''} (known: {', '.join(known)})")


def _check(spec: ProtocolSpec, source: str) -> None:
    """What the schema cannot say: known names, and [settings] (minus swept hyper-parameters) plus
    [split_args] being exactly the split rule's arguments (a misspelt or missing one would otherwise
    fail every cell of the grid)."""
    _check_choice(spec.split, SPLIT_RULES, "split rule", source, "split")
    _check_choice(spec.report, REPORT_LAYOUTS, "report layout", source, "report")
    if spec.default_budget not in BUDGETS:
        raise UserError(f"protocol {source}: default_budget = {spec.default_budget!r} is not one of the "
                        f"budgets ({', '.join(BUDGETS)}); a method's own budget is chosen with --budget")
    params = inspect.signature(SPLIT_RULES[spec.split]).parameters
    wanted = [p for p in params if p not in ("index", "seed")]
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
    missing = [k for k in wanted if k not in given and params[k].default is inspect.Parameter.empty]
    if missing:
        raise UserError(f"protocol {source}: split rule {spec.split!r} needs {', '.join(missing)} "
                        "in [settings] or [split_args]")
    if not spec.title:
        spec.title = spec.name
