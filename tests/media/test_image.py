import io

import numpy as np
import pytest
from PIL import Image

from mmshard import synth
from mmshard.errors import ConfigError, DataError
from mmshard.media.image import ImageOptions, process_image, target_size


def jpeg(w, h, seed=0, **kw):
    return synth.encode_image(synth.photo_like(w, h, seed=seed), **kw)


def decoded(b):
    return Image.open(io.BytesIO(b))


def test_keep_returns_original_bytes_with_facts():
    data = jpeg(200, 100)
    out = process_image(data, ImageOptions())
    assert out.data is data and out.field == "jpg"
    assert (out.facts["width"], out.facts["height"], out.facts["format"]) == (200, 100, "jpg")


def test_field_follows_real_format_not_extension():
    png = synth.encode_image(synth.photo_like(40, 30), fmt="PNG")
    assert process_image(png, ImageOptions()).field == "png"


@pytest.mark.parametrize("resize,size,expect", [
    ("shortest", 50, (100, 50)), ("longest", 100, (100, 50)), ("center_crop", 40, (40, 40)),
])
def test_resize_policies(resize, size, expect):
    out = process_image(jpeg(400, 200), ImageOptions(resize=resize, size=size, format="jpg"))
    assert decoded(out.data).size == expect
    assert (out.facts["width"], out.facts["height"]) == expect
    assert (out.facts["orig_width"], out.facts["orig_height"]) == (400, 200)


def test_pad_multiple_pads_to_patch_and_records_valid_region():
    out = process_image(jpeg(100, 61), ImageOptions(resize="pad_multiple", size=0, patch=14,
                                                    format="png"))
    im = decoded(out.data)
    assert im.size == (112, 70)
    assert (out.facts["valid_width"], out.facts["valid_height"]) == (100, 61)
    arr = np.asarray(im.convert("RGB"))
    assert arr[65:, :, :].max() == 0 and arr[:, 105:, :].max() == 0  # padding is black


def test_no_upscale_by_default_but_upscale_on_request():
    assert target_size(100, 80, ImageOptions(resize="shortest", size=160)) == (100, 80)
    up = ImageOptions(resize="shortest", size=160, upscale=True)
    assert target_size(100, 80, up) == (200, 160)


def test_exif_orientation_is_applied_when_reencoding():
    data = jpeg(80, 40, exif_orientation=6)  # rotate 90: stored 80x40, shown 40x80
    out = process_image(data, ImageOptions(format="png"))
    assert decoded(out.data).size == (40, 80)
    assert out.facts["exif_orientation"] == 6
    keep = process_image(data, ImageOptions())
    assert (keep.facts["width"], keep.facts["height"]) == (40, 80)


def test_jpeg_draft_is_close_to_full_decode():
    data = jpeg(1600, 1200, seed=3, quality=95)
    opts = dict(resize="shortest", size=256, format="png")
    a = np.asarray(decoded(process_image(data, ImageOptions(**opts)).data), np.float64)
    b = np.asarray(decoded(process_image(data, ImageOptions(**opts, jpeg_draft=False)).data),
                   np.float64)
    assert a.shape == b.shape == (256, 341, 3)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    assert psnr > 30


@pytest.mark.parametrize("data,reason", [
    (b"", "empty_file"),
    (b"plain text pretending to be a jpeg\n" * 3, "not_an_image"),
])
def test_bad_bytes(data, reason):
    with pytest.raises(DataError) as e:
        process_image(data, ImageOptions())
    assert e.value.reason == reason


@pytest.mark.parametrize("opts", [ImageOptions(), ImageOptions(resize="shortest", size=32)])
def test_truncated_jpeg_is_detected_in_keep_and_resize_modes(opts):
    data = jpeg(300, 200)
    with pytest.raises(DataError) as e:
        process_image(data[: len(data) // 2], opts)
    assert e.value.reason == "truncated"


def test_pixel_limit_and_min_size():
    with pytest.raises(DataError) as e:
        process_image(jpeg(200, 100), ImageOptions(max_pixels=10_000))
    assert e.value.reason == "too_many_pixels"
    with pytest.raises(DataError) as e:
        process_image(jpeg(200, 100), ImageOptions(min_size=101))
    assert e.value.reason == "too_small"


def test_options_validation_lists_allowed_values():
    with pytest.raises(ConfigError, match="shortest"):
        ImageOptions(resize="squash")
    with pytest.raises(ConfigError, match="size"):
        ImageOptions(resize="shortest")


@pytest.mark.parametrize("fmt,field", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_structure_verify_keeps_bytes_and_catches_truncation(fmt, field):
    data = synth.encode_image(synth.photo_like(120, 80, seed=2), fmt=fmt)
    out = process_image(data, ImageOptions(verify="structure"))
    assert out.data is data and out.field == field and out.facts["width"] == 120
    with pytest.raises(DataError) as e:
        process_image(data[: int(len(data) * 0.7)], ImageOptions(verify="structure"))
    assert e.value.reason == "truncated"
    with pytest.raises(ConfigError, match="structure"):
        ImageOptions(verify="quick")
