"""Whisper log-mel on CPU, one thread: mmshard vs whisper vs librosa, plus parity numbers.

Generates its own clips (speech-like harmonic glides, chords, noise; 5-30 s at 16 kHz),
computes the log-mel of every clip with each implementation (interleaved per clip, so
load changes hit all three alike), keeps the fastest of --repeats passes, and reports the
real-time factor (seconds of audio per
second of wall time, higher is better) and the max abs difference to
``whisper.log_mel_spectrogram``. librosa runs ``librosa.feature.melspectrogram`` with the
same STFT/filter parameters followed by whisper's log/clamp/scale.

    python bench/audio.py            # 50 clips, 80 and 128 bins
    python bench/audio.py --quick    # 8 clips
    python bench/audio.py --set real # 150 real 16 kHz speech clips

``--set real``: the 150 longest voice prompts of Debian's
``asterisk-core-sounds-en-g722`` (real recorded speech, G.722 = 16 kHz wideband),
downloaded once with ``apt-get download`` into bench/data/speech and decoded by the
ffmpeg CLI to float32 mono 16 kHz.

Writes bench/results/audio.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

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
    import subprocess

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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="8 clips instead of --clips")
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes; the fastest is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", choices=("synthetic", "real"), default="synthetic",
                    help="real: 150 real speech clips (--clips ignored; 20 with --quick)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "audio.json")
    args = ap.parse_args()

    import librosa
    import whisper

    from mmshard.tokenizers.audio_features import log_mel_spectrogram

    torch.set_num_threads(1)
    try:  # librosa/numpy use BLAS/OpenMP pools that torch's setting does not reach
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    if args.set == "real":
        clips = real_clips(20 if args.quick else 150)
        n_clips = len(clips)
    else:
        n_clips = 8 if args.quick else args.clips
        rng = np.random.default_rng(args.seed)
        lengths = rng.uniform(args.min_seconds, args.max_seconds, size=n_clips)
        clips = [make_clip(rng, float(s)) for s in lengths]
    tensors = [torch.from_numpy(c) for c in clips]
    audio_s = sum(len(c) for c in clips) / SR

    impls = {
        "mmshard": lambda i, m: log_mel_spectrogram(tensors[i], m),
        "whisper": lambda i, m: whisper.log_mel_spectrogram(tensors[i], n_mels=m),
        "librosa": lambda i, m: librosa_log_mel(clips[i], m),
    }
    results: dict[str, dict] = {}
    for n_mels in (80, 128):
        for f in impls.values():  # warm up caches, numba, filterbanks
            f(0, n_mels)
        passes: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(args.repeats):
            spent = dict.fromkeys(impls, 0.0)
            for i in range(n_clips):
                for name, f in impls.items():
                    t0 = time.perf_counter()
                    f(i, n_mels)
                    spent[name] += time.perf_counter() - t0
            for name in impls:
                passes[name].append(spent[name])
        diffs = {"mmshard": 0.0, "librosa": 0.0}
        for i in range(n_clips):
            ref = whisper.log_mel_spectrogram(tensors[i], n_mels=n_mels).numpy()
            ours = impls["mmshard"](i, n_mels).numpy()
            diffs["mmshard"] = max(diffs["mmshard"], float(np.abs(ours - ref).max()))
            theirs = impls["librosa"](i, n_mels)
            diffs["librosa"] = max(diffs["librosa"], float(np.abs(theirs - ref).max()))
        for name in impls:
            wall = min(passes[name])  # best pass: the least disturbed by other load
            results[f"{name}/{n_mels}"] = {
                "impl": name, "n_mels": n_mels, "wall_s": wall, "rtf": audio_s / wall,
                "ms_per_clip": 1000 * wall / n_clips,
                "wall_s_median": statistics.median(passes[name]),
                "max_abs_diff_vs_whisper": 0.0 if name == "whisper" else diffs[name],
            }

    print(f"{n_clips} clips, {audio_s:.1f} s of audio, 1 CPU thread, "
          f"best of {args.repeats} passes")
    print(f"{'impl':<9}{'n_mels':>7}{'ms/clip':>10}{'RTF (x real time)':>19}"
          f"{'speedup vs whisper':>20}{'max|diff| vs whisper':>22}")
    for r in results.values():
        speed = results[f"whisper/{r['n_mels']}"]["wall_s"] / r["wall_s"]
        r["speedup_vs_whisper"] = speed
        print(f"{r['impl']:<9}{r['n_mels']:>7}{r['ms_per_clip']:>10.2f}{r['rtf']:>19.0f}"
              f"{speed:>20.2f}{r['max_abs_diff_vs_whisper']:>22.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": "audio_log_mel", "set": args.set,
        "clips": n_clips, "audio_seconds": audio_s, "threads": 1, "repeats": args.repeats,
        "seed": args.seed, "quick": args.quick,
        "versions": {
            "torch": torch.__version__, "librosa": librosa.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
        },
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
