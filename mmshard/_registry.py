"""Name -> factory registries (tokenizers, encoders, executors ...).

Strings become objects once, at the CLI/config edge, through a registry::

    >>> reg = Registry("tokenizer")
    >>> @reg.register("double")
    ... def _double(x): return 2 * x
    >>> reg.get("double")(3)
    6
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories; unknown names fail listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def load_object(spec: str) -> Any:
    """Import ``package.module:attr`` (a plug-in factory) and return the attribute.

    >>> load_object("os.path:join")("a", "b")
    'a/b'
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"plug-in spec must look like 'package.module:factory', got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"cannot import plug-in module {module!r} from {spec!r}: {e}") from e
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ConfigError(f"module {module!r} has no attribute {attr!r} (from {spec!r})") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A frozen config dataclass (nested ones included) as plain JSON/YAML data."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = config_to_dict(v)
        elif isinstance(v, tuple):
            v = [config_to_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        elif isinstance(v, dict):
            v = dict(v)
        out[f.name] = v
    return out


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from :func:`config_to_dict` output; unknown keys are a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} config must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} option(s) {unknown}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    hints = {}
    try:
        import typing

        hints = typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - forward refs we cannot resolve
        hints = {}
    for name, value in data.items():
        typ = hints.get(name)
        if isinstance(value, dict) and isinstance(typ, type) and dataclasses.is_dataclass(typ):
            value = config_from_dict(typ, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)  # type: ignore[call-arg]
