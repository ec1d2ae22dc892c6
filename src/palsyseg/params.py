"""Typed configuration read once at the edge from ``params.yaml``.

``params.yaml`` is the single source of the pipeline's knobs (DVC tracks it, ``dvc exp run -S``
edits it). Each section maps onto the ``@dataclass`` that lives next to the code it configures
(``SynthConfig`` in ``data.synth``, ``SplitConfig`` in ``split``, ...); :func:`from_section`
builds one and refuses unknown keys or wrong types with a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from palsyseg.errors import ConfigError

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read a YAML mapping; a missing file gives ``{}`` only for the default path."""
    import yaml

    path = Path(path)
    if not path.is_file():
        if path == DEFAULT_PARAMS:
            return {}
        raise ConfigError(f"{path}: parameters file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    # a bare ``dict`` / ``list`` / ``tuple`` annotation is its own origin (get_origin gives None)
    origin = annotation if annotation in (dict, list, tuple) else typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return from_section(value, annotation, where=where)
    raise ConfigError(
        f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}"
    )


def from_section(section: dict[str, Any] | None, cls: type[T], *, where: str = "params.yaml") -> T:
    """Build dataclass ``cls`` from a mapping, using its defaults for missing keys.

    Unknown keys and wrong types raise :class:`ConfigError` naming ``where`` and the key.
    """
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a mapping, got {section!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(names))})"
        )
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in section.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_section(name: str, cls: type[T], path: str | os.PathLike[str] = DEFAULT_PARAMS) -> T:
    """``from_section(load_params(path)[name], cls)`` with errors naming ``path`` and ``name``."""
    return from_section(load_params(path).get(name), cls, where=f"{path}:{name}")
