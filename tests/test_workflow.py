"""The README's training workflow end to end on tiny data: train both stages, export, code a file."""

from __future__ import annotations

import re

import numpy as np
from click.testing import CliRunner
from PIL import Image

from cli.main import main


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_train_extract_export_compress(tiny_images, tmp_path):
    r = str(tmp_path)
    tiny = ["--steps", "4", "--batch", "4", "--workers", "0", "--validate-every", "2", "--checkpoint-every", "2"]
    run("train", "vqvae", "--data", str(tiny_images), "--val", str(tiny_images), "--out", f"{r}/vq", "--crop", "16",
        "--hidden", "16", "--res-channels", "8", "--res-blocks", "1", "--codes", "32", "--code-dim", "8",
        "--val-images", "2", *tiny)
    vq = f"{r}/vq/model.safetensors"
    run("extract-codes", "--model", vq, "--data", str(tiny_images), "--out", f"{r}/codes", "--crop", "32",
        "--crops", "2")
    for level in ("top", "bottom"):
        run("train", "prior", "--level", level, "--codes", f"{r}/codes", "--val-codes", f"{r}/codes", "--out",
            f"{r}/{level}", "--tile", "8", "--channels", "8", "--layers", "2", "--cond-channels", "8",
            "--cond-blocks", "1", "--val-tiles", "4", *tiny)
    out = run("export", "--vqvae", vq, "--prior", f"{r}/bottom/model.safetensors", "--prior",
              f"{r}/top/model.safetensors", "--calibration", f"{r}/codes", "--tiles", "32",
              "--out", f"{r}/m.safetensors")
    assert "fingerprint" in out
    image = np.asarray(Image.open(next(tiny_images.glob("*.png"))).convert("RGB"))
    Image.fromarray(image).save(tmp_path / "in.png")
    run("compress", f"{r}/in.png", "-o", f"{r}/in.vqc", "--model", f"{r}/m.safetensors")
    run("decompress", f"{r}/in.vqc", "-o", f"{r}/back.png", "--model", f"{r}/m.safetensors")
    back = np.asarray(Image.open(tmp_path / "back.png"))
    assert back.shape == image.shape
    info = run("info", f"{r}/in.vqc", "--model", f"{r}/m.safetensors")
    assert re.search(r"^ +model: m$", info, re.M), info  # the header's fingerprint matches the exported model
