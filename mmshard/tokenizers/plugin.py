"""Load a user's tokenizer from ``package.module:factory``.

The factory is called with the keyword arguments given (e.g. from ``--tokenizer-arg`` or
a YAML mapping) and must return an object with ``encode(batch) -> ids``. ``name``,
``version``, ``storage_dtype`` and ``provenance()`` are optional on a plug-in:
:class:`PluginTokenizer` fills them in (``name`` = the spec, ``version`` = ``"0"``,
``storage_dtype`` = int32, provenance = the spec and the factory's keyword arguments)
so the transform job can record provenance for every derived field.

    >>> tok = load_tokenizer("mmshard.tokenizers.plugin:_demo_factory", offset=1)
    >>> tok.encode([[1, 2], [3]]), tok.provenance()["tokenizer"]
    ([[2, 3], [4]], 'mmshard.tokenizers.plugin:_demo_factory')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._registry import load_object
from ..errors import ConfigError

__all__ = ["PluginTokenizer", "load_tokenizer"]


class PluginTokenizer:
    """A plug-in tokenizer object with mmshard's identity and provenance added.

    ``encode(batch)`` and ``tok(batch)`` call the user's ``encode``; other attributes
    are read from the wrapped object (``tok.inner``).
    """

    def __init__(self, inner: Any, spec: str, kwargs: dict[str, Any]) -> None:
        self.inner = inner
        self.spec = spec
        self.kwargs = dict(kwargs)
        self.name = str(getattr(inner, "name", spec))
        self.version = str(getattr(inner, "version", "0"))
        self.config = getattr(inner, "config", self.kwargs)
        self.storage_dtype = np.dtype(getattr(inner, "storage_dtype", np.int32))

    def encode(self, batch: Any) -> Any:
        return self.inner.encode(batch)

    def __call__(self, batch: Any) -> Any:
        return self.inner.encode(batch)

    def provenance(self) -> dict[str, Any]:
        inner = getattr(self.inner, "provenance", None)
        base = {"tokenizer": self.name, "version": self.version, "plugin": self.spec,
                "config": _jsonable(self.kwargs)}
        if callable(inner):
            extra = inner()
            if not isinstance(extra, dict):
                raise ConfigError(f"plug-in {self.spec!r}: provenance() must return a dict, "
                                  f"got {type(extra).__name__}")
            base.update(extra)
        return base

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def __repr__(self) -> str:
        return f"PluginTokenizer({self.spec!r}, {self.inner!r})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def load_tokenizer(spec: str, **kwargs: Any) -> PluginTokenizer:
    """Import ``package.module:factory``, call ``factory(**kwargs)``, check ``encode``.

    Errors are :class:`~mmshard.errors.ConfigError`: a malformed spec, a module that does
    not import, a missing attribute, a factory that is not callable or raises, or a
    returned object without a callable ``encode``.

    >>> load_tokenizer("mmshard.tokenizers.plugin:_demo_factory").encode([[0]])
    [[0]]
    """
    factory = load_object(spec)
    if not callable(factory):
        raise ConfigError(f"plug-in {spec!r} is a {type(factory).__name__}, not a callable "
                          "factory; point the spec at a class or function")
    try:
        obj = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"plug-in factory {spec!r} rejected arguments "
                          f"{sorted(kwargs)}: {e}") from e
    encode = getattr(obj, "encode", None)
    if not callable(encode):
        raise ConfigError(
            f"plug-in {spec!r} returned {type(obj).__name__} without a callable "
            "encode(batch) -> ids; return an object with that method")
    return PluginTokenizer(obj, spec, kwargs)


class _Demo:
    """A tiny plug-in used by the doctests: adds ``offset`` to every id."""

    version = "1"

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def encode(self, batch: list[list[int]]) -> list[list[int]]:
        return [[i + self.offset for i in row] for row in batch]


def _demo_factory(offset: int = 0) -> _Demo:
    return _Demo(offset)
