"""PIL.Image.open on .vqc files (the plugin registered by ``import vqcodec``)."""

from __future__ import annotations

import dataclasses
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


def test_a_damaged_vqc_carries_our_message(tmp_path):
    data = vqcodec.compress(_smooth(16, 16, 3))
    bad = tmp_path / "bad.vqc"
    bad.write_bytes(data[:-1])
    with pytest.raises(UnidentifiedImageError, match="vqcodec: file is truncated"):
        Image.open(bad)


def test_save_as_vqc_compresses_and_refuses_clearly(tmp_path):
    pixels = _smooth(16, 24, 3)
    Image.fromarray(pixels).save(tmp_path / "x.vqc")
    assert (tmp_path / "x.vqc").read_bytes() == vqcodec.compress(pixels)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="VQC", tile=8)
    assert vqcodec.decompress(buf.getvalue()).shape == (16, 24, 3)
    rgba = Image.fromarray(np.zeros((4, 4, 4), np.uint8))  # fully transparent
    with pytest.raises(OSError, match="transparent alpha"):
        rgba.save(tmp_path / "t.vqc")
    assert not (tmp_path / "t.vqc").exists()


def test_a_file_of_a_model_not_installed_raises_an_oserror(tmp_path):
    from vqcodec.coding.bitstream import pack, unpack

    stream = unpack(vqcodec.compress(_smooth(16, 16, 3)))
    other = dataclasses.replace(stream.header, model_fingerprint=bytes(16))
    path = tmp_path / "other.vqc"
    path.write_bytes(pack(dataclasses.replace(stream, header=other)))
    with Image.open(path) as im:  # the header is fine: it opens
        with pytest.raises(OSError, match="not installed") as err:
            im.load()
    assert isinstance(err.value, vqcodec.VQCodecError)  # and it is still our error type
