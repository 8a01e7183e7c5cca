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
        sys.modules[spec.name] = mod  # dataclasses look their module up there
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
    assert set(allmod.RUNS) == {"ingest", "audio", "loader", "mine"}
    assert set(allmod.EXTRA) >= {"video", "vq"}


def _results_like_the_scripts() -> dict:
    """The shapes bench/ingest.py, loader.py, mine.py and audio.py write (trimmed)."""
    ingest = {"sets": {"real": {"runs": [
        {"name": "mmshard-local", "task": "resize256_q95", "images_s": 200.0},
        {"name": "img2dataset", "task": "resize256_q95", "images_s": 100.0},
        {"name": "mmshard-ray", "task": "resize256_q95", "images_s": 150.0},
        {"name": "mmshard-ray", "task": "repack", "images_s": 900.0}]}}}
    loader = {"results": [
        {"set": "synthetic", "tool": "mmshard", "mode": "decode", "samples_per_s": 999.0},
        {"set": "real", "tool": "mmshard", "mode": "decode", "samples_per_s": 300.0},
        {"set": "real", "tool": "mmshard", "mode": "raw", "samples_per_s": 5000.0},
        {"set": "real", "tool": "webdataset", "mode": "decode", "samples_per_s": 100.0}]}
    mine = {"sets": {"real": {
        "rows": [{"method": "mmshard_exact", "status": "ok", "wall_s": 5.0},
                 {"method": "st_mine_hard_negatives", "status": "ok", "wall_s": 20.0}],
        "summary": {"neg_overlap_mmshard_vs_st": 0.998}}}}
    audio = {"set": "real", "results": {
        "mmshard/80": {"impl": "mmshard", "n_mels": 80, "ms_per_clip": 1.0},
        "whisper/80": {"impl": "whisper", "n_mels": 80, "ms_per_clip": 2.5}}}
    return {"ingest": ingest, "loader": loader, "mine": mine, "audio": audio}


def test_all_work_table_reads_each_scripts_result_and_judges_the_goal():
    allmod = _load("all")
    rows = {(r["run"], r["work"].split(",")[-1].strip()): r
            for r in allmod.work_rows(_results_like_the_scripts())}
    ray = next(r for (run, _), r in rows.items() if run == "ingest" and "Ray" in r["work"])
    local = next(r for (run, _), r in rows.items() if run == "ingest" and "local" in r["work"])
    assert (ray["mmshard"], ray["peer"], ray["ratio"], ray["met"]) == (150.0, 100.0, 1.5, "no")
    assert (local["ratio"], local["met"]) == (2.0, "yes")  # the repack run is not ingest
    loader = next(r for (run, _), r in rows.items() if run == "loader")
    assert (loader["ratio"], loader["goal"], loader["met"]) == (3.0, ">= 1.5x", "yes")
    mine = next(r for (run, _), r in rows.items() if run == "mine")
    assert mine["ratio"] == 4.0 and mine["identical"] is False
    assert mine["met"] == "no"  # fast enough, but the sets differ
    mel = [r for (run, _), r in rows.items() if run == "audio"]
    assert [(r["ratio"], r["met"]) for r in mel] == [(2.5, "yes"), (None, "n/a")]
    assert "missing" in mel[1]["note"]  # no 128-bin numbers in this result


def test_all_table_from_saved_results_runs_nothing(tmp_path, capsys):
    allmod = _load("all")
    for run, res in _results_like_the_scripts().items():
        (tmp_path / allmod.RUNS[run].result).write_text(json.dumps(res))
    (tmp_path / allmod.RUNS["audio"].result).unlink()
    out = tmp_path / "all.json"
    assert allmod.main(["--from-results", str(tmp_path), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["runs"] == [] and len(got["work"]) == len(allmod.WORK)
    by_run = {r["run"]: r for r in got["work"]}
    assert by_run["mine"]["ratio"] == 4.0 and "not found" in by_run["audio"]["note"]
    printed = capsys.readouterr().out
    for col in ("work", "mmshard", "peer", "ratio", "goal", "met?"):
        assert col in printed


def test_scale_tiny_dataset_is_read_whole_by_the_loader(tmp_path):
    scale = _load("scale")
    root = scale.make_tiny_dataset(tmp_path / "tiny", 25)
    got = scale.loader_worker(str(root), workers=0, batch=8)
    assert got["samples_delivered"] == 25 and got["batches"] == 4  # one rank: no padding
    assert got["rss_after_8_more_plans_mb"] >= got["rss_after_import_mb"] > 0
