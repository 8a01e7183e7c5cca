"""mmshard.media.jpeg: the Loader's fast decode matches the PIL reference (PSNR >= 40 dB),
uses DCT scaling only with margin, and fails like PIL on bad bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmshard.errors import DataError
from mmshard.media import jpeg
from mmshard.media.resize import (
    CenterCrop,
    FixedResize,
    Longest,
    PadToMultiple,
    Shortest,
)
from mmshard.synth import photo_like


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _reference(data: bytes, policy) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(policy.apply_pil(im.convert("RGB")))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _textured(w: int, h: int, seed: int) -> Image.Image:
    """Photo-like with fine texture (grass-like noise): the hard case for DCT scaling."""
    base = np.asarray(photo_like(w, h, seed=seed).convert("RGB")).astype(np.int16)
    rng = np.random.default_rng(seed)
    noise = rng.integers(-25, 26, (h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


POLICIES = [CenterCrop(size=224), Shortest(size=256), FixedResize(size=(96, 128)),
            Longest(size=300), PadToMultiple(size=320, patch=14),
            CenterCrop(size=(64, 160), resample="bilinear")]
SIZES = [(1400, 1050), (1024, 683), (640, 480), (300, 451), (120, 90)]  # (w, h)


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [_jpeg(img) for i, (w, h) in enumerate(SIZES)
            for img in (photo_like(w, h, seed=i).convert("RGB"), _textured(w, h, seed=i))]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name + "-" + p.resample)
def test_matches_pil_reference_within_40db(policy, photos):
    for data in photos:
        ours, ref = jpeg.decode_resized(data, policy), _reference(data, policy)
        assert ours.shape == ref.shape and ours.dtype == np.uint8
        assert _psnr(ours, ref) >= 40.0, (policy, ref.shape)


def test_full_size_decode_is_near_identical():
    data = _jpeg(_textured(1200, 900, seed=3))
    pol = CenterCrop(size=224)
    ours = jpeg.decode_resized(data, pol, dct_factor=0)
    assert _psnr(ours, _reference(data, pol)) >= 50.0


def test_dct_scale_keeps_the_factor_margin():
    data = _jpeg(photo_like(1600, 1200, seed=1).convert("RGB"))
    if jpeg.backend() == "simplejpeg":
        # 1/2 keeps 600 >= 3 x 150 rows; 1/4 (300) would not
        assert jpeg.decode_rgb(data, at_least=(150, 200)).shape == (600, 800, 3)
        assert jpeg.decode_rgb(data, at_least=(64, 64)).shape == (300, 400, 3)  # 1/4
        assert jpeg.decode_rgb(data, at_least=(10, 10)).shape == (150, 200, 3)  # 1/8 at most
    assert jpeg.decode_rgb(data).shape == (1200, 1600, 3)
    assert jpeg.decode_rgb(data, at_least=(224, 299), dct_factor=0).shape == (1200, 1600, 3)


def test_other_formats_and_modes_go_through_pil():
    img = photo_like(300, 200, seed=5).convert("RGB")
    pol = CenterCrop(size=64)
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        data = buf.getvalue()
        assert jpeg.jpeg_size(data) is None
        assert _psnr(jpeg.decode_resized(data, pol), _reference(data, pol)) >= 50.0
    gray = _jpeg(img.convert("L"))  # a greyscale JPEG becomes 3 equal channels, as PIL's
    out = jpeg.decode_resized(gray, pol)
    assert out.shape == (64, 64, 3) and _psnr(out, _reference(gray, pol)) >= 40.0
    cmyk = _jpeg(img.convert("CMYK"))  # simplejpeg refuses CMYK: PIL decodes it
    assert _psnr(jpeg.decode_resized(cmyk, pol), _reference(cmyk, pol)) >= 40.0
    lanczos = Shortest(size=100, resample="lanczos")
    data = _jpeg(img)
    assert _psnr(jpeg.decode_resized(data, lanczos), _reference(data, lanczos)) >= 40.0


def test_bad_bytes_and_bombs_are_data_errors():
    good = _jpeg(photo_like(200, 100, seed=0).convert("RGB"))
    with pytest.raises(DataError) as e:
        jpeg.decode_resized(b"\xff\xd8\xff\xe0 not really a jpeg", CenterCrop(size=32))
    assert e.value.reason == "corrupt_image"
    with pytest.raises(DataError) as e:
        jpeg.decode_resized(b"plain text", CenterCrop(size=32))
    assert e.value.reason == "corrupt_image"
    with pytest.raises(DataError) as e:
        jpeg.decode_resized(good, CenterCrop(size=32), max_pixels=100 * 100)
    assert e.value.reason == "too_many_pixels"


def test_without_simplejpeg_pil_decodes_the_same(monkeypatch, photos):
    pol = CenterCrop(size=224)
    monkeypatch.setattr(jpeg, "_simplejpeg", lambda: None)
    assert jpeg.backend() == "pil"
    for data in photos[:4]:
        assert _psnr(jpeg.decode_resized(data, pol), _reference(data, pol)) >= 50.0


def test_loader_decode_uses_it_and_pil_stays_available(photos):
    from mmshard.errors import ConfigError
    from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode, decode_sample

    sample = {"__key__": "k", "__url__": "u", "jpg": photos[0]}
    ref = _reference(photos[0], CenterCrop(size=224))
    fast = decode_sample(sample, DecodeConfig(image=ImageDecode()))["image"]
    pil = decode_sample(sample, DecodeConfig(image=ImageDecode(decoder="pil")))["image"]
    assert fast.shape == pil.shape == (3, 224, 224) and fast.dtype == pil.dtype
    assert np.array_equal((pil * 255).round().byte().permute(1, 2, 0).numpy(), ref)
    assert _psnr((fast * 255).round().byte().permute(1, 2, 0).numpy(), ref) >= 40.0
    as_u8 = decode_sample(sample, DecodeConfig(image=ImageDecode(dtype="uint8")))["image"]
    assert as_u8.dtype.is_floating_point is False and as_u8.is_contiguous()
    assert np.array_equal(as_u8.numpy(), (fast * 255).round().byte().numpy())
    with pytest.raises(DataError) as e:
        decode_sample({"__key__": "k", "__url__": "u", "jpg": b"\xff\xd8\xffjunk"},
                      DecodeConfig(image=ImageDecode()))
    assert e.value.reason == "corrupt_image" and e.value.key == "k"
    with pytest.raises(ConfigError, match="auto, pil"):
        ImageDecode(decoder="turbo")
