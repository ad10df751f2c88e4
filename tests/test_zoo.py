"""Tests for ``vqcodec.zoo``: model files, loading codec models (checked when loaded, cached by
content, immutable), a file refusing any model but the one that wrote it, the registry that finds
models by name and by fingerprint, and prior architectures found by the ``arch`` key."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqcodec
from vqcodec import resample
from vqcodec.codec import compress, decompress
from vqcodec.coding.bitstream import pack, unpack
from vqcodec.errors import VQCodecError
from vqcodec.metrics import psnr
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
    forged = pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, model_fingerprint=other)))
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
    assert {e.name for e in entries} >= {registry.default_model_name()}
    for e in entries:
        _, _, tensors = load_model(e.path)
        assert fingerprint(tensors).hex() == e.fingerprint, e.name
        assert e.levels in (2, 3) and e.size == e.path.stat().st_size and e.description


def test_models_found_by_name_and_by_fingerprint(user_models) -> None:
    names = {e.name: e for e in registry.list_models()}
    assert "tiny" in names and registry.default_model_name() in names
    assert registry.resolve_model("tiny") == user_models / "tiny.safetensors"
    assert registry.resolve_model(None).stem == registry.default_model_name() == registry.resolve_model("default").stem
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


# -- the quality ladder and every shipped model ----------------------------------------------------------

SHIPPED = sorted(e.name for e in registry.list_models() if e.shipped)
RUNGS = {r.name for which in registry.LADDERS for r in registry.ladder(which)}  # both ladders' rungs
POINTS = sorted(set(SHIPPED) | RUNGS)  # every shipped model, and every rung of the ladders


def _how(point: str) -> dict[str, str]:
    """compress's keyword for a point: a rung by its quality name, a model off the ladder by name."""
    return {"quality": point} if point in RUNGS else {"model": point}
GUARD = Path(__file__).resolve().parent / "data" / "guard.png"
GUARD_FIGURES = GUARD.with_name("quality_guard.json")


def test_the_ladder_is_ranked_by_rate_and_holds_the_default() -> None:
    steps = registry.ladder()
    assert len(steps) >= 5 and [r.quality for r in steps] == list(range(1, len(steps) + 1))
    assert len({r.name for r in steps}) == len(steps)
    shipped = {e.name for e in registry.list_models() if e.shipped}
    assert {r.model for r in steps} <= shipped
    rates = [r.kodak["bpp"] for r in steps]
    assert rates == sorted(rates), "quality 1 must give the smallest files"
    default = registry.rung_for_quality(registry.default_quality())
    assert (default.name, default.model, default.scale) == (registry.default_model_name(),) * 2 + (1.0,)
    for r in steps:
        assert registry.rung_for_quality(r.quality) == registry.rung_for_quality(str(r.quality)) == r
        assert registry.rung_for_quality(r.name) == r
    assert registry.rung_for_quality("default") == default


@pytest.mark.parametrize("bad", [0, -1, "99", "nope", "1.5", "paper-refit@0.3"])
def test_a_quality_off_the_ladder_is_refused(bad) -> None:
    with pytest.raises(VQCodecError, match="quality"):
        registry.rung_for_quality(bad)
    with pytest.raises(VQCodecError, match="quality"):
        vqcodec.compress(smooth_image(16, 16, 1), quality=bad)


def test_quality_picks_the_rung_and_the_file_names_it(model) -> None:
    pixels = smooth_image(40, 56, 4)
    fingerprints = {e.name: e.fingerprint for e in registry.list_models()}
    sizes = []
    for r in registry.ladder():
        data = vqcodec.compress(pixels, quality=r.quality)
        head = unpack(data).header
        assert head.model_fingerprint.hex() == fingerprints[r.model]
        assert (head.coded_width, head.coded_height) == resample.coded_size(56, 40, r.scale)
        assert (head.coded_size is None) == (r.scale == 1) and head.version == 5
        assert registry.rung_of(head.model_fingerprint.hex(), 56, 40, head.coded_size) == r
        assert vqcodec.decompress(data).shape == pixels.shape
        sizes.append(len(data))
    assert sizes[0] < sizes[-1]
    with pytest.raises(VQCodecError, match="not both"):
        vqcodec.compress(pixels, quality=1, model=model)
    with pytest.raises(VQCodecError, match="not both"):
        vqcodec.compress(pixels, quality=1, scale=0.5)


_THREADS = """
import json
import sys
import numpy as np
import torch

torch.set_num_threads(int(sys.argv[1]))
from vqcodec import compress, decompress

data = compress(sys.argv[2], **json.loads(sys.argv[3]))
open(sys.argv[4], "wb").write(data)
np.save(sys.argv[5], decompress(data))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", POINTS)
def test_every_shipped_model_is_bit_exact_on_1_and_2_threads(name, tmp_path) -> None:
    """Each shipped model and rung, in fresh processes of 1 and 2 threads: the same bytes, the same
    pixels, and those of this process."""
    (tmp_path / "w.py").write_text(_THREADS)
    procs = {t: subprocess.Popen([sys.executable, str(tmp_path / "w.py"), str(t), str(GUARD), json.dumps(_how(name)),
                                  str(tmp_path / f"{t}.vqc"), str(tmp_path / f"{t}.npy")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for t in (1, 2)}
    for t, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}, {t} threads: {err.decode()}"
    one = (tmp_path / "1.vqc").read_bytes()
    assert one == (tmp_path / "2.vqc").read_bytes()
    assert one == vqcodec.compress(GUARD, **_how(name))
    pixels = vqcodec.decompress(one)
    assert np.array_equal(np.load(tmp_path / "1.npy"), pixels) and np.array_equal(np.load(tmp_path / "2.npy"), pixels)


def _guard_points() -> list[str]:
    """Every point of the guard: each shipped model and rung, and each point recorded before (rungs of
    earlier ladders, "model@scale": the files they wrote are pinned as well)."""
    recorded = json.loads(GUARD_FIGURES.read_text()) if GUARD_FIGURES.exists() else {}
    return sorted(set(POINTS) | set(recorded))


def _guard_how(point: str) -> dict[str, str | float]:
    """compress's keywords for a guard point: _how's, or a model and a scale for a rung of an earlier ladder."""
    if point in RUNGS or "@" not in point:
        return _how(point)
    model, scale = point.rsplit("@", 1)
    return {"model": model, "scale": float(scale)}


def _guard_figures(name: str) -> dict[str, float | int | str]:
    import hashlib

    data = vqcodec.compress(GUARD, **_guard_how(name))
    original = np.asarray(Image.open(GUARD).convert("RGB"))
    decoded = vqcodec.decompress(data)
    bpp = 8 * len(data) / (original.shape[0] * original.shape[1])
    return {"bpp": round(bpp, 5), "psnr": round(psnr(original, decoded), 3), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "pixels_sha256": hashlib.sha256(decoded.tobytes()).hexdigest()}


@pytest.mark.parametrize("name", _guard_points())
def test_quality_guard(name, regen_golden) -> None:
    """Each shipped model and rung (and rung of an earlier ladder) on a small photo kept in tests/data
    gives exactly the file recorded (its size and SHA-256) and decodes exactly to the pixels recorded
    (SHA-256 of the pixel bytes); the bpp and PSNR recorded say how far off a changed model is
    (``pytest --regen-golden`` records them anew, for a new model)."""
    got = _guard_figures(name)
    recorded = json.loads(GUARD_FIGURES.read_text()) if GUARD_FIGURES.exists() else {}
    if regen_golden:
        recorded[name] = got
        GUARD_FIGURES.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    assert name in recorded, f"no figures recorded for {name}: run pytest --regen-golden"
    want = recorded[name]
    assert set(want) == set(got), f"{name}: figures {sorted(set(got) - set(want))} not recorded: run --regen-golden"
    assert abs(got["psnr"] - want["psnr"]) <= 0.3, (name, got, want)
    assert abs(got["bpp"] - want["bpp"]) <= 0.02 * want["bpp"], (name, got, want)
    assert (got["bytes"], got["sha256"]) == (want["bytes"], want["sha256"]), (
        f"{name} no longer writes the file recorded: {got['bytes']} bytes against {want['bytes']}")
    assert got["pixels_sha256"] == want["pixels_sha256"], (
        f"{name}'s file, the same bytes as recorded, decodes to other pixels (PSNR {got['psnr']} against "
        f"{want['psnr']}): the VQ-VAE decoder's float arithmetic differs here (torch version / CPU), "
        "or the model changed")


def _refit_vqvae_file(base: Path, out: Path) -> Path:
    """A VQ-VAE file as a decoder refit of ``base`` would leave it: one more decoder block, one
    decoder weight changed, the codes untouched."""
    from vqcodec.train.vqvae import refit_model

    model = refit_model(base, 1)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.startswith("decoder.")).add_(0.01)
    save_model(out, model.state_dict(), "vqvae", model.config.to_dict())
    return out


def test_delta_model_loads_as_the_whole_model(tmp_path, monkeypatch) -> None:
    """A delta file (export --refit-of --delta) stores the decoder alone, finds its base by fingerprint
    (in its own folder here) and loads as the very model the whole file holds: same fingerprint,
    same files, same pixels."""
    from vqcodec.train.export import build_refit_codec_model

    monkeypatch.setenv(registry.ENV_VAR, "")
    folder = tmp_path / "models"
    base = write_tiny_codec_model(folder / "base.safetensors")
    vq = _refit_vqvae_file(base, tmp_path / "vq.safetensors")
    whole = build_refit_codec_model(base, vq, tmp_path / "whole.safetensors", "whole")
    delta = build_refit_codec_model(base, vq, folder / "delta.safetensors", "delta", delta=True)
    assert delta.fingerprint == whole.fingerprint != load_codec_model(base).fingerprint
    assert (folder / "delta.safetensors").stat().st_size < 0.5 * (tmp_path / "whole.safetensors").stat().st_size
    pixels = smooth_image(24, 32, 3)
    data = compress(pixels, delta)
    assert data == compress(pixels, whole)
    assert np.array_equal(vqcodec.decompress_image(data, model_dirs=(folder,)).pixels, decompress(data, whole))
    listed = {e.name: e.fingerprint for e in registry.list_models((folder,))}
    assert listed["delta"] == delta.fingerprint.hex()  # from its metadata: no recursion into itself


def test_delta_model_needs_its_base(tmp_path, monkeypatch) -> None:
    from vqcodec.train.export import build_refit_codec_model
    from vqcodec.zoo.files import atomic_save
    from vqcodec.zoo.registry import read_metadata

    monkeypatch.setenv(registry.ENV_VAR, "")
    base = write_tiny_codec_model(tmp_path / "base.safetensors")
    vq = _refit_vqvae_file(base, tmp_path / "vq.safetensors")
    alone = tmp_path / "alone"
    alone.mkdir()
    with pytest.raises(VQCodecError, match="--delta: .* must be installed"):
        build_refit_codec_model(base, vq, alone / "delta.safetensors", "delta", delta=True)
    assert not (alone / "delta.safetensors").exists()
    build_refit_codec_model(base, vq, tmp_path / "delta.safetensors", "delta", delta=True)
    os.replace(tmp_path / "delta.safetensors", alone / "delta.safetensors")
    with pytest.raises(VQCodecError, match="stores only what differs from model .* not installed"):
        load_codec_model(alone / "delta.safetensors")
    # a delta whose merge does not give the model it records is refused, not used
    meta = read_metadata(alone / "delta.safetensors")
    atomic_save({"vqvae.decoder.extra.0.block.1.weight": torch.zeros(1)}, tmp_path / "forged.safetensors", meta)
    with pytest.raises(VQCodecError, match="does not rebuild the model it was made from"):
        load_codec_model(tmp_path / "forged.safetensors")


def test_model_files_are_written_whole_with_the_umask_permissions(tmp_path) -> None:
    """A model file gets the permissions any new file gets (safetensors alone writes 0600, which
    left exported models unreadable to others) and a rewrite replaces it whole, with no temporary
    file left behind."""
    from safetensors.torch import load_file

    from vqcodec.zoo.files import save_model

    path = tmp_path / "m.safetensors"
    old_mask = os.umask(0o022)
    try:
        save_model(path, {"a": torch.zeros(3)}, "vqvae", {"x": 1})
        assert path.stat().st_mode & 0o777 == 0o644
        save_model(path, {"b": torch.ones(2)}, "vqvae", {"x": 2})
    finally:
        os.umask(old_mask)
    assert list(load_file(str(path))) == ["b"]
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]


def test_shipped_deltas_rebuild_their_models() -> None:
    """The shipped refits are stored as deltas of the model they were refit from: each loads with
    the manifest's fingerprint, and the shipped weights stay within the 40 MB the ladder may use."""
    from vqcodec.zoo.registry import read_metadata

    entries = {e.name: e for e in registry.list_models() if e.shipped}
    fingerprints = {e.fingerprint for e in entries.values()}
    deltas = [e for e in entries.values() if "base" in read_metadata(e.path)]
    assert deltas
    for e in deltas:
        assert read_metadata(e.path)["base"] in fingerprints
        assert load_codec_model(e.name).fingerprint.hex() == e.fingerprint
    assert sum(e.size for e in entries.values()) <= 40e6


@pytest.mark.slow
def test_the_fast_ladder_gives_the_default_ladders_pictures() -> None:
    """The fast ladder's promise: each rung is the default ladder's VQ-VAE at the same scale with
    other priors, so the same codes decode to the very same pixels at scale 1 and above; below it the
    fast rungs' smaller upscaler changes the pixels by hundredths of a dB. Only the bits differ."""
    fast, default = registry.ladder("fast"), registry.ladder()
    assert [r.scale for r in fast] == [r.scale for r in default]
    pixels = np.asarray(Image.open(GUARD).convert("RGB"))[:96, :128]
    for q in (1, registry.default_quality(), len(default)):  # each of the fast ladder's models
        slow_file, fast_file = vqcodec.compress(pixels, quality=q), vqcodec.compress(pixels, quality=q, fast=True)
        assert unpack(fast_file).header.model_fingerprint.hex() == next(
            e.fingerprint for e in registry.list_models() if e.name == fast[q - 1].model)
        slow, quick = vqcodec.decompress(slow_file), vqcodec.decompress(fast_file)
        if fast[q - 1].scale >= 1:
            assert np.array_equal(quick, slow), q
        else:
            assert abs(psnr(pixels, quick) - psnr(pixels, slow)) < 0.1, q


def test_fast_picks_the_same_quality_on_the_fast_ladder() -> None:
    fast = registry.ladder("fast")
    assert registry.choose_rung(None, None, fast=True) == (fast[registry.default_quality() - 1].model, 1.0)
    assert registry.choose_rung(None, 2, fast=True) == (fast[1].model, fast[1].scale)
    assert registry.rung_for_quality(fast[6].name) == fast[6]  # a fast rung's name, without fast=True
    with pytest.raises(VQCodecError, match="not both"):
        registry.choose_rung("paper", None, fast=True)
