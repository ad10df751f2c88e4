"""Tests for ``vqcodec.zoo``: model files, loading codec models (checked when loaded, cached by
content, immutable), a file refusing any model but the one that wrote it, the registry that finds
models by name and by fingerprint, and prior architectures found by the ``arch`` key."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

import vqcodec
from vqcodec.codec import compress, decompress
from vqcodec.coding.bitstream import Bitstream, pack, unpack
from vqcodec.errors import VQCodecError
from vqcodec.priors import registry as prior_registry
from vqcodec.priors.int_pixelcnn import IntPixelCNN
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig
from vqcodec.testing import header_end, smooth_image, tiny_codec_file_parts, with_header_crc, write_tiny_codec_model
from vqcodec.zoo import registry
from vqcodec.zoo.codec_model import load_codec_model
from vqcodec.zoo.files import fingerprint, load_model, save_model


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


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A $VQCODEC_MODELS folder holding one tiny model named 'tiny'."""
    folder = tmp_path / "models"
    folder.mkdir()
    write_tiny_codec_model(folder / "tiny.safetensors")
    monkeypatch.setenv(registry.ENV_VAR, str(folder))
    return folder


def test_shipped_manifest_fingerprints_are_the_files_fingerprints() -> None:
    entries = [e for e in registry.list_models() if e.shipped]
    assert {e.name for e in entries} >= {registry.DEFAULT_MODEL}
    for e in entries:
        _, _, tensors = load_model(e.path)
        assert fingerprint(tensors).hex() == e.fingerprint, e.name
        assert e.levels in (2, 3) and e.size == e.path.stat().st_size and e.description


def test_models_found_by_name_and_by_fingerprint(user_models) -> None:
    names = {e.name: e for e in registry.list_models()}
    assert "tiny" in names and registry.DEFAULT_MODEL in names
    assert registry.resolve_model("tiny") == user_models / "tiny.safetensors"
    assert registry.resolve_model(None).name == "default.safetensors"
    fp = bytes.fromhex(names["tiny"].fingerprint)
    assert registry.find_by_fingerprint(fp) == user_models / "tiny.safetensors"
    assert registry.find_by_fingerprint(bytes(16)) is None


def test_unknown_name_lists_the_known_ones(user_models) -> None:
    with pytest.raises(VQCodecError, match=r"no model named 'nope' \(known: .*tiny"):
        registry.resolve_model("nope")
    with pytest.raises(VQCodecError, match="model file not found"):
        registry.resolve_model(str(user_models / "missing.safetensors"))


def test_decompress_finds_the_model_by_fingerprint(user_models, monkeypatch) -> None:
    pixels = smooth_image(24, 32, 1)
    data = vqcodec.compress(pixels, model="tiny")
    by_fingerprint = vqcodec.decompress(data)
    assert np.array_equal(by_fingerprint, vqcodec.decompress(data, model=user_models / "tiny.safetensors"))
    monkeypatch.setenv(registry.ENV_VAR, "")
    fp = load_codec_model(user_models / "tiny.safetensors").fingerprint.hex()
    with pytest.raises(VQCodecError, match=f"written by model {fp}, which is not installed"):
        vqcodec.decompress(data)
    assert np.array_equal(vqcodec.decompress_image(data, model_dirs=(user_models,)).pixels, by_fingerprint)


def test_cache_follows_the_file_not_the_path(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    write_tiny_codec_model(path, seed=0)
    first = load_codec_model(path)
    assert load_codec_model(path) is first  # cached
    write_tiny_codec_model(path, seed=1)  # re-exported to the same path
    os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 10**9, first_ns))
    second = load_codec_model(path)
    _, _, tensors = load_model(path)
    assert second.fingerprint == fingerprint(tensors) != first.fingerprint


def test_codec_model_is_immutable(tmp_path) -> None:
    m = load_codec_model(write_tiny_codec_model(tmp_path / "m.safetensors"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.tile = 4  # type: ignore[misc]
    assert isinstance(m.priors, tuple)


def broken(tmp_path, edit) -> str:
    """The message of loading a tiny model file after ``edit(tensors, config)``."""
    tensors, config = tiny_codec_file_parts()
    edit(tensors, config)
    path = tmp_path / "broken.safetensors"
    save_model(path, tensors, "codec", config)
    with pytest.raises(VQCodecError) as err:
        load_codec_model(path)
    return str(err.value)


def test_broken_model_files_fail_at_load_naming_the_tensor(tmp_path) -> None:
    assert "'lut.exp_prob' is missing" in broken(tmp_path, lambda t, c: t.pop("prior0.lut.exp_prob"))
    assert "prior1" in broken(tmp_path, lambda t, c: [t.pop(k) for k in list(t) if k.startswith("prior1.")])

    def wrong_shape(t, c):
        t["prior0.layers.0.h_out.w"] = torch.zeros(3, 3, 1, 1)

    assert "'layers.0.h_out.w' has shape (3, 3, 1, 1)" in broken(tmp_path, wrong_shape)

    def more_channels(t, c):
        c["priors"][0]["channels"] *= 2

    assert "prior0" in broken(tmp_path, more_channels)
    assert "prior configurations" in broken(tmp_path, lambda t, c: c.update(priors="abc"))
    assert "bad configuration" in broken(tmp_path, lambda t, c: c.update(tile="abc"))
    assert "VQ-VAE" in broken(tmp_path, lambda t, c: t.pop("vqvae.decoder.net.0.weight"))


def test_a_prior_config_without_arch_is_the_gated_pixelcnn() -> None:
    cfg = PriorConfig(num_codes=8, channels=4, layers=1).to_dict()
    del cfg["arch"]
    assert isinstance(prior_registry.build_float_prior(cfg), PixelCNNPrior)
    with pytest.raises(VQCodecError, match="unknown prior architecture 'nope'"):
        prior_registry.build_float_prior({**cfg, "arch": "nope"})


def test_a_new_architecture_is_one_registry_line(tmp_path, monkeypatch) -> None:
    """A model file naming a registered arch loads through the registry and codes like the original."""

    class Twin(IntPixelCNN):  # an "architecture" that computes exactly what the original does
        pass

    monkeypatch.setitem(prior_registry.ARCHS, "twin", prior_registry.PriorArch(PriorConfig, PixelCNNPrior, Twin))
    tensors, config = tiny_codec_file_parts()
    path = tmp_path / "plain.safetensors"
    save_model(path, tensors, "codec", config)
    for cfg in config["priors"]:
        cfg["arch"] = "twin"
    twin_path = tmp_path / "twin.safetensors"
    save_model(twin_path, tensors, "codec", config)
    plain, twin = load_codec_model(path), load_codec_model(twin_path)
    assert all(isinstance(p, Twin) for p in twin.priors)
    assert twin.fingerprint == plain.fingerprint  # the fingerprint covers the tensors only
    pixels = smooth_image(16, 24, 3)
    assert vqcodec.compress(pixels, model=twin) == vqcodec.compress(pixels, model=plain)
