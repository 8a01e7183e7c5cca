"""Whisper log-mel on CPU, one thread: mmshard vs whisper vs librosa, plus parity numbers.

Two clip sets, both in one run by default:

- ``synthetic``: generated clips (speech-like harmonic glides, chords, noise; 5-30 s at
  16 kHz, seeded);
- ``real``: the 150 longest voice prompts of Debian's ``asterisk-core-sounds-en-g722``
  (real recorded speech, G.722 = 16 kHz wideband, 1004 s), downloaded once with
  ``apt-get download`` into bench/data/speech and decoded by the ffmpeg CLI to float32
  mono 16 kHz. Skipped with a note when the package cannot be fetched.

Every clip is computed by each implementation in turn (in a seeded random order, new for
every clip and pass), for ``--repeats`` passes; a clip's time is its fastest pass, and
the totals are sums of those (load from other jobs hits every tool alike and the least
disturbed run of each clip counts). Two clocks: wall time and the thread's CPU time
(``time.thread_time``: what the computation itself cost, without the time other
processes held the core). ``mmshard batch`` is one ``log_mel_batch`` call over the whole
set per pass. librosa runs ``librosa.feature.melspectrogram`` with the same STFT/filter
parameters followed by whisper's log/clamp/scale. Parity: the max abs difference to
``whisper.log_mel_spectrogram`` over every clip, and whether every batched result is
bit-for-bit the one-clip one.
/proc/loadavg is recorded before and after each set.

    python bench/audio.py               # both sets: 50 synthetic + 150 real clips
    python bench/audio.py --quick       # 8 synthetic + 20 real clips
    python bench/audio.py --set real    # one set

Writes bench/results/audio.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

# this tree's mmshard, whatever an editable install elsewhere points at
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SR = 16000


def make_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    kind = rng.integers(3)
    if kind == 0:  # speech-like: gliding f0 with a few formant-weighted harmonics
        f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.exp(-h / 6) * np.sin(h * phase) for h in range(1, 12))
        x = x * (1 + 0.6 * np.sin(2 * np.pi * 4 * t))
    elif kind == 1:  # chords
        x = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, size=4))
    else:
        x = rng.standard_normal(n)
    x = x + 0.01 * rng.standard_normal(n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def librosa_log_mel(x: np.ndarray, n_mels: int) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=x, sr=SR, n_fft=400, hop_length=160, n_mels=n_mels, power=2.0, center=True,
        pad_mode="reflect", htk=False, norm="slaney",
    )[:, :-1]
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


SPEECH = Path(__file__).resolve().parent / "data" / "speech"


def real_clips(n: int) -> list[np.ndarray]:
    """The ``n`` longest real speech prompts (asterisk-core-sounds-en-g722) as float32."""
    if not any(SPEECH.glob("x/**/*.g722")):
        SPEECH.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "asterisk-core-sounds-en-g722"], cwd=SPEECH,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deb = next(SPEECH.glob("asterisk-core-sounds-en-g722_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(SPEECH / "x")], check=True)
    files = sorted(SPEECH.glob("x/**/*.g722"), key=lambda p: (-p.stat().st_size, str(p)))[:n]
    out = []
    for f in files:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "g722", "-i", str(f), "-ar",
                              str(SR), "-ac", "1", "-f", "f32le", "-"], check=True,
                             capture_output=True).stdout
        out.append(np.frombuffer(raw, np.float32).copy())
    return out


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other jobs on the machine)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def time_set(clips: list[np.ndarray], repeats: int) -> dict[str, dict]:
    """Per-impl timing and parity of one clip set at 80 and 128 bins."""
    import whisper

    from mmshard.tokenizers.audio_features import log_mel_batch, log_mel_spectrogram

    tensors = [torch.from_numpy(c) for c in clips]
    impls = {
        "mmshard": lambda i, m: log_mel_spectrogram(tensors[i], m),
        "whisper": lambda i, m: whisper.log_mel_spectrogram(tensors[i], n_mels=m),
        "librosa": lambda i, m: librosa_log_mel(clips[i], m),
    }
    names = list(impls)
    n, audio_s = len(clips), sum(len(c) for c in clips) / SR
    rows: dict[str, dict] = {}
    for n_mels in (80, 128):
        for f in impls.values():  # warm up caches, numba, filterbanks
            f(0, n_mels)
        log_mel_batch(tensors[:2], n_mels)
        wall = {k: [float("inf")] * n for k in names}
        cpu = {k: [float("inf")] * n for k in names}
        batch_wall, batch_cpu = float("inf"), float("inf")
        order = np.random.default_rng(n_mels)
        for _ in range(repeats):
            for i in range(n):
                # a fresh random order per clip and pass: with a fixed cyclic order the
                # same tool would always run right after the same other one (and inherit
                # its cache and heap state)
                for j in order.permutation(len(names)):
                    name = names[j]
                    c0, t0 = time.thread_time(), time.perf_counter()
                    impls[name](i, n_mels)
                    t1, c1 = time.perf_counter(), time.thread_time()
                    wall[name][i] = min(wall[name][i], t1 - t0)
                    cpu[name][i] = min(cpu[name][i], c1 - c0)
            c0, t0 = time.thread_time(), time.perf_counter()
            log_mel_batch(tensors, n_mels)
            t1, c1 = time.perf_counter(), time.thread_time()
            batch_wall, batch_cpu = min(batch_wall, t1 - t0), min(batch_cpu, c1 - c0)
        diffs = {"mmshard": 0.0, "librosa": 0.0, "mmshard batch": 0.0}
        batched = log_mel_batch(tensors, n_mels)
        batch_equal = 0
        for i in range(n):
            ref = whisper.log_mel_spectrogram(tensors[i], n_mels=n_mels).numpy()
            ours = impls["mmshard"](i, n_mels).numpy()
            diffs["mmshard"] = max(diffs["mmshard"], float(np.abs(ours - ref).max()))
            diffs["mmshard batch"] = max(diffs["mmshard batch"],
                                         float(np.abs(batched[i].numpy() - ref).max()))
            batch_equal += bool(np.array_equal(batched[i].numpy(), ours))
            theirs = impls["librosa"](i, n_mels)
            diffs["librosa"] = max(diffs["librosa"], float(np.abs(theirs - ref).max()))
        totals = {k: (sum(wall[k]), sum(cpu[k])) for k in names}
        totals["mmshard batch"] = (batch_wall, batch_cpu)
        w_wall, w_cpu = totals["whisper"]
        for name, (t_wall, t_cpu) in totals.items():
            rows[f"{name}/{n_mels}"] = {
                "impl": name, "n_mels": n_mels, "wall_s": t_wall, "cpu_s": t_cpu,
                "ms_per_clip": 1000 * t_wall / n, "cpu_ms_per_clip": 1000 * t_cpu / n,
                "rtf": audio_s / t_wall, "x_whisper_wall": w_wall / t_wall,
                "x_whisper_cpu": w_cpu / t_cpu,
                "max_abs_diff_vs_whisper": diffs.get(name, 0.0),
            }
        rows[f"mmshard batch/{n_mels}"]["clips_bitwise_equal_to_one_clip_calls"] = batch_equal
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="8 synthetic and 20 real clips")
    ap.add_argument("--clips", type=int, default=50, help="synthetic clips")
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=7, help="passes; each clip's fastest counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", choices=("both", "synthetic", "real"), default="both")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "audio.json")
    args = ap.parse_args()

    import librosa

    torch.set_num_threads(1)
    try:  # librosa/numpy use BLAS/OpenMP pools that torch's setting does not reach
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    sets: dict[str, list[np.ndarray]] = {}
    if args.set in ("both", "synthetic"):
        n_clips = 8 if args.quick else args.clips
        rng = np.random.default_rng(args.seed)
        lengths = rng.uniform(args.min_seconds, args.max_seconds, size=n_clips)
        sets["synthetic"] = [make_clip(rng, float(s)) for s in lengths]
    if args.set in ("both", "real"):
        try:
            sets["real"] = real_clips(20 if args.quick else 150)
        except (OSError, subprocess.CalledProcessError, StopIteration) as e:
            if args.set == "real":
                raise
            print(f"real set skipped: could not fetch or decode the speech prompts ({e})")

    summary: dict[str, dict] = {}
    report: dict[str, dict] = {}
    for set_name, clips in sets.items():
        before = loadavg()
        rows = time_set(clips, args.repeats)
        after = loadavg()
        audio_s = sum(len(c) for c in clips) / SR
        report[set_name] = {"clips": len(clips), "audio_seconds": audio_s,
                            "loadavg_before": before, "loadavg_after": after, "results": rows}
        summary[set_name] = {
            str(m): {
                "mmshard_speedup_vs_whisper_wall": rows[f"mmshard/{m}"]["x_whisper_wall"],
                "mmshard_speedup_vs_whisper_cpu": rows[f"mmshard/{m}"]["x_whisper_cpu"],
                "batch_speedup_vs_whisper_wall": rows[f"mmshard batch/{m}"]["x_whisper_wall"],
            } for m in (80, 128)
        }
        print(f"\n{set_name}: {len(clips)} clips, {audio_s:.1f} s of audio, 1 CPU thread, "
              f"fastest of {args.repeats} interleaved passes per clip; "
              f"loadavg {before} -> {after}")
        print(f"{'impl':<15}{'bins':>5}{'ms/clip':>9}{'cpu ms/clip':>13}{'x real time':>13}"
              f"{'vs whisper':>12}{'(cpu)':>8}{'max|diff| vs whisper':>22}")
        for r in rows.values():
            print(f"{r['impl']:<15}{r['n_mels']:>5}{r['ms_per_clip']:>9.3f}"
                  f"{r['cpu_ms_per_clip']:>13.3f}{r['rtf']:>13.0f}{r['x_whisper_wall']:>11.2f}x"
                  f"{r['x_whisper_cpu']:>7.2f}x{r['max_abs_diff_vs_whisper']:>22.2e}")
        for m in (80, 128):
            eq = rows[f"mmshard batch/{m}"]["clips_bitwise_equal_to_one_clip_calls"]
            print(f"  {m} bins: batched results bit-for-bit equal to one-clip calls: "
                  f"{eq}/{len(clips)} clips")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": "audio_log_mel", "summary": summary,
        "goal": "mmshard >= 2x whisper.log_mel_spectrogram, one thread, max abs diff <= 1e-5",
        "threads": 1, "repeats": args.repeats, "seed": args.seed, "quick": args.quick,
        "timing": "sum over clips of each clip's fastest of the interleaved passes",
        "versions": {
            "torch": torch.__version__, "librosa": librosa.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "sets": report,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
