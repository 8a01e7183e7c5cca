"""The tokenizer protocol and the ``TOKENIZERS`` registry.

A *tokenizer* is a pure computation on decoded media (a waveform, an image, a clip) that
returns one numpy array to store as a derived shard field (``mel.npy``, ``vq.npy`` ...).
It never imports ``pipelines/`` or Ray; the transform job wraps it.

Every tokenizer:

- has ``name`` (its registry name), ``version`` (bumped whenever its output for the same
  input and config changes) and ``config`` (a frozen keyword-only config dataclass);
- has ``storage_dtype`` (``numpy.dtype``): the dtype the transform job stores its output
  in (float16 for float features, int16/int32 for token ids);
- has ``provenance()``: ``{"tokenizer": name, "version": version, "config": {...}}`` (plus
  tokenizer-specific keys, e.g. a codebook fingerprint) written next to the derived field;
- is called on one decoded item; audio tokenizers take ``tok(waveform, sample_rate)`` and
  resample internally when the rate differs from theirs.

Registering a tokenizer (a factory that takes the config; the factory names its config
class in ``config_class`` so the CLI can build the config from a dict or YAML)::

    @TOKENIZERS.register("whisper_mel")
    class WhisperMel:
        config_class = WhisperMelConfig
        def __init__(self, config: WhisperMelConfig | None = None) -> None: ...

Building one at the CLI/config edge (the only place strings become objects)::

    >>> from mmshard.tokenizers.audio_features import WhisperMel  # registers "whisper_mel"
    >>> tok = build_tokenizer("whisper_mel", {"n_mels": 128})
    >>> tok.provenance()["config"]["n_mels"]
    128

Modules register their tokenizers when imported; ``mmshard.tokenizers`` imports all
built-in tokenizer modules, so importing the package fills the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._registry import Registry, config_from_dict, config_to_dict
from ..errors import ConfigError

__all__ = ["TOKENIZERS", "Tokenizer", "build_tokenizer", "provenance_of", "storage_dtype"]


@runtime_checkable
class Tokenizer(Protocol):
    """What the transform job relies on: identity, config, storage dtype, provenance.

    >>> from mmshard.tokenizers.audio_features import KaldiFbank
    >>> isinstance(KaldiFbank(), Tokenizer)
    True
    """

    name: str
    version: str
    config: Any
    storage_dtype: np.dtype

    def provenance(self) -> dict[str, Any]:
        """``{"tokenizer": name, "version": version, "config": config_to_dict(config)}``."""
        ...


TOKENIZERS: Registry[Callable[..., Tokenizer]] = Registry("tokenizer")


def provenance_of(tok: Any) -> dict[str, Any]:
    """The standard provenance dict of a tokenizer (helper for ``provenance()`` methods).

    >>> from mmshard.tokenizers.audio_features import WhisperMel
    >>> sorted(provenance_of(WhisperMel()))
    ['config', 'tokenizer', 'version']
    """
    return {"tokenizer": tok.name, "version": tok.version, "config": config_to_dict(tok.config)}


_STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


def storage_dtype(name: str) -> np.dtype:
    """Map a config's ``storage_dtype`` string (``float16`` | ``float32``) to a numpy dtype.

    >>> storage_dtype("float16")
    dtype('float16')
    """
    try:
        return np.dtype(_STORAGE_DTYPES[name])
    except KeyError:
        raise ConfigError(
            f"storage_dtype must be one of {sorted(_STORAGE_DTYPES)}, got {name!r}"
        ) from None


def build_tokenizer(name: str, options: Mapping[str, Any] | Any | None = None) -> Tokenizer:
    """Build the tokenizer registered as ``name`` from a config object or a plain dict.

    ``options`` may be ``None`` (defaults), an instance of the factory's ``config_class``,
    or a mapping (e.g. parsed YAML) turned into that config with unknown keys rejected.

    >>> from mmshard.tokenizers.audio_features import KaldiFbank
    >>> build_tokenizer("fbank", {"num_mel_bins": 40}).config.num_mel_bins
    40
    """
    factory = TOKENIZERS.get(name)
    config_cls = getattr(factory, "config_class", None)
    if config_cls is None:
        raise ConfigError(
            f"tokenizer {name!r} factory {factory!r} has no config_class; "
            "registered factories must name their config dataclass"
        )
    if options is None:
        config = config_cls()
    elif isinstance(options, config_cls):
        config = options
    elif isinstance(options, Mapping):
        config = config_from_dict(config_cls, dict(options))
    else:
        raise ConfigError(
            f"options for tokenizer {name!r} must be a {config_cls.__name__} or a mapping, "
            f"got {type(options).__name__}"
        )
    return factory(config)
