"""examples/train_clip.py trains, checkpoints and resumes exactly (CPU)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shards import make_dataset  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_clip.py"


@pytest.fixture(scope="module")
def train_clip():
    spec = importlib.util.spec_from_file_location("train_clip", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_clip_resumes_like_an_uninterrupted_run(tmp_path, train_clip):
    info = make_dataset(tmp_path / "ds", shard_sizes={"train": (7, 5)}, image=True,
                        group_size=2)
    keys = info.keys["train"]
    neg = tmp_path / "neg.parquet"
    pq.write_table(pa.table({
        "query_key": keys, "negative_keys": [[keys[(i + 3) % 12]] for i in range(12)],
        "negative_scores": [[0.5]] * 12, "negative_ranks": [[1]] * 12,
        "positive_score": [0.9] * 12}), neg)
    common = [str(tmp_path / "ds"), "--batch-size", "4", "--image-size", "16",
              "--negatives", str(neg)]
    full = train_clip.main([*common, "--steps", "5", "--out", str(tmp_path / "a")])
    assert full["step"] == 5 and all(math.isfinite(x) for x in full["losses"])
    part = train_clip.main([*common, "--steps", "2", "--out", str(tmp_path / "b")])
    rest = train_clip.main([*common, "--steps", "5", "--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / "last.pt").exists()
    assert part["keys"] + rest["keys"] == full["keys"]
    assert rest["losses"] == pytest.approx(full["losses"][2:], rel=1e-4, abs=1e-5)


def test_train_clip_on_packed_variable_resolution_photos(tmp_path, train_clip):
    """Real-sized photos (1600x1000, 640x480 ...) ingested as they are, then trained on
    as NaViT-packed patch sequences at their own aspect; resume stays exact."""
    from mmshard.pipelines.executor import LocalExecutor
    from mmshard.pipelines.ingest.job import IngestConfig, ingest
    from mmshard.synth import photo_like

    src = tmp_path / "photos"
    src.mkdir()
    sizes = [(1600, 1000), (640, 480), (480, 640), (1000, 1000), (1600, 1000), (640, 480),
             (800, 320), (320, 800)]
    for i, (w, h) in enumerate(sizes):
        photo_like(w, h, seed=i).save(src / f"p{i}.jpg", quality=85)
        (src / f"p{i}.txt").write_text(f"photo {i} of {w} by {h}")
    ingest([str(src)], str(tmp_path / "ds"), IngestConfig(), executor=LocalExecutor(1))
    common = [str(tmp_path / "ds"), "--batch-size", "4", "--packed", "--patch", "32",
              "--max-tokens", "64"]
    full = train_clip.main([*common, "--steps", "3", "--out", str(tmp_path / "a")])
    assert full["step"] == 3 and all(math.isfinite(x) for x in full["losses"])
    grids = [tuple(g) for step in full["grids"] for g in step]
    assert len(set(grids)) > 2  # variable resolution: several grid shapes, none over budget
    assert all(r * c <= 64 for r, c in grids)
    assert (6, 10) in grids  # 1600x1000 (w x h): Pix2Struct grid of 6 x 10 <= 64 patches
    part = train_clip.main([*common, "--steps", "1", "--out", str(tmp_path / "b")])
    rest = train_clip.main([*common, "--steps", "3", "--out", str(tmp_path / "b")])
    assert part["keys"] + rest["keys"] == full["keys"]
    assert rest["losses"] == pytest.approx(full["losses"][1:], rel=1e-4, abs=1e-5)
