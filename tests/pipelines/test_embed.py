"""`mmshard embed`: embeddings as a sidecar field set, readable by the miner."""

import io
import json

import numpy as np
import pytest

from mmshard.cli.main import main
from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.transform.job import tokenize
from mmshard.tokenizers.encoders import build_encoder
from tests.conftest import write_image, write_text


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "src"
    for i in range(6):
        write_image(str(src / f"p{i}.jpg"), 48, 40, seed=i)
        thing = "car" if i % 2 else "boat"
        write_text(str(src / f"p{i}.txt"), f"photo number {i} of a red {thing}")
    write_image(str(src / "nocap.jpg"), 48, 40, seed=9)  # an image without a caption
    ingest([str(src)], str(tmp_path / "ds"), IngestConfig(max_samples=4), executor=LocalExecutor(1))
    return tmp_path / "ds"


def vectors(root, name):
    ds = open_dataset(str(root))
    return {s["__key__"]: np.load(io.BytesIO(s[f"{name}.npy"]), allow_pickle=False)
            for sh in ds.index.shards for s in ds.iter_shard(sh, name)}


def test_embed_text_and_images_through_the_cli(photos, capsys):
    assert main(["embed", str(photos), "--encoder", "hashing", "--field", "txt",
                 "--dtype", "float16", "--executor", "local", "--no-progress"]) == 0
    assert main(["embed", str(photos), "--encoder", "pixels", "--field", "jpg",
                 "--executor", "local", "--no-progress"]) == 0
    txt, img = vectors(photos, "emb_txt"), vectors(photos, "emb_jpg")
    assert sorted(txt) == [f"p{i}" for i in range(6)]          # no caption: skipped
    assert sorted(img) == sorted([*txt, "nocap"])
    v = txt["p1"]
    assert v.dtype == np.float16 and v.shape == (512,)
    assert abs(float(np.linalg.norm(v.astype(np.float32))) - 1) < 1e-2
    assert img["p0"].dtype == np.float32 and img["p0"].shape == (256,)
    # the encoder is deterministic and similar captions are closer than dissimilar ones
    enc = build_encoder("hashing")
    a, b, c = enc.encode(["photo of a red car", "photo of a red cat", "zebra on ice"])
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert cos(a, b) > cos(a, c)
    prov = json.loads((photos / "emb_txt" / "index.json").read_text())["provenance"]
    assert prov["encoder"] == "hashing" and prov["field"] == "txt" and prov["normalize"]


def test_plugin_encoder_and_mismatched_modality(photos, tmp_path, monkeypatch):
    (tmp_path / "myenc.py").write_text(
        "import numpy as np\n"
        "class Enc:\n"
        "    def __init__(self, dim=3): self.dim = dim\n"
        "    def encode(self, images):\n"
        "        return np.stack([np.full(self.dim, float(im.mean())) for im in images])\n"
        "def make(dim=3): return Enc(dim)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tokenize(str(photos), {"emb_mine": {"kind": "emb", "encoder": "myenc:make", "field": "jpg",
                                        "normalize": False, "dim": 5}},
             executor=LocalExecutor(1))
    v = vectors(photos, "emb_mine")
    assert v["p0"].shape == (5,) and np.allclose(v["p0"], v["p0"][0])
    with pytest.raises(ConfigError, match="encodes text"):
        tokenize(str(photos), {"e": {"kind": "emb", "encoder": "hashing", "field": "jpg"}},
                 executor=LocalExecutor(1))
