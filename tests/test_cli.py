"""Tests of the command line: every test that runs ``vqcodec`` (through click's CliRunner in this
process, or as ``python -m vqcodec`` in a subprocess): compress, decompress and info on files, pipes
and folders, clean refusals, regions and salvage; train, extract-codes and their resume; eval; sample;
and the README's training workflow end to end on tiny data."""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageCms
from vqcodec_cli.main import main as cli_main

from vqcodec.codec import compress, decompress, decompress_image
from vqcodec.coding.bitstream import unpack
from vqcodec.metrics import psnr
from vqcodec.priors.pixelcnn import PixelCNNPrior
from vqcodec.sampling import image_grid, sample_images
from vqcodec.testing import (
    Brightness,
    file_with_damaged_tile,
    read_log,
    smooth_image,
    tiny_prior_config,
    write_tiny_codec_model,
)
from vqcodec.train.evaluation import unigram_entropy
from vqcodec.vqvae import VQVAE, VQVAEConfig
from vqcodec.zoo.codec_model import load_codec_model
from vqcodec.zoo.files import load_model, save_model
from vqcodec.zoo.registry import default_model_name, ladder

# -- helpers ------------------------------------------------------------------------------------------------

CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: much faster for these small images


def cli(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vqcodec", *args], cwd=cwd, input=stdin, capture_output=True,
                          timeout=120, env=CLI_ENV)


def cli_parallel(runs: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run several CLI commands at once (each single-threaded) and collect their results by name."""
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "vqcodec", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=CLI_ENV)
        for name, args in runs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def assert_clean_failure(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqcodec: error: "), err
    return lines[0]


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def run(*args: str) -> str:
    """Run a command in this process; it must succeed. Returns its output."""
    result = CliRunner().invoke(cli_main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """A tiny random-init 2-level codec model (16 codes) as a codec-model file."""
    return write_tiny_codec_model(tmp_path / "tiny.safetensors", num_codes=16)


# -- compress, decompress, info -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_files_and_pipes(model, tmp_path):
    img = smooth_image(24, 40, seed=91)
    Image.fromarray(img).save(tmp_path / "in.png")
    proc = cli("compress", "in.png", "-o", "out.vqc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    data = (tmp_path / "out.vqc").read_bytes()
    assert data == compress(tmp_path / "in.png", model)
    proc = cli("decompress", "out.vqc", "-o", "back.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    back = (tmp_path / "back.png").read_bytes()
    expected = decompress(data, model)
    np.testing.assert_array_equal(png_pixels(back), expected)

    # stdin -> stdout, both ends piped together
    env = CLI_ENV
    with open(tmp_path / "in.png", "rb") as src:
        enc = subprocess.Popen([sys.executable, "-m", "vqcodec", "compress", "-", "-o", "-"], cwd=tmp_path,
                               stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        dec = subprocess.Popen([sys.executable, "-m", "vqcodec", "decompress", "-", "-o", "-"], cwd=tmp_path,
                               stdin=enc.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        enc.stdout.close()
        piped, dec_err = dec.communicate(timeout=120)
        _, enc_err = enc.communicate(timeout=120)
    assert enc.returncode == 0 and dec.returncode == 0, (enc_err + dec_err).decode()
    assert piped[:8] == b"\x89PNG\r\n\x1a\n"
    assert piped == back
    np.testing.assert_array_equal(png_pixels(piped), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.png", "in.png", "out.vqc"]  # nothing like '-.vqc'

    proc = cli("info", "out.vqc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    assert re.search(r"size: 40 x 24\b", text), text
    assert re.search(rf"bytes: {len(data)}\b", text), text
    assert model.fingerprint.hex() in text


@pytest.mark.slow
def test_cli_refusals(model, tmp_path):
    Image.fromarray(smooth_image(16, 24, seed=92)).save(tmp_path / "in.png")
    data = compress(tmp_path / "in.png", model)
    (tmp_path / "out.vqc").write_bytes(b"keep me")
    (tmp_path / "cut.vqc").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.vqc").write_bytes(bytes(random.Random(5).randrange(256) for _ in range(300)))
    (tmp_path / "noise.png").write_bytes(bytes(random.Random(6).randrange(256) for _ in range(300)))
    (tmp_path / "good.vqc").write_bytes(data)
    runs = {
        "exists": ["compress", "in.png", "-o", "out.vqc"],
        "truncated": ["decompress", "cut.vqc", "-o", "cut.png"],
        "noise_vqc": ["decompress", "noise.vqc", "-o", "noise_out.png"],
        "noise_png": ["compress", "noise.png", "-o", "noise_out.vqc"],
        "no_model": ["decompress", "good.vqc", "-o", "good.png", "--model", "missing.safetensors"],
    }
    results = cli_parallel(runs, cwd=tmp_path)
    assert "exists" in assert_clean_failure(results["exists"])
    assert (tmp_path / "out.vqc").read_bytes() == b"keep me"
    assert "truncated" in assert_clean_failure(results["truncated"])
    assert_clean_failure(results["noise_vqc"])
    assert_clean_failure(results["noise_png"])
    assert "missing.safetensors" in assert_clean_failure(results["no_model"])
    leftovers = {"cut.png", "noise_out.png", "noise_out.vqc", "good.png"} & {p.name for p in tmp_path.iterdir()}
    assert not leftovers
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_cli_folder(model, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(8 + 4 * i, 12, seed=93 + i)).save(src / f"p{i}.png")
    proc = cli("compress", "photos", "--out", "packed", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    files = sorted((tmp_path / "packed").iterdir())
    assert [f.name for f in files] == ["p0.vqc", "p1.vqc", "p2.vqc"]
    for f in files:
        assert f.read_bytes() == compress(src / f"{f.stem}.png", model)


@pytest.mark.slow
def test_cli_region(model, tmp_path):
    """--region writes exactly the full decode's crop: across tile edges (tiles of 8 codes, 32 pixels), at the
    image's corner and as a whole row, 8 and 16 bits."""
    src = tmp_path / "r.vqc"
    src.write_bytes(compress(smooth_image(200, 264, seed=81), model, tile=8))
    full = decompress(src, model)
    proc = cli("decompress", str(src), "-o", str(tmp_path / "r.png"), "--region", "10,20,30,40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(png_pixels((tmp_path / "r.png").read_bytes()), full[20:60, 10:40])
    for i, (x, y, w, h) in enumerate([(150, 120, 40, 30), (250, 190, 14, 10), (0, 99, 264, 1)]):
        run("decompress", str(src), "-o", str(tmp_path / f"r{i}.png"), "--region", f"{x},{y},{w},{h}")
        np.testing.assert_array_equal(png_pixels((tmp_path / f"r{i}.png").read_bytes()), full[y : y + h, x : x + w])
    deep = tmp_path / "d.vqc"
    deep.write_bytes(compress(smooth_image(40, 72, seed=82, channels=1, dtype=np.uint16), model))
    run("decompress", str(deep), "-o", str(tmp_path / "d.png"), "--region", "33,5,20,30")
    np.testing.assert_array_equal(png_pixels((tmp_path / "d.png").read_bytes()), decompress(deep, model)[5:35, 33:53])
    assert cli("decompress", str(src), "-o", str(tmp_path / "q.png"), "--region", "a,b", cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_cli_salvage(model, tmp_path):
    _, _, bad, _, k = file_with_damaged_tile(model)
    (tmp_path / "bad.vqc").write_bytes(bad)
    runs = {"strict": ["decompress", "bad.vqc", "-o", "strict.png"],
            "salvage": ["decompress", "bad.vqc", "-o", "salvaged.png", "--salvage"]}
    results = cli_parallel(runs, cwd=tmp_path)
    assert f"payload of tile {k} is corrupted" in assert_clean_failure(results["strict"])
    assert not (tmp_path / "strict.png").exists()
    err = results["salvage"].stderr.decode()
    assert results["salvage"].returncode == 0, err
    assert err.strip().splitlines() == [f"vqcodec: warning: bad.vqc: 1 damaged tile(s) ({k}) could not be restored"]
    np.testing.assert_array_equal(png_pixels((tmp_path / "salvaged.png").read_bytes()),
                                  decompress_image(bad, model, salvage=True).pixels)


# -- train and extract-codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["train", "vqvae", "--help"], ["train", "prior", "--help"],
     ["extract-codes", "--help"]],
)
def test_help(argv):
    result = CliRunner().invoke(cli_main, argv)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if argv[:2] == ["train", "vqvae"]:
        assert "--stop-at" in result.output and "--resume" in result.output


def test_train_missing_data_folder(tmp_path):
    out = tmp_path / "X"
    result = CliRunner().invoke(cli_main, ["train", "vqvae", "--data", "/nonexistent", "--out", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "--data" in result.output
    assert not out.exists()


TINY_CLI = ["--crop", "16", "--batch", "4", "--workers", "0", "--hidden", "16", "--res-channels", "8",
            "--res-blocks", "1", "--codes", "16", "--code-dim", "4"]


def test_train_resume_without_a_run_is_a_clean_error(tiny_images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        cli_main, ["train", "vqvae", "--data", str(tiny_images), "--out", str(empty), "--resume", *TINY_CLI]
    )
    assert result.exit_code == 1, result.output
    assert "nothing to resume" in result.output
    assert "Traceback" not in result.output
    assert list(empty.iterdir()) == []


def test_train_stop_at_then_resume(tiny_images, tmp_path):
    out = tmp_path / "run"
    args = ["train", "vqvae", "--data", str(tiny_images), "--out", str(out), "--steps", "6", *TINY_CLI]
    first = CliRunner().invoke(cli_main, [*args, "--stop-at", "3"])
    assert first.exit_code == 0, first.output
    assert [r["step"] for r in read_log(out)[0]] == [1, 2, 3]
    again = CliRunner().invoke(cli_main, args)  # a fresh run may not overwrite it
    assert again.exit_code == 1 and "already holds a run" in again.output
    resumed = CliRunner().invoke(cli_main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in read_log(out)[0]] == [1, 2, 3, 4, 5, 6]


def test_every_preset_sets_options_its_command_has() -> None:
    from vqcodec_cli.train import train_prior_cmd, train_vqvae_cmd

    from vqcodec.train.presets import PRESETS

    params = {"vqvae": {p.name for p in train_vqvae_cmd.params}, "prior": {p.name for p in train_prior_cmd.params}}
    for name, stages in PRESETS.items():
        for stage, options in stages.items():
            assert set(options) <= params[stage.split("-")[0]], (name, stage)


def test_train_preset_refit_with_the_command_line_winning(tiny_images, tmp_path):
    out = tmp_path / "run"
    args = ["train", "vqvae", "--data", str(tiny_images), "--out", str(out), "--workers", "0", "--preset", "top-only",
            "--steps", "2", "--batch", "2", "--crop", "32"]
    res = CliRunner().invoke(cli_main, args)
    assert res.exit_code == 0, res.output
    assert [r["step"] for r in read_log(out)[0]] == [1, 2]  # --steps and friends beat the preset's
    kind, config, _ = load_model(out / "model.safetensors")
    assert kind == "vqvae" and config["dropped_levels"] == 1 and config["decoder_extra_blocks"] == 2
    assert config["num_codes"] == 512  # the paper model's sizes, from the preset's --refit
    res = CliRunner().invoke(cli_main, [*args[:-6], "--preset", "nope"])
    assert res.exit_code == 1 and "unknown preset 'nope' (known: paper" in res.output


def test_refit_for_rungs_then_export_as_delta(tiny_images, tmp_path, monkeypatch):
    """``train vqvae --refit --rung-scales`` learns the decoder for coding at those scales (validation
    reports each), and ``export --refit-of --delta`` writes a file a fraction of the base's size that
    compresses exactly as the whole model would."""
    from vqcodec.codec import compress
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.zoo import registry

    monkeypatch.setenv(registry.ENV_VAR, "")
    models = tmp_path / "models"
    base = write_tiny_codec_model(models / "base.safetensors")
    out = tmp_path / "run"
    args = ["train", "vqvae", "--data", str(tiny_images), "--val", str(tiny_images), "--val-images", "2",
            "--out", str(out), "--workers", "0", "--refit", str(base), "--rung-scales", "0.5,1.5",
            "--steps", "3", "--batch", "4", "--crop", "16", "--validate-every", "3"]
    res = CliRunner().invoke(cli_main, args)
    assert res.exit_code == 0, res.output
    val = read_log(out)[1][-1]
    assert val["val_psnr"] == pytest.approx((val["val_psnr@0.5"] + val["val_psnr@1.5"]) / 2)
    bad = CliRunner().invoke(cli_main, [*args[:-2], "--rung-scales", "1.5,x", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 1 and "--rung-scales takes numbers" in bad.output
    bad = CliRunner().invoke(cli_main, [*args[:-2], "--rung-scales", "9", "--out", str(tmp_path / "r3")])
    assert bad.exit_code == 1 and "scale must be from" in bad.output
    delta = models / "up.safetensors"
    export = ["export", "--refit-of", str(base), "--vqvae", str(out / "model.safetensors")]
    res = CliRunner().invoke(cli_main, [*export, "--delta", "--out", str(delta)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli_main, [*export, "--out", str(tmp_path / "whole.safetensors")])
    assert res.exit_code == 0, res.output
    assert delta.stat().st_size < 0.5 * (tmp_path / "whole.safetensors").stat().st_size
    pixels = smooth_image(24, 24, 4)
    assert compress(pixels, str(delta)) == compress(pixels, str(tmp_path / "whole.safetensors"))
    res = CliRunner().invoke(cli_main, ["export", "--vqvae", str(out / "model.safetensors"), "--delta",
                                        "--out", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 1 and "--delta stores a --refit-of model's differences" in res.output


def _round_trip_on_1_and_2_threads(pixels: np.ndarray, model: Path, scale: float) -> tuple[list, list]:
    """(files, decoded images) of ``pixels`` coded with ``model`` at ``scale`` on 1 and 2 threads; asserts
    both threads give the same bytes and pixels."""
    from vqcodec.codec import compress, decompress

    threads = torch.get_num_threads()
    try:
        files, images = [], []
        for n in (1, 2):
            torch.set_num_threads(n)
            files.append(compress(pixels, str(model), scale=scale))
            images.append(decompress(files[-1], str(model)))
    finally:
        torch.set_num_threads(threads)
    assert files[0] == files[1] and np.array_equal(images[0], images[1])
    return files, images


def test_prior_refit_for_a_rung_then_export_as_delta(tiny_images, tmp_path, monkeypatch):
    """A shipped prior fine-tuned for the codes of a rung: ``extract-codes --scale`` codes images as
    that rung does, ``train prior --refit`` starts from the model's prior (float again) and keeps its
    architecture, ``export --refit-of --prior-bottom --delta`` keeps the VQ-VAE and the top prior and
    quantizes the new bottom prior; its files decode exactly, on 1 and 2 threads."""
    from safetensors.torch import load_file

    from vqcodec.codec import compress, decompress
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.zoo import registry
    from vqcodec.zoo.codec_model import load_codec_model

    monkeypatch.setenv(registry.ENV_VAR, "")
    models = tmp_path / "models"
    base = write_tiny_codec_model(models / "base.safetensors")
    codes = tmp_path / "codes"
    run("extract-codes", "--vqvae", str(base), "--data", str(tiny_images), "--out", str(codes), "--crop", "32",
        "--crops", "2", "--scale", "1.5")
    meta = json.loads((codes / "meta.json").read_text())
    assert meta["scale"] == 1.5 and np.load(codes / "level0.npy").shape == (16, 8, 8)
    bad = CliRunner().invoke(cli_main, ["extract-codes", "--vqvae", str(base), "--data", str(tiny_images),
                                        "--out", str(tmp_path / "c2"), "--scale", "5"])
    assert bad.exit_code == 1 and "scale must be from" in bad.output and not (tmp_path / "c2").exists()
    out = tmp_path / "prior"
    args = ["train", "prior", "--refit", str(base), "--level", "bottom", "--codes", str(codes), "--val-codes",
            str(codes), "--val-tiles", "4", "--out", str(out), "--workers", "0", "--steps", "4", "--batch", "4",
            "--lr", "0.01", "--validate-every", "4"]
    bad = CliRunner().invoke(cli_main, [*args, "--channels", "8"])
    assert bad.exit_code == 2 and "--channels is the --refit model's" in bad.output
    run(*args)
    kind, config, tensors = load_model(out / "model.safetensors")
    start = load_codec_model(base).priors[0]
    assert kind == "prior-bottom" and config["tile"] == 8 and config["channels"] == start.config.channels
    bad = CliRunner().invoke(cli_main, ["export", "--refit-of", str(base), "--prior-bottom",
                                        str(out / "model.safetensors"), "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "--calibration is needed" in bad.output
    bad = CliRunner().invoke(cli_main, ["export", "--refit-of", str(base), "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "needs what changed" in bad.output
    delta = models / "rung.safetensors"
    run("export", "--refit-of", str(base), "--prior-bottom", str(out / "model.safetensors"), "--calibration",
        str(codes), "--tiles", "8", "--delta", "--out", str(delta))
    stored = load_file(str(delta))
    assert stored and all(k.startswith("prior0.") for k in stored)  # the VQ-VAE and the top prior are base's
    new, old = load_codec_model(delta), load_codec_model(base)
    assert new.fingerprint != old.fingerprint
    pixels = smooth_image(40, 48, 7)
    files, images = _round_trip_on_1_and_2_threads(pixels, delta, 1.5)
    old_file = compress(pixels, str(base), scale=1.5)
    assert old_file != files[0]  # the same codes as the base model, so its pixels: only the bits changed
    assert np.array_equal(images[0], decompress(old_file, str(base)))


def test_multipass_priors_trained_and_exported_8_bit_code_exactly(tiny_images, tmp_path, monkeypatch):
    """``train prior --arch multipass`` for both levels, then ``export --refit-of --act-bits 8``: the
    priors compute in exact float32, store int8 weights, and the files decode exactly, on 1 and 2
    threads (the encoder's tiles then run on two threads). --act-bits is refused where it means nothing."""
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.zoo import registry
    from vqcodec.zoo.codec_model import load_codec_model

    monkeypatch.setenv(registry.ENV_VAR, "")
    base = write_tiny_codec_model(tmp_path / "models" / "base.safetensors")
    codes = tmp_path / "codes"
    run("extract-codes", "--vqvae", str(base), "--data", str(tiny_images), "--out", str(codes), "--crop", "32",
        "--crops", "2")
    runs = {}
    for level in ("bottom", "top"):
        runs[level] = tmp_path / level
        run("train", "prior", "--arch", "multipass", "--schedule", "4x4", "--window", "5", "--channels", "8",
            "--embed-dim", "4", "--blocks", "1", "--cond-channels", "8", "--cond-blocks", "1", "--level", level,
            "--tile", "8", "--codes", str(codes), "--val-codes", str(codes), "--val-tiles", "4", "--out",
            str(runs[level]), "--workers", "0", "--steps", "3", "--batch", "4", "--validate-every", "3")
    out = tmp_path / "models" / "mp8.safetensors"
    export = ["export", "--refit-of", str(base), "--prior-bottom", str(runs["bottom"] / "model.safetensors"),
              "--prior-top", str(runs["top"] / "model.safetensors"), "--calibration", str(codes), "--tiles", "8",
              "--tile", "16"]
    run(*export, "--act-bits", "8", "--out", str(out))
    model = load_codec_model(out)
    assert [p.config.act_bits for p in model.priors] == [8, 8] and model.tile == 16
    assert all(p.dtype == torch.float32 and p.state()["logits.w"].dtype == torch.int8 for p in model.priors)
    files, images = _round_trip_on_1_and_2_threads(smooth_image(72, 80, 5), out, 1.0)
    wide = tmp_path / "models" / "mp16.safetensors"
    run(*export, "--out", str(wide))
    assert [p.config.act_bits for p in load_codec_model(wide).priors] == [16, 16]
    wide_files, wide_images = _round_trip_on_1_and_2_threads(smooth_image(72, 80, 5), wide, 1.0)
    assert np.array_equal(wide_images[0], images[0]) and wide_files[0] != files[0]  # same codes, other bits
    bad = CliRunner().invoke(cli_main, ["export", "--refit-of", str(base), "--wavefront-attention", "--act-bits",
                                        "8", "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "--act-bits sets the width of new priors" in bad.output
    gated = tmp_path / "gated"
    run("train", "prior", "--refit", str(base), "--level", "bottom", "--codes", str(codes), "--val-codes",
        str(codes), "--val-tiles", "4", "--out", str(gated), "--workers", "0", "--steps", "2", "--batch", "4",
        "--validate-every", "2")
    bad = CliRunner().invoke(cli_main, ["export", "--refit-of", str(base), "--prior-bottom",
                                        str(gated / "model.safetensors"), "--calibration", str(codes), "--act-bits",
                                        "8", "--out", str(tmp_path / "y.safetensors")])
    assert bad.exit_code == 1 and "is not one" in bad.output and not (tmp_path / "y.safetensors").exists()


def test_export_with_wavefront_attention_keeps_the_weights_and_decodes_by_wavefronts(tmp_path, monkeypatch):
    """``export --refit-of M --wavefront-attention``: M's integer weights unchanged, the top prior's
    attention limited to the wavefront, so its tiles decode by wavefronts; the file records the reach
    (a delta of one small tensor, a fingerprint of its own) and codes to the same pixels as M."""
    from safetensors.torch import load_file

    from vqcodec.codec import compress, decompress
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.zoo import registry

    monkeypatch.setenv(registry.ENV_VAR, "")
    models = tmp_path / "models"
    base = write_tiny_codec_model(models / "base.safetensors")
    wf = models / "wf.safetensors"
    run("export", "--refit-of", str(base), "--wavefront-attention", "--delta", "--out", str(wf))
    assert set(load_file(str(wf))) == {"prior1.attn.reach"}
    old, new = load_codec_model(base), load_codec_model(wf)
    assert old.priors[1].reach is None and new.priors[1].reach == new.priors[1].config.stack_reach
    assert new.fingerprint != old.fingerprint
    pixels = smooth_image(40, 48, 3)
    before, after = compress(pixels, str(base)), compress(pixels, str(wf))
    assert after != before and abs(len(after) - len(before)) <= 0.1 * len(before)
    assert np.array_equal(decompress(after, str(wf)), decompress(before, str(base)))
    bad = CliRunner().invoke(cli_main, ["export", "--vqvae", str(base), "--wavefront-attention",
                                        "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "--wavefront-attention changes a --refit-of model" in bad.output
    again = ["export", "--refit-of", str(wf), "--wavefront-attention", "--out", str(tmp_path / "y.safetensors")]
    bad = CliRunner().invoke(cli_main, again)  # already by wavefronts: it would be the same model
    assert bad.exit_code == 1 and "no prior left whose attention runs in raster order" in bad.output
    assert not (tmp_path / "y.safetensors").exists()


def test_refit_with_an_upscaler_trains_only_it(tiny_images, tmp_path, monkeypatch):
    """``--upscaler`` adds a learned upscaler and trains nothing else: the delta holds only it, the
    files keep their bits, and a rung below scale 1 decodes through it (other pixels than bicubic)."""
    from safetensors.torch import load_file

    from vqcodec.codec import compress, decompress
    from vqcodec.coding.bitstream import unpack
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.zoo import registry
    from vqcodec.zoo.registry import read_metadata

    monkeypatch.setenv(registry.ENV_VAR, "")
    models = tmp_path / "models"
    base = write_tiny_codec_model(models / "base.safetensors")
    out = tmp_path / "run"
    args = ["train", "vqvae", "--data", str(tiny_images), "--out", str(out), "--workers", "0", "--refit", str(base),
            "--steps", "3", "--batch", "4", "--crop", "16", "--lr", "0.05", "--upscaler", "4", "--upscaler-layers", "3"]
    bad = CliRunner().invoke(cli_main, [*args, "--rung-scales", "1,1.5"])
    assert bad.exit_code == 1 and "under 1" in bad.output
    bad = CliRunner().invoke(cli_main, [*args, "--out", str(tmp_path / "r2")])  # no --rung-scales
    assert bad.exit_code == 1 and "under 1" in bad.output
    bad = CliRunner().invoke(cli_main, ["train", "vqvae", "--data", str(tiny_images), "--out", str(tmp_path / "r3"),
                                        "--upscaler", "4"])
    assert bad.exit_code == 1 and "change a --refit model" in bad.output
    res = CliRunner().invoke(cli_main, [*args, "--rung-scales", "0.5,0.75"])
    assert res.exit_code == 0, res.output
    delta = models / "down.safetensors"
    res = CliRunner().invoke(cli_main, ["export", "--refit-of", str(base), "--vqvae", str(out / "model.safetensors"),
                                        "--delta", "--out", str(delta)])
    assert res.exit_code == 0, res.output
    stored = load_file(str(delta))
    assert stored and all(k.startswith("vqvae.upscaler.") for k in stored)
    assert json.loads(read_metadata(delta)["config"])["vqvae"]["upscaler_channels"] == 4
    pixels = smooth_image(32, 32, 4)
    for scale in (0.5, 1.0):  # the same codes and bits: only the model's fingerprint in the header differs
        tiles = [unpack(compress(pixels, str(m), scale=scale)).tiles for m in (delta, base)]
        assert tiles[0] == tiles[1]

    def decoded(model: Path, scale: float) -> np.ndarray:
        return decompress(compress(pixels, str(model), scale=scale), str(model))

    assert not np.array_equal(decoded(delta, 0.5), decoded(base, 0.5))
    assert np.array_equal(decoded(delta, 1.0), decoded(base, 1.0))  # scale 1: the upscaler does not run


# -- eval -----------------------------------------------------------------------------------------------------


def _code_dataset(folder: Path, n: int, seed: int, vq_cfg: VQVAEConfig) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    np.save(folder / "level0.npy", rng.integers(0, 4, (n, 8, 8)).astype(np.uint16))
    np.save(folder / "level1.npy", rng.integers(0, vq_cfg.num_codes, (n, 4, 4)).astype(np.uint16))
    np.save(folder / "labels.npy", np.full(n, -1, dtype=np.int64))
    meta = {"levels": 2, "num_codes": vq_cfg.num_codes, "classes": []}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_eval_command(tmp_path: Path, tiny_images: Path) -> None:
    vq_cfg = VQVAEConfig(hidden=16, res_channels=8, res_blocks=1, num_codes=16, code_dim=4, levels=2)
    torch.manual_seed(0)
    save_model(tmp_path / "vq.safetensors", VQVAE(vq_cfg).state_dict(), "vqvae", vq_cfg.to_dict())
    paths = {}
    for level, name in enumerate(["bottom", "top"]):
        prior = PixelCNNPrior(tiny_prior_config(num_codes=16, cond_levels=1 - level, attention_every=2 if level else 0))
        paths[name] = tmp_path / f"{name}.safetensors"
        save_model(paths[name], prior.state_dict(), f"prior-{name}",
                   {**prior.config.to_dict(), "level": level, "tile": 8, "levels": 2})
    _code_dataset(tmp_path / "codes", 12, 0, vq_cfg)
    _code_dataset(tmp_path / "val", 12, 1, vq_cfg)
    out = tmp_path / "table.json"
    args = ["eval", "--vqvae", str(tmp_path / "vq.safetensors"), "--prior-top", str(paths["top"]),
            "--prior-bottom", str(paths["bottom"]), "--codes", str(tmp_path / "codes"),
            "--val-codes", str(tmp_path / "val"), "--data", str(tiny_images), "--val", str(tiny_images),
            "--images", "2", "--tiles", "8", "--json", str(out)]
    res = CliRunner().invoke(cli_main, args)
    assert res.exit_code == 0, res.output
    assert "NLL val" in res.output and "PSNR" in res.output
    table = json.loads(out.read_text())
    top, bottom = table["priors"]["top"], table["priors"]["bottom"]
    assert top["log2_k"] == 4.0 and bottom["log2_k"] == 4.0
    assert bottom["unigram_train"] == pytest.approx(2.0, abs=0.1)  # bottom codes use 4 of 16 symbols
    assert top["unigram_val"] == pytest.approx(unigram_entropy(np.load(tmp_path / "val" / "level1.npy"), 16))
    assert top["gap_percent"] == pytest.approx(100 * (top["val_bits"] - top["train_bits"]) / top["train_bits"])
    assert bottom["nll_percent_of_unigram"] == pytest.approx(100 * bottom["val_bits"] / bottom["unigram_val"])
    assert table["vqvae"]["train_mse"] == table["vqvae"]["val_mse"]  # the same folder twice
    assert table["vqvae"]["train_psnr"] > 0
    # a level the codes do not have is refused with a clean message
    res = CliRunner().invoke(cli_main, [*args, "--prior-middle", str(paths["top"])])
    assert res.exit_code == 1 and "no 'middle' level" in res.output


def test_eval_holdout_gap(tmp_path: Path, tiny_images: Path) -> None:
    """A prior that learnt its training codes by heart: --holdout-codes shows the overfitting."""
    vq_cfg = VQVAEConfig(hidden=16, res_channels=8, res_blocks=1, num_codes=4, code_dim=4, levels=2)
    save_model(tmp_path / "vq.safetensors", VQVAE(vq_cfg).state_dict(), "vqvae", vq_cfg.to_dict())
    paths = {}
    for level, name in enumerate(["bottom", "top"]):
        prior = PixelCNNPrior(tiny_prior_config(num_codes=4, cond_levels=1 - level, attention_every=0))
        if level == 0:  # bias the output towards code 0: cheap on codes of 0, dear on anything else
            with torch.no_grad():
                prior.logits.bias.copy_(torch.tensor([8.0, 0.0, 0.0, 0.0]))
        paths[name] = tmp_path / f"{name}.safetensors"
        save_model(paths[name], prior.state_dict(), f"prior-{name}",
                   {**prior.config.to_dict(), "level": level, "tile": 8, "levels": 2})
    for folder, bottom_codes in (("codes", 0), ("val", 0), ("held", 1)):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "level0.npy", np.full((4, 8, 8), bottom_codes, dtype=np.uint16))
        np.save(tmp_path / folder / "level1.npy", np.zeros((4, 4, 4), dtype=np.uint16))
        np.save(tmp_path / folder / "labels.npy", np.full(4, -1, dtype=np.int64))
        (tmp_path / folder / "meta.json").write_text(json.dumps({"levels": 2, "num_codes": 4, "classes": []}))
    out = tmp_path / "table.json"
    args = ["eval", "--vqvae", str(tmp_path / "vq.safetensors"), "--prior-top", str(paths["top"]),
            "--prior-bottom", str(paths["bottom"]), "--codes", str(tmp_path / "codes"),
            "--val-codes", str(tmp_path / "val"), "--holdout-codes", str(tmp_path / "held"), "--tiles", "4",
            "--json", str(out)]
    res = CliRunner().invoke(cli_main, args)
    assert res.exit_code == 0, res.output
    assert "gap held-out %" in res.output
    bottom = json.loads(out.read_text())["priors"]["bottom"]
    assert bottom["gap_percent"] == pytest.approx(0.0)  # the same codes as training
    assert bottom["holdout_bits"] > 10 * bottom["train_bits"]
    assert bottom["holdout_gap_percent"] == pytest.approx(
        100 * (bottom["holdout_bits"] - bottom["train_bits"]) / bottom["train_bits"])


# -- sample ---------------------------------------------------------------------------------------------------


def test_sample_help() -> None:
    res = CliRunner().invoke(cli_main, ["sample", "--help"])
    assert res.exit_code == 0
    for opt in ("--model", "--n", "--out", "--size", "--temperature", "--class", "--seed", "--classifier",
                "--target-class", "--acceptance"):
        assert opt in res.output


def test_sample_grid(tiny_model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(cli_main, ["sample", "--model", str(tiny_model_file), "--n", "3", "--out", str(out),
                                        "--size", "16", "--seed", "1"])
    assert res.exit_code == 0, res.output
    grid = np.asarray(Image.open(out).convert("RGB"))
    expected = image_grid(sample_images(load_codec_model(tiny_model_file), 3, 16, 16, seed=1))
    assert grid.shape == (34, 34, 3)  # 2 x 2 cells of 16 pixels with 2-pixel gaps
    assert np.array_equal(grid, expected)
    res = CliRunner().invoke(cli_main, ["sample", "--model", str(tiny_model_file), "--n", "3", "--out", str(out),
                                        "--size", "16"])
    assert res.exit_code == 1 and "--force" in res.output


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_sample_folder_rejection_and_errors(tiny_model_file: Path, tmp_path: Path) -> None:
    clf = tmp_path / "clf.pt"
    torch.jit.script(Brightness()).save(str(clf))
    out = tmp_path / "samples"
    base = ["sample", "--model", str(tiny_model_file), "--size", "16"]
    res = CliRunner().invoke(cli_main, [*base, "--n", "2", "--out", str(out), "--classifier", str(clf),
                                        "--target-class", "1", "--acceptance", "0.5"])
    assert res.exit_code == 0, res.output
    assert "acceptance rate: 0.5000" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["sample_0000.png", "sample_0001.png"]
    assert np.asarray(Image.open(out / "sample_0000.png")).shape == (16, 16, 3)
    for extra, message in [(["--class", "1"], "not class-conditional"), (["--size", "20"], "stride"),
                           (["--target-class", "1"], "go together")]:
        res = CliRunner().invoke(cli_main, [*base, "--n", "1", "--out", str(tmp_path / "x.png"), *extra])
        assert res.exit_code == 1 and message in res.output, res.output


# -- the README's training workflow ---------------------------------------------------------------------------


def test_train_extract_export_compress(tiny_images, tmp_path):
    """Train both stages, export, code a file: end to end on tiny data."""
    r = str(tmp_path)
    tiny = ["--steps", "4", "--batch", "4", "--workers", "0", "--validate-every", "2", "--checkpoint-every", "2"]
    run("train", "vqvae", "--data", str(tiny_images), "--val", str(tiny_images), "--out", f"{r}/vq", "--crop", "16",
        "--hidden", "16", "--res-channels", "8", "--res-blocks", "1", "--codes", "32", "--code-dim", "8",
        "--val-images", "2", *tiny)
    vq = f"{r}/vq/model.safetensors"
    run("extract-codes", "--vqvae", vq, "--data", str(tiny_images), "--out", f"{r}/codes", "--crop", "32",
        "--crops", "2")
    for level, extra in (("top", ["--attention-wavefront"]), ("bottom", [])):
        run("train", "prior", "--level", level, "--codes", f"{r}/codes", "--val-codes", f"{r}/codes", "--out",
            f"{r}/{level}", "--tile", "8", "--channels", "8", "--layers", "2", "--cond-channels", "8",
            "--cond-blocks", "1", "--val-tiles", "4", *extra, *tiny)
    out = run("export", "--vqvae", vq, "--prior-top", f"{r}/top/model.safetensors", "--prior-bottom",
              f"{r}/bottom/model.safetensors", "--calibration", f"{r}/codes", "--tiles", "32",
              "--out", f"{r}/m.safetensors")
    assert "fingerprint" in out
    fingerprint = re.search(r"fingerprint ([0-9a-f]{32})", out).group(1)
    top = load_codec_model(f"{r}/m.safetensors").priors[1]  # --attention-wavefront: the top decodes by wavefronts
    assert top.config.attention_wavefront and top.reach == 2 and len(top.decode_order(4, 4)) < 16
    # the old spellings are still accepted and give the same codes and the same model
    run("extract-codes", "--model", vq, "--data", str(tiny_images), "--out", f"{r}/codes_old", "--crop", "32",
        "--crops", "2")
    for name in ("level0.npy", "level1.npy"):
        assert np.array_equal(np.load(f"{r}/codes/{name}"), np.load(f"{r}/codes_old/{name}"))
    old_export = ["export", "--vqvae", vq, "--prior", f"{r}/bottom/model.safetensors", "--prior",
                  f"{r}/top/model.safetensors", "--calibration", f"{r}/codes", "--tiles", "32",
                  "--out", f"{r}/m.safetensors"]
    refused = CliRunner().invoke(cli_main, old_export)  # an existing --out needs --force
    assert refused.exit_code == 1 and "--force" in refused.output, refused.output
    assert fingerprint in run(*old_export, "--force")
    image = np.asarray(Image.open(next(tiny_images.glob("*.png"))).convert("RGB"))
    Image.fromarray(image).save(tmp_path / "in.png")
    run("compress", f"{r}/in.png", "-o", f"{r}/in.vqc", "--model", f"{r}/m.safetensors")
    run("decompress", f"{r}/in.vqc", "-o", f"{r}/back.png", "--model", f"{r}/m.safetensors")
    back = np.asarray(Image.open(tmp_path / "back.png"))
    assert back.shape == image.shape
    info = run("info", f"{r}/in.vqc", "--model", f"{r}/m.safetensors")
    assert re.search(r"^ +model: m$", info, re.M), info  # the header's fingerprint matches the exported model


# -- the model zoo ------------------------------------------------------------------------------------------
def test_models_lists_shipped_and_user_models_and_decompress_finds_them(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    write_tiny_codec_model(folder / "tiny.safetensors")
    runner = CliRunner()
    res = runner.invoke(cli_main, ["models", "--all", "--model-dir", str(folder)])
    assert res.exit_code == 0, res.output
    out = res.output.splitlines()
    steps = ladder()
    for r in steps:  # the ladder first, quality 1 first, the default one starred
        star = "*" if r.name == default_model_name() else ""
        assert out[1 + r.quality].split()[:4] == [f"{r.quality}{star}", r.name, r.model, f"{r.scale:g}"], out
    models_at = next(i for i, line in enumerate(out) if line.startswith("name "))  # after both ladders
    lines = {line.split()[0]: line for line in out[models_at + 2 :] if line.split()}
    tiny_fp = load_codec_model(folder / "tiny.safetensors").fingerprint.hex()
    assert tiny_fp in lines["tiny"] and str(folder) in lines["tiny"]
    assert "57a57c49cb30abd2344d4222711e75d9" in lines["paper"] and "28.74 dB" in lines["paper"]
    assert re.search(r"\s2\s+10\.9 MB\s+10\.9 MB\s", lines["paper"])  # levels, file and model sizes
    Image.fromarray(smooth_image(24, 32, 3)).save(tmp_path / "a.png")
    base = ["--model-dir", str(folder)]
    assert runner.invoke(cli_main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.vqc"),
                                    "--model", "tiny", *base]).exit_code == 0
    res = runner.invoke(cli_main, ["decompress", str(tmp_path / "a.vqc"), "-o", str(tmp_path / "b.png"), *base])
    assert res.exit_code == 0, res.output
    assert "tiny" in runner.invoke(cli_main, ["info", str(tmp_path / "a.vqc"), *base]).output
    res = runner.invoke(cli_main, ["decompress", str(tmp_path / "a.vqc"), "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 1 and f"written by model {tiny_fp}, which is not installed" in res.output
    assert not (tmp_path / "c.png").exists()
    res = runner.invoke(cli_main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "d.vqc"),
                                   "--model", "nope"])
    assert res.exit_code == 1 and "no model named 'nope'" in res.output


def test_quality_option(tmp_path: Path) -> None:
    """--quality Q or NAME picks a rung, info shows it; a bad one is a usage error, exit 2."""
    Image.fromarray(smooth_image(24, 32, 3)).save(tmp_path / "a.png")
    steps = ladder()
    cases = [str(len(steps) + 1), "0", "nope", "1.5"]
    for q in cases:
        res = cli("compress", "a.png", "-o", "q.vqc", "--quality", q, cwd=tmp_path)
        assert res.returncode == 2 and res.stdout == b"", (q, res)
        assert b"Error: Invalid value for '--quality'" in res.stderr and b"Traceback" not in res.stderr
        assert not (tmp_path / "q.vqc").exists()
    res = cli("compress", "a.png", "-o", "q.vqc", "--quality", "1", "--model", steps[0].model, cwd=tmp_path)
    assert res.returncode == 2 and b"--quality and --model exclude each other" in res.stderr
    for r in {s.name: s for s in (steps[0], steps[-1])}.values():
        for q in (str(r.quality), r.name):
            res = cli("compress", "a.png", "-o", f"{q}.vqc", "-q", q, cwd=tmp_path)
            assert res.returncode == 0, res.stderr
            info = run("info", str(tmp_path / f"{q}.vqc"))
            assert re.search(rf"^ +model: {r.model}$", info, re.M), info
            assert f"quality: {r.quality} of {len(steps)} ({r.name})" in info, info
            assert ("coded at:" in info) == (r.scale != 1)
            res = cli("decompress", f"{q}.vqc", "-o", f"{q}.png", cwd=tmp_path)
            assert res.returncode == 0 and Image.open(tmp_path / f"{q}.png").size == (32, 24), res.stderr


def test_fast_option(tmp_path: Path) -> None:
    """--fast takes the quality's rung from the fast ladder (info says so); with --model it is a
    usage error (exit 2), and a fast rung's name works with -q alone."""
    Image.fromarray(smooth_image(24, 32, 3)).save(tmp_path / "a.png")
    fast = ladder("fast")
    res = cli("compress", "a.png", "-o", "f.vqc", "--fast", "--model", "paper", cwd=tmp_path)
    assert res.returncode == 2 and b"--fast and --model exclude each other" in res.stderr
    assert not (tmp_path / "f.vqc").exists()
    for args, rung in ((["--fast", "-q", "2"], fast[1]), (["-q", fast[6].name], fast[6])):
        res = cli("compress", "a.png", "-o", "f.vqc", "--force", *args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        info = run("info", str(tmp_path / "f.vqc"))
        assert re.search(rf"^ +model: {rung.model}$", info, re.M), info
        assert f"quality: {rung.quality} of {len(fast)} ({rung.name}, the fast ladder)" in info, info


# -- hostile inputs and the user's own file system (issue 12) -------------------------------------------------


def invoke(*args: str):
    """Run a command in this process; no exception may escape it other than SystemExit."""
    res = CliRunner().invoke(cli_main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    return res


def refused(*args: str) -> str:
    """Run a command in this process; it must fail cleanly: exit 1 and one 'vqcodec: error:' line on
    stderr (and nothing else). Returns that line."""
    res = invoke(*args)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqcodec: error: "), res.stderr
    return lines[0]


@pytest.fixture
def tiny_png(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(smooth_image(24, 40, seed=7)).save(path)
    return path


def test_force_writes_through_fifos_and_devices_and_follows_symbolic_links(tiny_model_file, tiny_png, tmp_path):
    import stat
    import threading

    m = ["--model", str(tiny_model_file)]
    want = compress(tiny_png, load_codec_model(tiny_model_file))
    # a FIFO (and /dev/null) is written through, without --force: nothing is replaced
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert invoke("compress", str(tiny_png), "-o", str(fifo), *m).exit_code == 0
    reader.join(60)
    assert got == [want] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert invoke("compress", str(tiny_png), "-o", os.devnull, *m).exit_code == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    if hasattr(os, "mknod") and os.geteuid() == 0:  # a private copy of /dev/null, even with --force
        node = tmp_path / "null"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        assert invoke("compress", str(tiny_png), "-o", str(node), "--force", *m).exit_code == 0
        assert stat.S_ISCHR(os.lstat(node).st_mode)
    # a symbolic link to a file is that file: refused without --force, its target replaced with it
    target, link = tmp_path / "target.vqc", tmp_path / "link.vqc"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert "link.vqc exists; use --force" in refused("compress", str(tiny_png), "-o", str(link), *m)
    assert invoke("compress", str(tiny_png), "-o", str(link), "--force", *m).exit_code == 0
    assert link.is_symlink() and target.read_bytes() == want
    dangling = tmp_path / "dangling.vqc"
    dangling.symlink_to(tmp_path / "nowhere" / "x.vqc")
    assert "dangling symbolic link" in refused("compress", str(tiny_png), "-o", str(dangling), "--force", *m)


def test_an_output_that_is_an_input_is_refused_even_with_force(tiny_model_file, tiny_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = tiny_png.read_bytes()
    m = ["--model", str(tiny_model_file)]
    for out in ("in.png", "./in.png", str(tiny_png)):
        assert "is an input of this command" in refused("compress", "in.png", "-o", out, "--force", *m)
    (tmp_path / "alias.png").symlink_to(tiny_png)
    assert "is an input" in refused("compress", "in.png", "-o", "alias.png", "--force", *m)
    assert tiny_png.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.png", "in.png", "tiny.safetensors"]


def test_an_image_that_cannot_fit_in_memory_is_refused_with_the_numbers(tiny_model_file, tiny_png, monkeypatch):
    from vqcodec import codec as codec_module

    monkeypatch.setattr(codec_module, "available_memory", lambda: 100 << 20, raising=False)
    line = refused("compress", str(tiny_png), "-o", str(tiny_png.with_suffix(".vqc")), "--model", str(tiny_model_file))
    assert re.search(r"compressing a 40x24 image needs about \d+\.\d GiB of memory, but only 0\.1 GiB is available",
                     line), line
    assert not tiny_png.with_suffix(".vqc").exists()


def test_unreadable_inputs_are_one_clean_error(tiny_model_file, tiny_png, tmp_path, monkeypatch):
    import builtins

    data = compress(tiny_png, load_codec_model(tiny_model_file))
    locked = tmp_path / "locked.vqc"
    locked.write_bytes(data)
    locked_png = tmp_path / "locked.png"
    locked_png.write_bytes(tiny_png.read_bytes())
    real_open, real_io_open = builtins.open, io.open

    def deny(opener):
        def wrapped(file, *args, **kwargs):
            if str(file).startswith(str(tmp_path / "locked")):
                raise PermissionError(13, "Permission denied", str(file))
            return opener(file, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(builtins, "open", deny(real_open))  # as root, chmod 000 would not stop a read
    monkeypatch.setattr(io, "open", deny(real_io_open))
    m = ["--model", str(tiny_model_file)]
    assert "Permission denied" in refused("compress", str(locked_png), "-o", str(tmp_path / "x.vqc"), *m)
    assert "Permission denied" in refused("decompress", str(locked), "-o", str(tmp_path / "x.png"), *m)
    assert "Permission denied" in refused("info", str(locked))


def test_broken_model_files_are_one_clean_error_naming_the_problem(tiny_png, tmp_path):
    from vqcodec.testing import tiny_codec_file_parts

    def broken(edit):
        tensors, config = tiny_codec_file_parts()
        edit(tensors, config)
        path = tmp_path / "broken.safetensors"
        save_model(path, tensors, "codec", config)
        return refused("compress", str(tiny_png), "-o", str(tmp_path / "x.vqc"), "--model", str(path), "--force")

    def wrong_shape(t, c):
        t["prior0.layers.0.h_out.w"] = torch.zeros(3, 3, 1, 1)

    def more_channels(t, c):
        c["priors"][0]["channels"] *= 2

    assert "prior configurations" in broken(lambda t, c: c.update(priors="abc"))
    assert "bad configuration" in broken(lambda t, c: c.update(tile="abc"))
    assert "'lut.exp_prob' is missing" in broken(lambda t, c: t.pop("prior0.lut.exp_prob"))
    assert "prior1" in broken(lambda t, c: [t.pop(k) for k in list(t) if k.startswith("prior1.")])
    assert "prior0" in broken(more_channels)
    assert "'layers.0.h_out.w' has shape (3, 3, 1, 1)" in broken(wrong_shape)
    assert not (tmp_path / "x.vqc").exists()


def test_decompress_to_a_closed_stdout_is_one_clean_error(tiny_model_file, tiny_png, tmp_path):
    (tmp_path / "x.vqc").write_bytes(compress(tiny_png, load_codec_model(tiny_model_file)))
    cmd = f"'{sys.executable}' -m vqcodec decompress x.vqc -o - --model '{tiny_model_file}' >&-"
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, timeout=120, env=CLI_ENV)
    assert "stdout" in assert_clean_failure(proc)
    cmd = f"'{sys.executable}' -m vqcodec decompress x.vqc -o - --model '{tiny_model_file}' | head -c 10 >/dev/null"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, capture_output=True, timeout=120,
                          env=CLI_ENV)
    assert "Traceback" not in proc.stderr.decode() and "Exception ignored" not in proc.stderr.decode()


def _folder(tmp_path: Path, names: dict[str, int]) -> Path:
    src = tmp_path / "photos"
    for name, seed in names.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(16, 24, seed=seed)).save(src / name)
    return src


def test_folder_outputs_keep_relative_paths_and_collisions_are_refused_before_any_work(tiny_model_file, tmp_path):
    m = ["--model", str(tiny_model_file)]
    src = _folder(tmp_path, {"face.png": 1, "sub/face.png": 2})
    assert invoke("compress", str(src), "-o", str(tmp_path / "out"), *m).exit_code == 0
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.vqc")) == [
        "face.vqc", "sub/face.vqc"]
    model = load_codec_model(tiny_model_file)
    assert (tmp_path / "out" / "sub" / "face.vqc").read_bytes() == compress(src / "sub" / "face.png", model)
    res = invoke("decompress", str(tmp_path / "out"), "-o", str(tmp_path / "back"), *m)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "back").rglob("*.png")) == ["face.png", "face.png"]
    # photo.png and photo.jpg would both become photo.vqc: refused before anything is written
    Image.fromarray(smooth_image(16, 24, seed=3)).save(src / "photo.png")
    Image.fromarray(smooth_image(16, 24, seed=4)).save(src / "photo.jpg")
    line = refused("compress", str(src), "-o", str(tmp_path / "again"), *m)
    assert "photo.jpg and " in line and "photo.png would both be written to" in line
    assert not (tmp_path / "again").exists()
    line = refused("compress", str(src / "photo.png"), str(src / "photo.jpg"), *m)  # next to the inputs
    assert "would both be written to" in line and not (src / "photo.vqc").exists()


def test_a_bad_file_in_a_batch_is_reported_and_the_rest_goes_on(tiny_model_file, tmp_path):
    m = ["--model", str(tiny_model_file)]
    src = _folder(tmp_path, {"a.png": 1, "c.png": 3})
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    res = invoke("compress", str(src), "-o", str(tmp_path / "out"), *m)
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("vqcodec: error:")]
    assert len(errors) == 2 and str(src / "b.png") in errors[0], res.stderr
    assert errors[1] == "vqcodec: error: 1 of 3 files failed (see above)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.vqc", "c.vqc"]
    # --fail-fast: the old behaviour, stop at the first bad file
    line = refused("compress", str(src), "-o", str(tmp_path / "fast"), "--fail-fast", *m)
    assert str(src / "b.png") in line
    assert sorted(p.name for p in (tmp_path / "fast").iterdir()) == ["a.vqc"]


def test_skip_existing_finishes_an_interrupted_batch(tiny_model_file, tmp_path):
    m = ["--model", str(tiny_model_file)]
    src = _folder(tmp_path, {"a.png": 1, "b.png": 2, "c.png": 3})
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.vqc").write_bytes(b"done before the interruption")
    assert "a.vqc exists; use --force" in refused("compress", str(src), "-o", str(out), *m)
    assert sorted(p.name for p in out.iterdir()) == ["a.vqc"]
    res = invoke("compress", str(src), "-o", str(out), "--skip-existing", *m)
    assert res.exit_code == 0, res.output
    assert "skipped 1" in res.stderr
    assert (out / "a.vqc").read_bytes() == b"done before the interruption"
    assert sorted(p.name for p in out.iterdir()) == ["a.vqc", "b.vqc", "c.vqc"]
    res = invoke("compress", str(src), "-o", str(out), "--skip-existing", "--force", *m)
    assert res.exit_code == 2 and "--force and --skip-existing exclude each other" in res.stderr


def test_several_inputs_need_a_folder_output(tiny_model_file, tiny_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = ["--model", str(tiny_model_file)]
    src = _folder(tmp_path, {"a.png": 1})
    other = tmp_path / "b.png"
    Image.fromarray(smooth_image(16, 24, seed=2)).save(other)
    assert "looks like a file name" in refused("compress", str(src), "-o", "out.vqc", *m)
    assert "looks like a file name" in refused("compress", str(tiny_png), str(other), "-o", "two.vqc", *m)
    assert "stdout" in refused("compress", str(tiny_png), str(other), "-o", "-", *m)
    assert "stdout" in refused("compress", str(src), "-o", "-", *m)
    (tmp_path / "taken.bin").write_bytes(b"x")
    assert "not a folder" in refused("compress", str(tiny_png), str(other), "-o", "taken.bin", *m)
    assert not any((tmp_path / name).exists() for name in ("out.vqc", "two.vqc", "-"))


def test_stdin_among_several_inputs_and_pipes_as_inputs(tiny_model_file, tiny_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = ["--model", str(tiny_model_file)]
    assert "'-' (stdin) can only be the only input" in refused("compress", "-", str(tiny_png), "-o", "out", *m)
    assert not (tmp_path / "out").exists() and not (tmp_path / "-.vqc").exists()
    # a pipe given by name, as bash's <(cat x.png) gives /dev/fd/63
    r, w = os.pipe()
    os.write(w, tiny_png.read_bytes())
    os.close(w)
    proc = subprocess.run([sys.executable, "-m", "vqcodec", "compress", f"/dev/fd/{r}", "-o", "piped.vqc", *m],
                          cwd=tmp_path, pass_fds=(r,), capture_output=True, timeout=120, env=CLI_ENV)
    os.close(r)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "piped.vqc").read_bytes() == compress(tiny_png, load_codec_model(tiny_model_file))
    r, w = os.pipe()
    os.close(w)
    proc = subprocess.run([sys.executable, "-m", "vqcodec", "compress", f"/dev/fd/{r}", *m], cwd=tmp_path,
                          pass_fds=(r,), capture_output=True, timeout=120, env=CLI_ENV)
    os.close(r)
    assert "name the output with -o" in assert_clean_failure(proc)


def test_every_output_is_checked_before_any_work(tiny_model_file, tmp_path, monkeypatch):
    from vqcodec import codec as codec_module
    from vqcodec.zoo import codec_model

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the outputs were checked")

    monkeypatch.setattr(codec_model, "load_codec_model", no_work)
    monkeypatch.setattr(codec_module, "compress", no_work)
    monkeypatch.setattr(codec_module, "decompress_image", no_work)
    src = _folder(tmp_path, {"a.png": 1, "b.png": 2})
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.vqc").write_bytes(b"keep")  # the second output exists: nothing at all is done
    assert "b.vqc exists" in refused("compress", str(src), "-o", str(out), "--model", str(tiny_model_file))
    assert sorted(p.name for p in out.iterdir()) == ["b.vqc"]
    (tmp_path / "x.png").write_bytes(b"keep")
    assert "x.png exists" in refused("decompress", str(out / "b.vqc"), "-o", str(tmp_path / "x.png"))


def _multi_tile_file(tiny_model_file: Path, tmp_path: Path) -> bytes:
    data = compress(smooth_image(64, 96, seed=121), load_codec_model(tiny_model_file), tile=8)  # 6 tiles
    assert len(unpack(data).tiles) == 6
    return data


def test_salvage_exits_non_zero_when_nothing_is_restored_and_keeps_what_a_cut_file_holds(tiny_model_file, tmp_path):
    m = ["--model", str(tiny_model_file)]
    one = bytearray(compress(smooth_image(16, 16, seed=6), load_codec_model(tiny_model_file)))  # one tile
    one[-2] ^= 0x40
    (tmp_path / "dead.vqc").write_bytes(bytes(one))
    line = refused("decompress", str(tmp_path / "dead.vqc"), "-o", str(tmp_path / "dead.png"), "--salvage", *m)
    assert "nothing can be restored" in line and not (tmp_path / "dead.png").exists()
    data = _multi_tile_file(tiny_model_file, tmp_path)
    (tmp_path / "cut.vqc").write_bytes(data[:-1])
    assert "truncated" in refused("decompress", str(tmp_path / "cut.vqc"), "-o", str(tmp_path / "cut.png"), *m)
    res = invoke("decompress", str(tmp_path / "cut.vqc"), "-o", str(tmp_path / "cut.png"), "--salvage", *m)
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == f"vqcodec: warning: {tmp_path / 'cut.vqc'}: 1 damaged tile(s) (5) could not be " \
                                 "restored"  # the file is named, even when it is the only one


def test_info_shows_the_header_of_a_damaged_file_and_marks_the_tiles(tiny_model_file, tmp_path):
    data = bytearray(_multi_tile_file(tiny_model_file, tmp_path))
    data[-3] ^= 0x01  # tile 5's payload
    (tmp_path / "bad.vqc").write_bytes(bytes(data[:]))
    (tmp_path / "cut.vqc").write_bytes(bytes(data[:-1]))
    for name in ("bad.vqc", "cut.vqc"):
        res = invoke("info", str(tmp_path / name))
        assert res.exit_code == 0, res.output
        assert re.search(r"size: 96 x 64\b", res.stdout) and re.search(r"damaged tiles: 1 \(5\)$", res.stdout, re.M)
        assert "vqcodec: warning:" in res.stderr and "--salvage" in res.stderr


def test_format_that_disagrees_with_the_extension_and_16_bits_to_8_bit_formats_are_refused_before_decoding(
        tiny_model_file, tmp_path, monkeypatch):
    from vqcodec import codec as codec_module

    model = load_codec_model(tiny_model_file)
    (tmp_path / "x.vqc").write_bytes(compress(smooth_image(16, 24, seed=1), model))
    (tmp_path / "deep.vqc").write_bytes(compress(smooth_image(16, 24, seed=2, dtype=np.uint16), model))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded before the output format was checked")

    monkeypatch.setattr(codec_module, "decompress_image", no_decode)
    m = ["--model", str(tiny_model_file)]
    line = refused("decompress", str(tmp_path / "x.vqc"), "-o", str(tmp_path / "x.png"), "--format", "tiff", *m)
    assert "extension of PNG, but --format is tiff" in line
    for out in ("deep.webp", "deep.jpg", "deep.bmp"):
        assert "cannot store 16-bit images" in refused("decompress", str(tmp_path / "deep.vqc"), "-o",
                                                      str(tmp_path / out), *m)
    assert "cannot store 16-bit" in refused("decompress", str(tmp_path / "deep.vqc"), "-o", str(tmp_path / "d"),
                                            "--format", "webp", *m)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.vqc", "tiny.safetensors", "x.vqc"]


def test_sample_out_with_an_image_extension_writes_one_image(tiny_model_file, tmp_path):
    res = invoke("sample", "--model", str(tiny_model_file), "--n", "2", "--out", str(tmp_path / "z.jpg"),
                 "--size", "16")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "z.jpg").is_file()
    with Image.open(tmp_path / "z.jpg") as im:
        assert im.format == "JPEG"


def test_decompress_max_pixels_refuses_a_huge_claim_and_can_be_raised(model, tmp_path):
    from vqcodec.testing import huge_claim

    data = compress(smooth_image(16, 24, seed=1), model)  # the shipped model: K = 512 codes a level
    (tmp_path / "huge.vqc").write_bytes(huge_claim(data, 30000, 30000))
    m: list[str] = []
    line = refused("decompress", str(tmp_path / "huge.vqc"), "-o", str(tmp_path / "h.png"), *m)
    assert "over the limit of 178,956,970 pixels" in line and "--max-pixels" in line
    line = refused("decompress", str(tmp_path / "huge.vqc"), "-o", str(tmp_path / "h.png"), "--max-pixels",
                   str(1 << 30), *m)
    assert "too short for its codes" in line
    (tmp_path / "x.vqc").write_bytes(data)
    assert "over the limit of 100 pixels" in refused("decompress", str(tmp_path / "x.vqc"), "-o",
                                                     str(tmp_path / "x.png"), "--max-pixels", "100", *m)
    assert "--max-pixels" in invoke("decompress", "--help").output


@pytest.mark.slow
def test_threads_option_changes_nothing_in_the_output(model, tmp_path: Path) -> None:
    """--threads 2 and 3, each in a fresh process: the file and the pixels of one thread, on an image whose
    work splits: 3 x 3 tiles of 32 codes (the encoder's two batches, the decoder's batches on up to 3
    worker processes) and two bands of the VQ-VAE decoder (worker processes too)."""
    from vqcodec.codec import reconstruction_windows
    from vqcodec.coding import tile_codec
    from vqcodec.coding.tiles import tile_grid

    pixels = smooth_image(280, 300, 6)  # 70 x 75 bottom codes
    Image.fromarray(pixels).save(tmp_path / "a.png")
    one = compress(pixels, model)  # the command line's default model, on one thread in this process (conftest)
    decoded = decompress(one, model)
    head = unpack(one).header
    assert head.tile_size == 32 and len(reconstruction_windows(model, head)) == 2
    tiles = tile_grid(70, 75, 32)
    assert len(tiles) == 9 and len(tile_codec._decode_batches(tiles, None, 3)) == 3  # 3 workers have work
    for t in ("2", "3"):
        res = cli("compress", "a.png", "-o", f"{t}.vqc", "--threads", t, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / f"{t}.vqc").read_bytes() == one, f"--threads {t} wrote another file"
        res = cli("decompress", f"{t}.vqc", "-o", f"{t}.png", "--threads", t, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        np.testing.assert_array_equal(png_pixels((tmp_path / f"{t}.png").read_bytes()), decoded,
                                      err_msg=f"--threads {t} decoded other pixels")
    res = cli("compress", "a.png", "-o", "0.vqc", "--threads", "0", cwd=tmp_path)
    assert res.returncode != 0 and b"--threads" in res.stderr and not (tmp_path / "0.vqc").exists()


def test_the_icc_profile_goes_through_compress_and_decompress(model, tmp_path: Path) -> None:
    """The input's ICC profile comes out of decompress byte for byte, in PNG, TIFF and WebP (and to stdout)."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[80:84] = b"vqct"  # the creator field: bytes no default profile has
    icc = bytes(icc)
    Image.fromarray(smooth_image(24, 40, seed=8)).save(tmp_path / "in.png", icc_profile=icc)
    run("compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "in.vqc"))
    assert unpack((tmp_path / "in.vqc").read_bytes()).header.icc_profile == icc
    for ext in ("png", "tiff", "webp"):
        run("decompress", str(tmp_path / "in.vqc"), "-o", str(tmp_path / f"out.{ext}"))
        with Image.open(tmp_path / f"out.{ext}") as im:
            assert im.info.get("icc_profile") == icc, ext
    res = CliRunner().invoke(cli_main, ["decompress", str(tmp_path / "in.vqc"), "-o", "-"])
    assert res.exit_code == 0
    with Image.open(io.BytesIO(res.stdout_bytes)) as im:
        assert im.info.get("icc_profile") == icc


def _interrupt(args: list[str], cwd: Path, after: Path) -> subprocess.CompletedProcess:
    """Run ``vqcodec ARGS`` in a process group of its own and, once ``after`` exists (the batch's first output:
    the command is at work), press Ctrl-C: SIGINT to the whole group, worker processes included, as a
    terminal sends it."""
    import signal
    import time

    # SIGINT at its default in the command, as a terminal starts it: in full runs of the suite the command
    # sometimes inherited it ignored from this process (status 0 however often it was sent; see docs/cli.md)
    proc = subprocess.Popen([sys.executable, "-m", "vqcodec", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=CLI_ENV, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not after.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the command ended before it was interrupted: {proc.stderr.read().decode()}"
        assert after.exists(), "the first output never appeared"
        time.sleep(0.1)  # into the next file's work (seconds of it, even with the test model)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _interrupt_inputs(tmp_path: Path) -> dict[str, np.ndarray]:
    """A small image (a.png, done first) and one that takes seconds (b.png, 3072x2048) in folder 'in'."""
    (tmp_path / "in").mkdir()
    images = {"a": smooth_image(24, 40, seed=1), "b": smooth_image(2048, 3072, seed=2)}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(tmp_path / "in" / f"{name}.png")
    return images


@pytest.mark.slow
def test_ctrl_c_during_compress_exits_130_and_leaves_no_partial_output(model, tmp_path: Path) -> None:
    images = _interrupt_inputs(tmp_path)
    out = tmp_path / "out"
    res = _interrupt(["compress", str(tmp_path / "in"), "-o", str(out)], tmp_path, out / "a.vqc")
    assert res.returncode == 130, res.stderr
    assert res.stderr.decode() == "vqcodec: interrupted\n"
    assert sorted(p.name for p in out.iterdir()) == ["a.vqc"]  # b.vqc was never written, nor any temporary file
    assert (out / "a.vqc").read_bytes() == compress(images["a"], model)  # the file done before is whole


@pytest.mark.slow
def test_ctrl_c_during_decompress_exits_130_and_leaves_no_partial_output(model, tmp_path: Path) -> None:
    """On 2 threads, so the Ctrl-C reaches the decoder's worker processes too."""
    for name, pixels in _interrupt_inputs(tmp_path).items():
        (tmp_path / f"{name}.vqc").write_bytes(compress(pixels, model))
    out = tmp_path / "out"
    res = _interrupt(["decompress", str(tmp_path / "a.vqc"), str(tmp_path / "b.vqc"), "-o", str(out), "--threads",
                      "2"], tmp_path, out / "a.png")
    assert res.returncode == 130, res.stderr
    err = res.stderr.decode()
    assert err.endswith("vqcodec: interrupted\n"), err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    np.testing.assert_array_equal(png_pixels((out / "a.png").read_bytes()), decompress(tmp_path / "a.vqc", model))
    if err != "vqcodec: interrupted\n":
        pytest.xfail("known bug: the decoder's worker processes print a KeyboardInterrupt traceback each before "
                     "'vqcodec: interrupted'")


def test_demo_prints_what_it_wrote(tmp_path: Path) -> None:
    """The demo's figures are those of the files it leaves: the .vqc's size and the decoded PNG's PSNR."""
    pixels = smooth_image(40, 56, 12)
    Image.fromarray(pixels).save(tmp_path / "s.png")
    res = cli("demo", "--image", "s.png", "--out-dir", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in res.stdout.decode().splitlines())}
    assert lines["model"].startswith(default_model_name() + " (")
    data = (tmp_path / "out" / "s.vqc").read_bytes()
    assert lines["bpp"] == f"{8 * len(data) / (40 * 56):.4f}"
    decoded = np.asarray(Image.open(tmp_path / "out" / "s.decoded.png"))
    assert np.array_equal(decoded, decompress(data))
    assert lines["PSNR"] == f"{psnr(pixels, decoded):.2f} dB"


def test_prior_refit_keeping_fewer_layers_on_pooled_codes(tiny_images, tmp_path, monkeypatch):
    """``train prior --refit M --layers N`` starts from the first N layers of M's prior (a cheaper
    prior: fewer multiply-adds and a shorter wavefront), on several ``--codes`` datasets pooled;
    ``export --refit-of --delta`` drops the cut layers' tensors, and the new model codes the same codes
    with fewer decoding steps, exactly on 1 and 2 threads."""
    from safetensors.torch import load_file

    from vqcodec.codec import compress, decompress
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.zoo import registry
    from vqcodec.zoo.codec_model import load_codec_model
    from vqcodec.zoo.registry import read_metadata

    monkeypatch.setenv(registry.ENV_VAR, "")
    models = tmp_path / "models"
    base = write_tiny_codec_model(models / "base.safetensors")
    start = load_codec_model(base).priors[0]
    assert start.config.layers == 2
    sets = []
    for scale in ("1", "1.5"):
        sets.append(tmp_path / f"codes-{scale}")
        run("extract-codes", "--vqvae", str(base), "--data", str(tiny_images), "--out", str(sets[-1]),
            "--crop", "32", "--crops", "2", "--scale", scale)
    out = tmp_path / "prior"
    args = ["train", "prior", "--refit", str(base), "--level", "bottom", "--codes", str(sets[0]), "--codes",
            str(sets[1]), "--val-codes", str(sets[1]), "--val-tiles", "4", "--workers", "0", "--steps", "4",
            "--batch", "4", "--lr", "0.01", "--validate-every", "4"]
    bad = CliRunner().invoke(cli_main, [*args, "--layers", "3", "--out", str(tmp_path / "p3")])
    assert bad.exit_code == 1 and "it can keep 1 to 2, not 3" in bad.output
    run(*args, "--layers", "1", "--out", str(out))
    kind, config, _ = load_model(out / "model.safetensors")
    assert kind == "prior-bottom" and config["layers"] == 1 and config["channels"] == start.config.channels
    delta = models / "short.safetensors"
    run("export", "--refit-of", str(base), "--prior-bottom", str(out / "model.safetensors"), "--calibration",
        str(sets[0]), "--calibration", str(sets[1]), "--tiles", "8", "--delta", "--out", str(delta))
    removed = json.loads(read_metadata(delta)["removed"])
    assert removed and all(k.startswith("prior0.layers.1.") for k in removed)
    assert not any(k.startswith("prior0.layers.1.") for k in load_file(str(delta)))
    short = load_codec_model(delta).priors[0]
    assert short.config.layers == 1 and short.reach < start.reach
    assert len(short.decode_order(16, 16)) < len(start.decode_order(16, 16))
    pixels = smooth_image(40, 48, 7)
    _, images = _round_trip_on_1_and_2_threads(pixels, delta, 1.5)
    assert np.array_equal(images[0], decompress(compress(pixels, str(base), scale=1.5), str(base)))


# -- what a new user meets first (issue 32) -------------------------------------------------------------------


def test_a_bad_option_value_exits_2_before_torch_is_imported(tiny_png, tmp_path):
    """Every bad option value is click's usage error (exit 2), found while the command line is read:
    the process never imports torch (which costs seconds) for it."""
    vqc = str(tmp_path / "x.vqc")
    png = str(tiny_png)
    cases = [
        ["compress", png, "-q", "9"], ["compress", png, "-q", "0"], ["compress", png, "-q", "nope"],
        ["compress", png, "--tile", "3"], ["compress", png, "--tile", "512"],
        ["compress", png, "--force", "--skip-existing"], ["compress", png, "-q", "1", "--model", "paper"],
        ["compress", png, "--threads", "0"], ["compress", png, "--model-dir", str(tmp_path / "none")],
        ["decompress", vqc, "--region", "1,2,3"], ["decompress", vqc, "--region", "a,b,c,d"],
        ["decompress", vqc, "--region", "0,0,0,4"], ["decompress", vqc, "--force", "--skip-existing"],
        ["decompress", vqc, "--format", "gif"], ["decompress", vqc, "--threads", "0"],
        ["info", vqc, "--model-dir", str(tmp_path / "none")], ["models", "--model-dir", str(tmp_path / "none")],
    ]
    script = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from vqcodec_cli.main import main\n"
        "found = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    res = CliRunner().invoke(main, argv)\n"
        "    found.append([argv, res.exit_code, 'torch' in sys.modules, res.stderr.strip().splitlines()[-1:]])\n"
        "print(json.dumps(found))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, timeout=120,
                          env=CLI_ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    for argv, code, torch_imported, last in json.loads(proc.stdout):
        assert (code, torch_imported) == (2, False), (argv, code, torch_imported, last)
        assert last and last[0].startswith("Error: "), (argv, last)
    assert list(tmp_path.iterdir()) == [tiny_png]


def test_a_multi_page_tiff_is_refused_naming_its_pages(tiny_model_file, tmp_path):
    import tifffile

    pages = np.stack([smooth_image(16, 24, seed=s) for s in (1, 2)])
    tifffile.imwrite(tmp_path / "two.tif", pages, photometric="rgb")
    line = refused("compress", str(tmp_path / "two.tif"), "-o", str(tmp_path / "two.vqc"),
                   "--model", str(tiny_model_file))
    assert f"{tmp_path / 'two.tif'} is a TIFF of 2 pages" in line
    assert not (tmp_path / "two.vqc").exists()


def test_a_reader_gone_mid_stream_is_the_error_of_a_reader_gone_before_the_first_write(tiny_model_file, tmp_path):
    """The output (a 150 kB BMP) is more than a pipe holds: the reader takes 10 bytes and goes while
    vqcodec is still writing. Buffered or not ($PYTHONUNBUFFERED), that is exit 1 with one line."""
    Image.fromarray(smooth_image(224, 224, seed=4)).save(tmp_path / "big.png")
    (tmp_path / "big.vqc").write_bytes(compress(tmp_path / "big.png", load_codec_model(tiny_model_file)))
    argv = [sys.executable, "-m", "vqcodec", "decompress", "big.vqc", "-o", "-", "--format", "bmp", "--model",
            str(tiny_model_file)]
    for unbuffered in ("1", None):
        env = {k: v for k, v in CLI_ENV.items() if k != "PYTHONUNBUFFERED"}
        env.update({"PYTHONUNBUFFERED": unbuffered} if unbuffered else {})
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout.read(10)[:2] == b"BM"
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 1, (unbuffered, err)
        assert err.strip().splitlines() == [
            "vqcodec: error: big.vqc: cannot write to stdout: the pipe was closed by its reader"], (unbuffered, err)


def test_one_list_of_output_formats_for_format_the_out_help_and_the_docs(tiny_model_file, tiny_png, tmp_path):
    from vqcodec.imageio import FORMAT_SUFFIXES, FORMATS, format_names

    decompress_cmd = cli_main.commands["decompress"]
    options = {p.name: p for p in decompress_cmd.params}
    assert tuple(options["fmt"].type.choices) == FORMATS == tuple(FORMAT_SUFFIXES)
    assert format_names() in " ".join(options["output"].help.split())
    assert format_names() in " ".join((Path(__file__).parents[1] / "docs" / "cli.md").read_text().split())
    assert all(f"({', '.join(suffixes)})" in format_names() for suffixes in FORMAT_SUFFIXES.values())
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "x.vqc").write_bytes(compress(tiny_png, load_codec_model(tiny_model_file)))
    m = ["--model", str(tiny_model_file)]
    for fmt, suffixes in FORMAT_SUFFIXES.items():  # each format by --format (a folder) and by each extension
        run("decompress", str(tmp_path / "packed"), "-o", str(tmp_path / fmt), "--format", fmt, *m)
        assert [p.name for p in (tmp_path / fmt).iterdir()] == [f"x{suffixes[0]}"]
        for suffix in suffixes:
            run("decompress", str(tmp_path / "packed" / "x.vqc"), "-o", str(tmp_path / f"y{suffix}"), *m)
            assert Image.open(tmp_path / f"y{suffix}").format == {"tiff": "TIFF", "jpeg": "JPEG"}.get(
                fmt, fmt.upper())


def test_models_lists_the_ladder_s_models_and_the_legacy_ones_with_all(tmp_path):
    from vqcodec.zoo.registry import list_models

    shipped = {e.name: e for e in list_models()}
    in_use = {r.model for r in ladder() + ladder("fast")} | {default_model_name()}
    legacy = set(shipped) - in_use
    assert legacy and in_use <= set(shipped)

    def listed(*args: str) -> dict[str, str]:
        out = run("models", *args).splitlines()
        at = next(i for i, line in enumerate(out) if line.startswith("name "))  # the models, after the ladders
        return {line.split()[0]: line for line in out[at + 2 :] if line.split() and line.split()[0] in shipped}

    plain = run("models")
    assert set(listed()) == in_use
    assert f"{len(legacy)} legacy models" in plain and "--all" in plain
    everything = listed("--all")
    assert set(everything) == set(shipped)
    for name in ("paper", "paper-wf", "paper-up-b3"):  # a whole model, a delta, a delta of a delta of ...
        _, _, tensors = load_model(shipped[name].path)
        whole = sum(t.numel() * t.element_size() for t in tensors.values())
        file_size, model_size = re.search(r"\s2\s+(\S+ [kM]B)\s+(\S+ [kM]B)\s", everything[name]).groups()
        assert model_size == f"{whole / 1e6:.1f} MB", (name, everything[name])
        size = shipped[name].size
        assert file_size == (f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB")
    assert "0.0 MB" not in plain
    res = CliRunner().invoke(cli_main, ["models", "--model-dir", str(tmp_path / "none")])
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_info_help_describes_info_s_own_model_option():
    info_help = " ".join(run("info", "--help").split())
    model_help = info_help[info_help.index("--model NAME|FILE"):info_help.index("--model-dir")]
    assert "compress" not in model_help and "wrote FILE" in model_help


def test_a_dropped_icc_profile_is_a_warning_naming_the_file(tiny_model_file, tmp_path):
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[16:20] = b"CMYK"  # the colour space a CMYK JPEG's profile declares
    Image.fromarray(smooth_image(16, 24, seed=5)).convert("CMYK").save(tmp_path / "cmyk.jpg", icc_profile=bytes(icc))
    res = invoke("compress", str(tmp_path / "cmyk.jpg"), "-o", str(tmp_path / "cmyk.vqc"),
                 "--model", str(tiny_model_file))
    assert res.exit_code == 0, res.output
    warning = [line for line in res.stderr.splitlines() if "warning" in line]
    assert warning == [f"vqcodec: warning: {tmp_path / 'cmyk.jpg'}: its CMYK ICC profile does not describe the "
                       "RGB pixels coded, so it is dropped (colours are not managed)"], res.stderr


def test_python_m_vqcodec_version_names_vqcodec(tmp_path):
    from importlib.metadata import version

    proc = cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.decode() == f"vqcodec, version {version('vqcodec')}\n"


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tiny_model_file, tiny_png, tmp_path,
                                                                           monkeypatch):
    from vqcodec.zoo import codec_model

    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "x.vqc").write_bytes(compress(tiny_png, load_codec_model(tiny_model_file)))
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # as root, chmod 555 would not stop a write: deny it here
        if Path(path) == locked and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(codec_model, "load_codec_model", no_model)
    m = ["--model", str(tiny_model_file)]
    line = refused("compress", str(tiny_png), "-o", str(locked / "x.vqc"), *m)
    assert line == f"vqcodec: error: cannot write {locked / 'x.vqc'}: folder {locked} is not writable"
    Image.fromarray(smooth_image(16, 24, seed=2)).save(tmp_path / "other.png")
    line = refused("compress", str(tiny_png), str(tmp_path / "other.png"), "-o", str(locked / "new" / "sub"), *m)
    assert line.endswith(f"folder {locked} is not writable")  # a folder the batch would create, inside locked
    assert "not writable" in refused("decompress", str(tmp_path / "x.vqc"), "-o", str(locked / "x.png"), *m)
    assert list(locked.iterdir()) == []
