"""Loading a user's tokenizer from ``package.module:factory``."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from mmshard.errors import ConfigError
from mmshard.tokenizers.base import Tokenizer
from mmshard.tokenizers.plugin import load_tokenizer

PLUGIN = textwrap.dedent('''
    import numpy as np

    class Hasher:
        name = "hasher"
        version = "3"

        def __init__(self, buckets=16):
            self.buckets = buckets

        def encode(self, batch):
            return np.asarray(batch, dtype=np.int64) % self.buckets

        def provenance(self):
            return {"buckets": self.buckets}

    def make(buckets=16):
        return Hasher(buckets)

    class NoEncode:
        pass

    def make_bad():
        return NoEncode()

    def make_bad_provenance():
        h = Hasher()
        h.provenance = lambda: "oops"
        return h

    NOT_CALLABLE = 42
''')


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    pkg = tmp_path / "my_tok_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "hashing.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_tok_plugins.hashing"


def test_loads_factory_with_kwargs_and_encodes(plugin_module):
    tok = load_tokenizer(f"{plugin_module}:make", buckets=5)
    assert np.array_equal(tok.encode([[7, 12], [3, 4]]), [[2, 2], [3, 4]])
    assert np.array_equal(tok([9]), [4])
    assert tok.name == "hasher" and tok.version == "3"
    assert tok.buckets == 5  # attributes of the user's object stay reachable
    prov = tok.provenance()
    assert prov["plugin"] == f"{plugin_module}:make"
    assert prov["buckets"] == 5 and prov["config"] == {"buckets": 5}
    json.dumps(prov)
    assert isinstance(tok, Tokenizer) and tok.storage_dtype == np.int32


def test_a_class_can_be_the_factory(plugin_module):
    tok = load_tokenizer(f"{plugin_module}:Hasher")
    assert np.array_equal(tok.encode([17]), [1])


@pytest.mark.parametrize("attr, match", [
    ("make_bad", "without a callable encode"),
    ("NOT_CALLABLE", "not a callable factory"),
    ("missing", "has no attribute 'missing'"),
])
def test_bad_plugins_are_config_errors(plugin_module, attr, match):
    with pytest.raises(ConfigError, match=match):
        load_tokenizer(f"{plugin_module}:{attr}")


def test_bad_specs_and_arguments(plugin_module):
    with pytest.raises(ConfigError, match="package.module:factory"):
        load_tokenizer("no_colon_here")
    with pytest.raises(ConfigError, match="cannot import"):
        load_tokenizer("surely_not_a_module_xyz:make")
    with pytest.raises(ConfigError, match="rejected arguments"):
        load_tokenizer(f"{plugin_module}:make", colour="red")
    tok = load_tokenizer(f"{plugin_module}:make_bad_provenance")
    with pytest.raises(ConfigError, match="must return a dict"):
        tok.provenance()
