"""PIL.Image.open on .vqc files (the plugin registered by ``import vqcodec``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import vqcodec


def _smooth(h: int, w: int, channels: int, dtype=np.uint8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    peak = np.iinfo(dtype).max
    planes = [(peak * (0.5 + 0.4 * np.sin(x / 5 + k) * np.cos(y / 7 - k))) for k in range(channels)]
    return np.stack(planes, -1).astype(dtype)


@pytest.mark.parametrize("channels,mode", [(3, "RGB"), (1, "L")])
def test_open_decodes_like_the_library(tmp_path, channels, mode):
    pixels = _smooth(24, 40, channels)
    path = tmp_path / "x.vqc"
    data = vqcodec.compress(pixels)
    path.write_bytes(data)
    with Image.open(path) as im:
        assert (im.format, im.mode, im.size) == ("VQC", mode, (40, 24))
        decoded = np.asarray(im)
    expected = vqcodec.decompress(data)
    assert np.array_equal(decoded, expected)


def test_sixteen_bit_gray_opens_as_i16(tmp_path):
    data = vqcodec.compress(_smooth(16, 16, 1, np.uint16))
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "I;16"
        assert np.array_equal(np.asarray(im), vqcodec.decompress(data))


def test_non_vqc_and_corrupt_files_are_not_claimed(tmp_path):
    bad = tmp_path / "bad.vqc"
    bad.write_bytes(b"VQC\x89" + b"\x00" * 20)
    with pytest.raises(UnidentifiedImageError):
        Image.open(bad)
    text = tmp_path / "t.txt"
    text.write_text("hello")
    with pytest.raises(UnidentifiedImageError):
        Image.open(text)
