"""Tests for ``vqcodec.zoo``: model files, loading codec models, and a file refusing any model but
the one that wrote it."""

from __future__ import annotations

import dataclasses

import pytest

from vqcodec.codec import compress, decompress
from vqcodec.coding.bitstream import Bitstream, pack, unpack
from vqcodec.errors import VQCodecError
from vqcodec.testing import header_end, smooth_image, with_header_crc


def test_other_models_file_is_refused(model):
    data = compress(smooth_image(16, 16, seed=81), model)
    stream = unpack(data)
    other = bytes(b ^ 0xFF for b in stream.header.model_fingerprint)
    forged = pack(Bitstream(dataclasses.replace(stream.header, model_fingerprint=other), stream.tiles))
    assert unpack(forged).header.model_fingerprint == other  # it parses: only the model check is left
    with pytest.raises(VQCodecError, match="model") as err:
        decompress(forged, model)
    assert other.hex() in str(err.value) and model.fingerprint.hex() in str(err.value)
    # the same forgery done on the raw bytes, the header CRC recomputed by hand
    raw = bytearray(data)
    raw[6:22] = other
    assert with_header_crc(raw, header_end(data)) == forged


def test_missing_model_file(tmp_path, model):
    data = compress(smooth_image(8, 8, seed=82), model)
    with pytest.raises(VQCodecError, match="not found"):
        decompress(data, tmp_path / "missing.safetensors")
    with pytest.raises(VQCodecError, match="not found"):
        compress(smooth_image(8, 8, seed=82), str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(VQCodecError):
        decompress(data, tmp_path / "junk.safetensors")
