"""Field sets of the transform job: what ``mmshard tokenize --fields NAME`` computes.

A field set adapts one tokenizer to the shard edge.  It consumes one decoded medium of a
sample (audio as ``(float32 [T] mono, sample_rate)``, video as its bytes, an image as an
RGB ``uint8 [H, W, 3]`` array) and emits extension-keyed bytes for the sidecar tar
(``{"mel.npy": ...}``, ``{"kf.json": ..., "kf.000.jpg": ...}``).  Field sets are built
inside the task process from ``(name, options)`` and cached there, so models load once
per worker.

>>> fs = build_field_set("mel", {"n_mels": 80})
>>> fs.modality, fs.outputs
('audio', ('mel.npy',))
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._registry import Registry
from ...errors import ConfigError, DataError

__all__ = ["FIELD_SETS", "FieldSet", "build_field_set", "npy_bytes"]


def npy_bytes(arr: np.ndarray) -> bytes:
    """``np.save`` bytes (no pickles) of an array."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


@dataclass
class FieldSet:
    """A built field set: ``compute(medium) -> {field: bytes}`` plus its provenance.

    ``compute_batch`` (optional) does the same for a list of media at once (one batched
    pass, e.g. on a GPU); it must give exactly what ``compute`` gives per item.
    ``file_range``: a video ``compute`` also takes a
    :class:`~mmshard.media.video_reader.FileRange` into the local shard tar (read in
    place, never whole into memory); a field set written for bytes leaves it False.
    """

    name: str
    modality: str
    outputs: tuple[str, ...]
    compute: Callable[[Any], dict[str, bytes]]
    provenance: dict[str, Any]
    compute_batch: Callable[[list[Any]], list[dict[str, bytes]]] | None = None
    file_range: bool = False


FIELD_SETS: Registry[Callable[[Mapping[str, Any], str, str], FieldSet]] = Registry("field set")


def _feature(name: str, tokenizer: str, field: str) -> None:
    def factory(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
        from ...tokenizers import audio_features  # noqa: F401  (registers the tokenizers)
        from ...tokenizers.base import build_tokenizer

        opts = dict(options)
        if "dtype" in opts:  # ``--option mel.dtype=float32``: the stored dtype, short name
            if "storage_dtype" in opts:
                raise ConfigError(f"{name}: give dtype or storage_dtype, not both")
            opts["storage_dtype"] = opts.pop("dtype")
        tok = build_tokenizer(tokenizer, opts)

        def compute(audio: tuple[np.ndarray, int]) -> dict[str, bytes]:
            x, sr = audio
            if device != "cpu":
                import torch

                x = torch.from_numpy(x).to(device)
            out = tok(x, sr)
            if hasattr(out, "cpu"):
                out = out.cpu().numpy()
            return {field: npy_bytes(np.asarray(out).astype(tok.storage_dtype))}

        compute_batch = None
        if tokenizer == "whisper_mel":
            from ...tokenizers.audio_features import as_mono_waveform, log_mel_batch

            def compute_batch(items: list[tuple[np.ndarray, int]]) -> list[dict[str, bytes]]:
                xs = [as_mono_waveform(x, sr, tok.sample_rate) for x, sr in items]
                mels = log_mel_batch(xs, tok.config.n_mels, pad_or_trim=tok.config.pad_or_trim,
                                     device=device)
                return [{field: npy_bytes(m.cpu().numpy().astype(tok.storage_dtype))}
                        for m in mels]

        return FieldSet(name, "audio", (field,), compute, tok.provenance(), compute_batch)

    FIELD_SETS.register(name)(factory)


_feature("mel", "whisper_mel", "mel.npy")
_feature("fbank", "fbank", "fbank.npy")
_feature("mfcc", "mfcc", "mfcc.npy")
_feature("spectral", "spectral", "spectral.npy")


@FIELD_SETS.register("units")
def _units(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    """Discrete units: the codebook's recorded feature, then nearest-centroid ids.

    A codebook fit by ``mmshard fit-codebook --field F`` records the field set F and its
    tokenizer config; units recompute that feature from the waveform so ids match.
    """
    from ..._registry import config_from_dict
    from ...tokenizers.base import build_tokenizer
    from ...tokenizers.codebook import Codebook
    from ...tokenizers.units import UnitsConfig, UnitTokenizer

    cfg = config_from_dict(UnitsConfig, dict(options))  # unknown options: listed allowed
    if not cfg.codebook_path:
        raise ConfigError("--fields units needs a codebook: --codebook PATH (made by "
                          "`mmshard fit-codebook`)")
    cb = Codebook.load(cfg.codebook_path)
    feature = (cb.provenance or {}).get("feature")
    tok = UnitTokenizer(cb, cfg)
    if feature:
        from ...tokenizers import audio_features  # noqa: F401

        feat_tok = build_tokenizer(feature["tokenizer"], feature["config"])
        frames_first = feature.get("layout") == "bins_frames"

        def features(x: np.ndarray, sr: int) -> np.ndarray:
            f = np.asarray(feat_tok(x, sr), np.float32)
            return f.T if frames_first else f
    else:
        features = tok.features

    def compute(audio: tuple[np.ndarray, int]) -> dict[str, bytes]:
        seq = tok.encode(features(*audio))
        out = {"units.npy": npy_bytes(seq.units)}
        if cfg.dedup:
            out["units_rl.npy"] = npy_bytes(seq.run_lengths)
        return out

    prov = {**tok.provenance(), "feature": feature}
    return FieldSet("units", "audio", ("units.npy",), compute, prov)


@FIELD_SETS.register("keyframes")
def _keyframes(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    from ..._registry import config_from_dict
    from ...tokenizers.keyframes import KeyframeDetector, KeyframesConfig

    det = KeyframeDetector(config_from_dict(KeyframesConfig, dict(options)))

    def compute(video: bytes) -> dict[str, bytes]:
        kf, thumbs = det.detect(video)
        out = {"kf.json": json.dumps(kf, sort_keys=True).encode()}
        for i, jpg in enumerate(thumbs):
            out[f"kf.{i:03d}.jpg"] = jpg
        return out

    return FieldSet("keyframes", "video", ("kf.json",), compute, det.provenance(),
                    file_range=True)


@FIELD_SETS.register("emb")
def _emb(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    """Embeddings (``mmshard embed``): ``<name>.npy`` float vectors of one field."""
    from ...keys import modality_of
    from ...tokenizers.encoders import build_encoder

    opts = dict(options)
    spec = opts.pop("encoder", None)
    field = opts.pop("field", None)
    normalize = bool(opts.pop("normalize", True))
    dtype = np.dtype(opts.pop("dtype", "float32"))
    if not spec or not field:
        raise ConfigError("embeddings need encoder=NAME and field=jpg|txt|flac|...")
    if dtype not in (np.float16, np.float32):
        raise ConfigError(f"embedding dtype must be float16 or float32, got {dtype}")
    modality = modality_of(field)
    _check_encoder_options(str(spec), opts)
    enc = build_encoder(spec, modality=modality, device=device, **opts)
    member = f"{out_name}.npy"

    def compute(item: Any) -> dict[str, bytes]:
        v = enc.encode([item])[0]
        if normalize:
            n = float(np.linalg.norm(v))
            if n == 0.0:
                raise DataError("zero_embedding", "embedding has zero norm; cannot normalise")
            v = v / n
        return {member: npy_bytes(v.astype(dtype))}

    prov = {**enc.provenance, "field": field, "normalize": normalize, "dtype": str(dtype)}
    return FieldSet(out_name, modality, (member,), compute, prov)


def _check_encoder_options(spec: str, opts: Mapping[str, Any]) -> None:
    """Unknown embedding options fail, naming the allowed ones (the encoder factories
    take ``**kwargs`` and would otherwise ignore a typo)."""
    import inspect

    from ..._registry import load_object
    from ...tokenizers.encoders import ENCODERS

    base = ["dtype", "encoder", "field", "kind", "normalize"]
    if spec in ENCODERS:
        factory: Any = ENCODERS.get(spec)
    elif spec.startswith(("sentence-transformers:", "open_clip:")):
        factory = None
    elif ":" in spec:
        factory = load_object(spec)
    else:
        return  # build_encoder names the known encoders
    params = inspect.signature(factory).parameters.values() if factory else []
    if factory is not None and spec not in ENCODERS and any(
            p.kind is p.VAR_KEYWORD for p in params):
        return  # a plug-in that takes any keyword
    own = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(opts) - set(own))
    if unknown:
        raise ConfigError(f"unknown emb option(s) {unknown} for encoder {spec!r}; allowed: "
                          f"{', '.join(sorted(base + own))}")


_CACHE: dict[str, FieldSet] = {}


def _file_identity(value: str) -> list[int] | None:
    import os

    try:
        st = os.stat(value)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns] if os.path.isfile(value) else None


def build_field_set(name: str, options: Mapping[str, Any] | None = None,
                    device: str = "cpu") -> FieldSet:
    """Build (once per process) the field set ``name`` with ``options``.

    ``options["kind"]`` names the registered field set when ``name`` is a custom output
    name (``{"emb_txt": {"kind": "emb", "encoder": "hashing", "field": "txt"}}``).
    """
    opts_in = dict(options or {})
    files = {k: _file_identity(v) for k, v in opts_in.items() if isinstance(v, str)}
    # a codebook/checkpoint rewritten at the same path must not hit the cache
    key = json.dumps([name, opts_in, device, files], sort_keys=True, default=str)
    if key not in _CACHE:
        opts = dict(options or {})
        kind = opts.pop("kind", name)
        _CACHE[key] = FIELD_SETS.get(kind)(opts, device, name)
    return _CACHE[key]


def decode_medium(sample: Mapping[str, Any], modality: str) -> Any:
    """The first medium of ``modality`` in a shard sample, decoded for field sets.

    Returns None when the sample has no such medium.  Raises DataError when it does
    not decode.
    """
    from ...keys import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS

    if modality == "text":
        if "txt" not in sample:
            return None
        try:
            return sample["txt"].decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError("bad_text", "txt is not UTF-8") from e
    exts = {"audio": AUDIO_EXTS, "video": VIDEO_EXTS, "image": IMAGE_EXTS}[modality]
    fields = sorted(k for k in sample if not k.startswith("__")
                    and k.rsplit(".", 1)[-1] in set(exts.values()))
    if not fields:
        return None
    data = sample[fields[0]]
    if modality == "video":
        return data
    if modality == "audio":
        from ...media.audio import decode_audio

        x, sr, _ = decode_audio(data)
        if x.shape[0] == 0:
            raise DataError("empty_audio", "audio has no frames")
        return np.ascontiguousarray(x.mean(axis=1), np.float32), sr
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError("corrupt_image", f"image does not decode: {e}") from e

