"""Hyper-parameter types and the parser that fills a detector's ``Config`` from the spec and ``--set``.

A detector's ``Config`` is a plain dataclass. Its field annotations say what a value must be, with
range constraints declared on the field itself (pydantic v2 metadata inside ``typing.Annotated``)::

    @dataclass
    class MyConfig:
        epochs: PositiveInt = 50           # >= 1
        lr: PositiveFloat = 1e-3           # finite and > 0
        mode: Literal["a", "b"] = "a"      # one of the names

:func:`parse_config` validates every given value against its field with pydantic, so ``--set`` strings
are parsed into the field's type (``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"yes"`` -> True, ``"50,100"`` ->
(50, 100) for a tuple field) and every violation is one line naming the value, the key, the detector and
the rule. Values that are not strings (TOML numbers and booleans) are checked strictly: ``epochs = true``
or ``epochs = 4.5`` is an error, not 1 or a silent truncation. A field without a usable annotation (``Any``,
or a name that cannot be resolved) is parsed as the type of its default, so third-party configs written
without these types keep working.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from fsad_bench.errors import UserError

#: an integer >= 1 (epochs, steps, sizes)
PositiveInt = Annotated[int, Field(ge=1)]
#: an integer >= 0 (0 usually means "off" or "one pass over the data")
NonNegInt = Annotated[int, Field(ge=0)]
#: images per training step when the step splits the batch into normals and labelled anomalies, or
#: normalises it with BatchNorm in training mode: both need at least two images
BatchSize = Annotated[int, Field(ge=2)]
#: a finite number > 0 (learning rates, margins, epsilons)
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: a finite number >= 0 (weight decay, clipping norm, 0 = off)
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: a ratio in (0, 1]
Fraction = Annotated[float, Field(gt=0, le=1)]
#: rotation augmentation in degrees, [0, 180]
Degrees = Annotated[float, Field(ge=0, le=180)]

_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence)


def _field_type(f: dataclasses.Field, hints: Mapping[str, Any]) -> Any:
    """The type a field's values are validated as: its annotation, else the type of its default."""
    hint = hints.get(f.name, f.type)
    if hint is not Any and not isinstance(hint, str):
        return hint
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        return Any
    return Any if default is None else type(default)


def _is_sequence(tp: Any) -> bool:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return (typing.get_origin(tp) or tp) in _SEQUENCES


@functools.cache
def field_adapters(config_cls: type) -> dict[str, tuple[TypeAdapter, bool]]:
    """Per field of the dataclass ``config_cls``: (its pydantic validator, whether it holds a sequence)."""
    try:
        hints = typing.get_type_hints(config_cls, include_extras=True)
    except Exception:  # a plugin's unresolvable annotation: fall back to the defaults' types
        hints = {}
    out = {}
    for f in dataclasses.fields(config_cls):
        tp = _field_type(f, hints)
        try:
            adapter = TypeAdapter(tp)
        except (PydanticSchemaGenerationError, TypeError, NameError):
            tp = Any
            adapter = TypeAdapter(Any)
        out[f.name] = (adapter, _is_sequence(tp))
    return out


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = "".join(f"[{p}]" for p in err["loc"])
    msg = err["msg"]
    return f"{where + ': ' if where else ''}{msg[:1].lower()}{msg[1:]}"


def validate_value(adapter: TypeAdapter, raw: Any, is_sequence: bool) -> Any:
    """``raw`` as the field's type: strings are parsed (``--set``), other values must have the type."""
    if isinstance(raw, str) and is_sequence:
        raw = [item.strip() for item in raw.split(",") if item.strip()]  # --set key=50,100
    if isinstance(raw, (str, list, tuple)):
        return adapter.validate_python(raw)  # lax: "3" -> 3, a TOML array -> a tuple field
    return adapter.validate_python(raw, strict=True)  # TOML `epochs = true` is not 1


def parse_config(config_cls: type, params: Mapping[str, Any], detector: str) -> Any:
    """``config_cls(**params)`` with every value validated and parsed; :class:`UserError` otherwise.

    Unknown keys name the valid ones (and the closest match); a bad value names itself, the key, the
    detector and the rule it breaks, on one line.
    """
    adapters = field_adapters(config_cls)
    values, problems = {}, []
    for key, raw in params.items():
        if key not in adapters:
            close = difflib.get_close_matches(key, adapters, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"unknown hyper-parameter {key!r} for detector {detector}; {hint}"
                            f"valid: {', '.join(sorted(adapters)) or '(none)'}")
        adapter, is_sequence = adapters[key]
        try:
            values[key] = validate_value(adapter, raw, is_sequence)
        except ValidationError as exc:
            problems.append(f"bad value {raw!r} for {key} of {detector}: {_one_line(exc)}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    try:
        return config_cls(**values)
    except UserError:
        raise
    except (TypeError, ValueError) as exc:  # a plugin's own __post_init__ check, a missing field
        raise UserError(f"bad hyper-parameters for detector {detector}: {exc}") from None


__all__ = ["BatchSize", "Degrees", "Fraction", "NonNegFloat", "NonNegInt", "PositiveFloat", "PositiveInt",
           "field_adapters", "parse_config", "validate_value"]
