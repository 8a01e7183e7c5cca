"""The public surface: sorted __all__, every name resolves, imports stay cheap."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["mmshard", "mmshard.tokenizers", "mmshard.samplers"])
def test_all_is_sorted_and_every_name_resolves(module):
    mod = importlib.import_module(module)
    assert list(mod.__all__) == sorted(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name


def test_import_mmshard_loads_neither_torch_nor_ray():
    code = ("import sys, mmshard; cfg = mmshard.IngestConfig(); "
            "print(sorted(m for m in ('torch', 'ray', 'faiss', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
