"""Plugin parameters: dataclass fields, set from the CLI as ``--param NAME.FIELD=VALUE``.

Tricks and workloads are both dataclasses whose fields are their parameters; this module lists
them with their defaults and builds an instance from CLI strings, converting each to its field's
type and turning every mistake into a one-line UserError that names the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from harness.errors import UserError, unknown_name_error

C = TypeVar("C")


def parameters(cls: type) -> dict[str, Any]:
    """Parameter names and their defaults, in declaration order."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def from_params(cls: type[C], kind: str, name: str, params: dict[str, str]) -> C:
    """Build ``cls`` (a plugin of ``kind`` called ``name``) from string overrides."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in fields:
            raise unknown_name_error(
                f"parameter of {kind} {name!r}:", key, fields, f"parameters: {', '.join(fields) or 'none'}"
            )
        kwargs[key] = convert(f"{kind} {name!r}", key, raw, hints[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise UserError(f"{kind} {name!r}: {error}") from None


def convert(owner: str, key: str, raw: str, hint: Any) -> Any:
    """Convert a CLI string to a field's type (bool, int, float, str, Literal, or Optional of those)."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Literal:
        choices = [str(a) for a in typing.get_args(hint)]
        if raw not in choices:
            raise UserError(f"{owner}: {key}={raw!r} is not valid; use any of: {', '.join(choices)}")
        return raw
    if origin in (typing.Union, types.UnionType) and args:
        if raw.lower() in ("none", "null", ""):
            return None
        return convert(owner, key, raw, args[0])
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                raise UserError(f"{owner}: {key}={raw!r} is not a finite number")
            return value
        if hint in (int, str):
            return hint(raw)
    except ValueError:
        raise UserError(f"{owner}: {key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    raise TypeError(f"{owner}: field {key!r} has a type ({hint}) the CLI cannot set")
