"""Tests for ``vqcodec.train.rate_stage1``: a whole stage 1 fine-tuned with priors that price its codes
(``train vqvae --finetune``): the pull toward cheap codes, exact resume, and the files it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from vqcodec_cli.main import main

from vqcodec.priors.multipass import MultipassConfig, MultipassPrior
from vqcodec.testing import read_log, smooth_image, write_tiny_codec_model
from vqcodec.train.loop import TrainSettings
from vqcodec.train.rate_stage1 import KIND, rate_loss, start_model, train_rate_stage1
from vqcodec.zoo.files import load_model, load_vqvae, save_model

SCHEDULE = ((0, 2), (3, 1))  # a 2x2 cell in 4 passes: small maps still have every pass


def tiny_priors(folder: Path, num_codes: int = 32, seed: int = 0) -> dict[int, Path]:
    """Multi-pass prior files for the two levels of the tiny codec model (bottom conditioned on top)."""
    torch.manual_seed(seed)
    out = {}
    for level, cond in ((0, 1), (1, 0)):
        cfg = MultipassConfig(num_codes=num_codes, channels=8, embed_dim=4, window=3, blocks=1, schedule=SCHEDULE,
                              cond_levels=cond, cond_channels=8, cond_blocks=1)
        prior = MultipassPrior(cfg)
        path = folder / f"prior{level}.safetensors"
        save_model(path, prior.state_dict(), f"prior-{('bottom', 'top')[level]}",
                   {**cfg.to_dict(), "level": level, "levels": 2, "tile": 8})
        out[level] = path
    return out


def settings(out: Path, steps: int, **kw) -> TrainSettings:
    base = dict(out=out, steps=steps, batch=4, lr=2e-3, warmup=5, checkpoint_every=1000, validate_every=1000,
                workers=0)
    base.update(kw)
    return TrainSettings(**base)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_tiny_codec_model(tmp_path / "base.safetensors")


def batch(count: int = 4, size: int = 32) -> torch.Tensor:
    return torch.stack([torch.from_numpy(smooth_image(size, size, s)).permute(2, 0, 1) / 255.0 for s in range(count)])


def test_the_pull_is_the_nearest_code_at_price_zero_and_moves_when_bits_cost(base, tmp_path):
    priors = tiny_priors(tmp_path)
    x = batch()
    free = start_model(base, (0.0, 0.0), 0, priors)  # training mode: each call moves the codebooks (EMA)
    plain = free(x)
    assert [float(m) for m in plain["moved"]] == [0.0, 0.0]  # the plain commitment loss
    dear = start_model(base, (1e3, 1e3), 0, priors)  # bits outweigh any distance: the cheapest candidate
    out = dear(x)
    assert all(float(m) > 0.2 for m in out["moved"])
    assert out["commit"] > plain["commit"]
    # the decoder reads the nearest codes whatever the price: the same pixels and codes
    assert torch.equal(out["recon"], plain["recon"])
    assert all(torch.equal(a, b) for a, b in zip(out["codes"], plain["codes"]))


@pytest.mark.parametrize("fixed", [False, True])
def test_the_rate_loss_trains_the_priors_and_the_whole_vqvae(base, tmp_path, fixed):
    """Everything learns; the codewords follow their vectors by EMA unless they are fixed, and then
    not one of their buffers moves (the encoder and decoder learn around them)."""
    model = start_model(base, (0.05, 0.05), 0, tiny_priors(tmp_path), fixed_codebooks=fixed)
    assert model.training and model.vqvae.quantizers.training is not fixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = batch()
    for _ in range(3):
        loss, metrics = rate_loss(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"mse", "psnr", "bpp", "bits0", "bits1", "moved0", "moved1"} <= metrics.keys()
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in model.state_dict().items()
               if not torch.equal(v, before[k])}
    for part in ("vqvae.encoders", "vqvae.pre_quant", "vqvae.decoder", "priors.0", "priors.1"):
        assert part in changed, part
    assert ("vqvae.quantizers" in changed) is not fixed
    model.eval().train()  # switching modes keeps the codebooks fixed
    assert model.vqvae.quantizers.training is not fixed


def test_resume_is_exact_and_the_file_holds_a_vqvae_and_its_priors(base, tiny_images, tmp_path):
    priors = tiny_priors(tmp_path)
    common = dict(checkpoint_every=10, validate_every=10)
    kw = dict(crop=16, val=tiny_images, val_images=2, prior_files=priors)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    kw["fixed_codebooks"] = True
    train_rate_stage1(tiny_images, settings(run_a, 20, **common), base, (0.05, 0.01), **kw)
    train_rate_stage1(tiny_images, settings(run_b, 20, stop_at=10, **common), base, (0.05, 0.01), **kw)
    train_rate_stage1(tiny_images, settings(run_b, 20, resume=True, **common), base, (0.05, 0.01), **kw)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    steps_a, val_a = read_log(run_a)
    steps_b, val_b = read_log(run_b)
    assert [r["step"] for r in steps_b] == list(range(1, 21))
    assert strip(steps_b) == strip(steps_a)  # every float bit for bit
    assert strip(val_b) == strip(val_a) and {"val_psnr", "val_bpp"} <= val_a[0].keys()
    kind, config, ta = load_model(run_a / "model.safetensors")
    _, _, tb = load_model(run_b / "model.safetensors")
    assert kind == KIND and config["mu"] == [0.05, 0.01] and len(config["priors"]) == 2 and config["fixed_codebooks"]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    vq = load_vqvae(run_a / "model.safetensors")  # what extract-codes and export read
    assert all(torch.equal(v, ta["vqvae." + k]) for k, v in vq.state_dict().items())


def test_the_command_line_trains_and_refuses_mixed_options(base, tiny_images, tmp_path):
    priors = tiny_priors(tmp_path)
    run = tmp_path / "cli"
    args = ["train", "vqvae", "--finetune", str(base), "--data", str(tiny_images), "--crop", "16", "--batch", "2",
            "--steps", "3", "--out", str(run), "--prior-top", str(priors[1]), "--prior-bottom", str(priors[0]),
            "--rate-mu", "0.1,0.02", "--fixed-codebooks"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_log(run)[0]] == [1, 2, 3]
    for extra, message in ((["--refit", str(base)], "--finetune trains a whole stage 1"),
                           (["--rate-mu", "a,b"], "--rate-mu takes numbers"),
                           (["--rate-mu", "0.1"], "one rate price per level")):
        result = CliRunner().invoke(main, args[:-3] + extra + ["--out", str(tmp_path / "x")])
        assert result.exit_code != 0 and message in result.output, result.output
    result = CliRunner().invoke(main, ["train", "vqvae", "--data", str(tiny_images), "--out", str(tmp_path / "y"),
                                       "--rate-mu", "0.1,0.1"])
    assert result.exit_code != 0 and "go with --finetune" in result.output


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_rate_trained_stage_1_becomes_a_codec_model_that_codes_exactly(base, tiny_images, tmp_path, monkeypatch):
    """The whole path of a new stage 1: ``train vqvae --finetune``, ``extract-codes`` with its VQ-VAE,
    ``train prior --refit`` from the priors it trained with, ``export --act-bits 8``; the files decode
    to the VQ-VAE's own decoding of its codes, the same bytes and pixels on 1 and 2 threads."""
    import numpy as np

    from vqcodec.codec import compress, decompress
    from vqcodec.zoo import registry
    from vqcodec.zoo.codec_model import load_codec_model

    monkeypatch.setenv(registry.ENV_VAR, "")
    priors = tiny_priors(tmp_path)
    stage1 = tmp_path / "stage1"
    run("train", "vqvae", "--finetune", str(base), "--data", str(tiny_images), "--crop", "16", "--batch", "2",
        "--steps", "3", "--out", str(stage1), "--prior-top", str(priors[1]), "--prior-bottom", str(priors[0]),
        "--workers", "0")
    vq_file = stage1 / "model.safetensors"
    codes = tmp_path / "codes"
    run("extract-codes", "--vqvae", str(vq_file), "--data", str(tiny_images), "--out", str(codes), "--crop", "64",
        "--crops", "2")
    runs = {}
    for level, tile in (("bottom", "8"), ("top", "16")):  # each prior on its own tile side
        runs[level] = tmp_path / level
        run("train", "prior", "--refit", str(vq_file), "--level", level, "--tile", tile, "--codes", str(codes),
            "--val-codes", str(codes), "--val-tiles", "4", "--out", str(runs[level]), "--workers", "0", "--steps",
            "2", "--batch", "4", "--validate-every", "2")
        start = load_model(vq_file)[2]
        kind, config, trained = load_model(runs[level] / "model.safetensors")
        assert config["arch"] == "multipass" and config["tile"] == int(tile)
    out = tmp_path / "models" / "rate.safetensors"
    export = ["export", "--vqvae", str(vq_file), "--prior-bottom", str(runs["bottom"] / "model.safetensors"),
              "--prior-top", str(runs["top"] / "model.safetensors"), "--calibration", str(codes), "--tiles", "8",
              "--act-bits", "8", "--name", "rate", "--out", str(out)]
    bad = CliRunner().invoke(main, export)
    assert bad.exit_code != 0 and "trained with the same --tile" in bad.output
    run(*export, "--tile", "16")
    model = load_codec_model(out)
    assert [p.config.act_bits for p in model.priors] == [8, 8] and model.tile == 16
    assert all(torch.equal(v, start["vqvae." + k]) for k, v in model.vqvae.state_dict().items())
    pixels = smooth_image(72, 80, 5)
    threads = torch.get_num_threads()
    try:
        files, images = [], []
        for n in (1, 2):
            torch.set_num_threads(n)
            files.append(compress(pixels, str(out)))
            images.append(decompress(files[-1], str(out)))
    finally:
        torch.set_num_threads(threads)
    assert files[0] == files[1] and np.array_equal(images[0], images[1])
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255.0
        want = model.vqvae.decode(model.vqvae.encode(x), 72, 80)
    assert np.array_equal(images[0], (want[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    bad = CliRunner().invoke(main, ["train", "prior", "--refit", str(vq_file), "--level", "bottom", "--layers", "1",
                                    "--codes", str(codes), "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "keeps all its layers" in bad.output
