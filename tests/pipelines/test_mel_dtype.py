"""The mel field set's stored dtype: float16 (default) differs from
``whisper.log_mel_spectrogram`` by at most half a float16 step near |x| = 1 (4.9e-4, the
figure in the README), float32 (``--option mel.dtype=float32``) by float32 rounding."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mmshard import synth
from mmshard.errors import ConfigError
from mmshard.pipelines.transform.fields import build_field_set


def _mel(options):
    x = synth.speech_like(2.0, 16000, seed=3).astype(np.float32)
    fs = build_field_set("mel", options)
    arr = np.load(io.BytesIO(fs.compute((x, 16000))["mel.npy"]), allow_pickle=False)
    return x, arr, fs


@pytest.mark.parametrize("dtype,bound", [("float16", 4.9e-4 * 1.01), ("float32", 2e-7)])
def test_stored_mel_matches_whisper_within_its_dtype(dtype, bound):
    whisper = pytest.importorskip("whisper")
    import torch

    x, arr, fs = _mel({"n_mels": 80, "dtype": dtype})
    assert arr.dtype == np.dtype(dtype)
    assert fs.provenance["config"]["storage_dtype"] == dtype
    ref = whisper.log_mel_spectrogram(torch.from_numpy(x), 80).numpy()
    n = min(arr.shape[-1], ref.shape[-1])
    err = float(np.abs(arr[:, :n].astype(np.float32) - ref[:, :n]).max())
    assert err <= bound
    if dtype == "float16":
        assert err > 1e-4  # the old README claim ("within 1e-4") does not hold for float16


def test_dtype_and_storage_dtype_together_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        build_field_set("mel", {"dtype": "float32", "storage_dtype": "float16"})
