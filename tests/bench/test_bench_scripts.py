"""The benchmark harness's own logic, run on the CPU (the GPU numbers come from a GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_script_compares_both_sides_on_cpu(tmp_path):
    gpu = _load("gpu")
    out = tmp_path / "gpu.json"
    rc = gpu.main(["--device", "cpu", "--quick", "--only", "log_mel_batch", "--only",
                   "faiss_flat", "--only", "transnetv2", "--out", str(out)])
    assert rc == 0
    rows = {r["check"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["log_mel_batch"]["status"] == "ok"
    assert rows["log_mel_batch"]["diff"] < 1e-4          # batched == one clip at a time
    assert rows["faiss_flat"]["overlap"] == 1.0           # same index, same neighbours
    assert rows["faiss_flat"]["speedup"] > 0
    # a missing optional path is reported as skipped with its reason, never as ok
    assert rows["transnetv2"]["status"] in ("ok", "skipped")
    if rows["transnetv2"]["status"] == "skipped":
        assert rows["transnetv2"]["skipped"]


def test_gpu_script_records_a_broken_check_as_error(monkeypatch):
    gpu = _load("gpu")

    def boom(device, quick):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(gpu.CHECKS, "log_mel_batch", boom)
    rows = gpu.run_checks("cpu", True, ["log_mel_batch"])
    assert rows == [{"check": "log_mel_batch", "error": "RuntimeError: kernel exploded"}]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_script_refuses_cuda_without_a_gpu(capsys):
    assert _load("gpu").main(["--device", "cuda", "--quick"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_all_collects_ratio_keys_from_any_result_shape():
    allmod = _load("all")
    got = allmod.headline_ratios({"summary": {"ratio_mmshard_over_peer": 2.4, "n": 5},
                                  "runs": [{"speedup_vs_whisper": 1.6, "ok": True},
                                           {"fraction_of_disk": 0.1}]})
    assert got == {"summary.ratio_mmshard_over_peer": 2.4, "runs.0.speedup_vs_whisper": 1.6,
                   "runs.1.fraction_of_disk": 0.1}
    assert set(allmod.SCRIPTS) >= {"ingest", "audio", "loader", "mine", "video", "vq"}
