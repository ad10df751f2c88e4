"""Tests for ``vqcodec.train``: the stage-1 training loop (the loss goes down, ``--resume`` is exact,
two DDP processes keep identical codebooks) and the exact evaluation grid over code datasets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vqcodec.errors import VQCodecError
from vqcodec.testing import read_log, tiny_vqvae_config
from vqcodec.train.code_datasets import CodeGrid
from vqcodec.train.loop import TrainSettings
from vqcodec.train.vqvae import train_vqvae
from vqcodec.zoo.files import load_model, load_vqvae

REPO = Path(__file__).resolve().parents[1]


# -- training ---------------------------------------------------------------------------------------


def settings(out: Path, steps: int, **kw) -> TrainSettings:
    base = dict(out=out, steps=steps, batch=4, lr=2e-3, warmup=5, checkpoint_every=1000, validate_every=1000,
                workers=0)
    base.update(kw)
    return TrainSettings(**base)


@pytest.mark.slow
def test_training_lowers_the_loss(tiny_images, tmp_path):
    run = tmp_path / "run"
    # decay 0.9: counts of unused codes fall below the restart threshold within ~20 steps, so a short
    # run is not stuck with a collapsed codebook (the default 0.99 needs ~230 steps for that).
    cfg = tiny_vqvae_config(num_codes=32, code_dim=8, decay=0.9)
    train_vqvae(tiny_images, settings(run, 150, batch=8, lr=3e-3, warmup=10), cfg, crop=16)
    steps, _ = read_log(run)
    assert [r["step"] for r in steps] == list(range(1, 151))
    losses = [r["loss"] for r in steps]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.7 * first, (first, last)  # typically ~0.55
    assert all(r["used0"] > 1 for r in steps[-20:])  # more than one code is in use at the end
    model = load_vqvae(run / "model.safetensors")
    assert model.config == cfg
    assert all(int(q.initialized) for q in model.quantizers)


def test_resume_is_exact(tiny_images, tmp_path):
    cfg = tiny_vqvae_config()
    common = dict(checkpoint_every=20, validate_every=20)
    kw = dict(crop=16, val=tiny_images, val_images=2)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    train_vqvae(tiny_images, settings(run_a, 40, **common), cfg, **kw)
    train_vqvae(tiny_images, settings(run_b, 40, stop_at=20, **common), cfg, **kw)
    steps_b, _ = read_log(run_b)
    assert [r["step"] for r in steps_b] == list(range(1, 21))
    with pytest.raises(VQCodecError, match="already holds a run"):
        train_vqvae(tiny_images, settings(run_b, 40, **common), cfg, **kw)
    train_vqvae(tiny_images, settings(run_b, 40, resume=True, **common), cfg, **kw)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    steps_a, val_a = read_log(run_a)
    steps_b, val_b = read_log(run_b)
    assert [r["step"] for r in steps_b] == list(range(1, 41))
    assert strip(steps_b) == strip(steps_a)  # ==, every float bit for bit
    assert [r["loss"] for r in steps_b[20:]] == [r["loss"] for r in steps_a[20:]]
    assert strip(val_b) == strip(val_a) and [r["step"] for r in val_a] == [20, 40]
    _, _, ta = load_model(run_a / "model.safetensors")
    _, _, tb = load_model(run_b / "model.safetensors")
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SCRIPT = """
import os, sys
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
import vqcodec.train.vqvae as tv
from vqcodec_cli.main import main

models = []
_train = tv.train
def spy(*args, **kwargs):
    models.append(_train(*args, **kwargs))
    return models[-1]
tv.train = spy
main(sys.argv[2:], standalone_mode=False)
rank = int(os.environ["RANK"])
state = {k: v.detach().contiguous() for k, v in models[0].state_dict().items()}
save_file(state, os.path.join(sys.argv[1], f"rank{rank}.safetensors"))
"""


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_ddp_two_processes_keep_identical_codebooks(tiny_images, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    dumps, run = tmp_path / "dumps", tmp_path / "run"
    dumps.mkdir()
    k, steps, batch, crop = 16, 4, 4, 16
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(dumps),
           "train", "vqvae", "--data", str(tiny_images), "--out", str(run), "--steps", str(steps),
           "--batch", str(batch), "--crop", str(crop), "--workers", "0", "--hidden", "16", "--res-channels", "8",
           "--res-blocks", "1", "--codes", str(k), "--code-dim", "4", "--levels", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "model.safetensors").is_file()
    steps_logged, _ = read_log(run)
    assert [r["step"] for r in steps_logged] == list(range(1, steps + 1))

    r0, r1 = load_file(str(dumps / "rank0.safetensors")), load_file(str(dumps / "rank1.safetensors"))
    _, _, saved = load_model(run / "model.safetensors")
    assert r0.keys() == r1.keys() == saved.keys()
    for name in r0:  # parameters (DDP) and codebooks (all-reduce + broadcast) agree on every rank
        assert torch.equal(r0[name], r1[name]), name
        assert torch.equal(r0[name], saved[name]), name
    # The counts were all-reduced: their sum tracks the global number of vectors per step, not one
    # rank's half. Counts restart at 1 on the first-batch init; 0.99**4 > 0.1, so nothing restarted.
    for lvl, per_image in enumerate([(crop // 4) ** 2, (crop // 8) ** 2]):
        cs = saved[f"quantizers.{lvl}.cluster_size"]
        assert torch.isfinite(cs).all()
        assert int(saved[f"quantizers.{lvl}.restarts"]) == 0
        total = float(k)
        for _ in range(steps):
            total = 0.99 * total + 0.01 * batch * per_image
        assert cs.sum().item() == pytest.approx(total, rel=1e-5)


# -- code datasets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(8, 8), (10, 12)])
def test_code_grid_covers_every_code(h: int, w: int) -> None:
    """The exact evaluation grid visits every code of every map, and its top windows match."""
    rng = np.random.default_rng(0)
    bottom = rng.integers(0, 512, (3, h, w)).astype(np.uint16)
    top = rng.integers(0, 512, (3, h // 2, w // 2)).astype(np.uint16)
    grid = CodeGrid([bottom, top], np.arange(3), level=0, tile=4)
    seen = np.zeros(bottom.shape, dtype=int)
    for i in range(len(grid)):
        codes, cond, label = grid[i]
        n = int(label)
        matches = [(y, x) for y, x in np.argwhere(np.ones((h - 3, w - 3), bool))
                   if (bottom[n, y : y + 4, x : x + 4] == codes.numpy()).all()]
        assert len(matches) == 1  # random codes: one place fits
        y, x = matches[0]
        assert y % 2 == 0 and x % 2 == 0  # aligned with the top level
        assert (cond.numpy() == top[n, y // 2 : y // 2 + 2, x // 2 : x // 2 + 2]).all()
        seen[n, y : y + 4, x : x + 4] += 1
    assert seen.min() == 1
    assert len(grid) == 3 * -(-h // 4) * -(-w // 4)
    with pytest.raises(IndexError):
        grid[len(grid)]


# -- refitting a shipped model's decoder ---------------------------------------------------------------


def _codes_part(model) -> dict[str, torch.Tensor]:
    keep = ("encoders.", "pre_quant.", "cond_decoders.", "quantizers.")
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(keep)}


@pytest.mark.parametrize("extra, dropped", [(2, None), (0, 1)])
def test_refit_trains_the_decoder_and_keeps_the_codes(tiny_images, tmp_path, extra, dropped):
    """A refit (``train vqvae --refit``) starts from a codec model, grown by identity blocks or with
    its bottom level dropped; training changes the decoder and never how an image becomes codes,
    so the export reuses the base model's priors and the result codes images exactly."""
    from vqcodec.codec import compress, decompress
    from vqcodec.testing import smooth_image, write_tiny_codec_model
    from vqcodec.train.export import build_refit_codec_model
    from vqcodec.train.vqvae import refit_model
    from vqcodec.zoo.codec_model import load_codec_model

    base = write_tiny_codec_model(tmp_path / "base.safetensors")
    before = refit_model(base, extra, dropped)
    base_vq = load_codec_model(base).vqvae
    x = torch.from_numpy(smooth_image(32, 32, 5)).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        if extra:  # identity-initialised blocks: the same pixels as the base before training
            codes = base_vq.encode(x)
            assert torch.equal(before.eval().decode(codes, 32, 32), base_vq.decode(codes, 32, 32))
        start = {k: v.clone() for k, v in before.state_dict().items()}
    run = tmp_path / "refit"
    model = train_vqvae(tiny_images, settings(run, 30, batch=4, lr=3e-3, warmup=2), None, crop=16,
                        refit=base, extra_blocks=extra, dropped_levels=dropped)
    trained = model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in _codes_part(before).items()
               if not (dropped and k.startswith(("pre_quant.0.", "cond_decoders.0."))))
    assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith("decoder."))
    assert model.config.decoder_extra_blocks == extra and model.config.dropped_levels == (dropped or 0)
    out = build_refit_codec_model(base, run / "model.safetensors", tmp_path / "refit.safetensors", "refit")
    pixels = smooth_image(40, 48, 9)
    data = compress(pixels, out)
    with torch.no_grad():
        want = out.vqvae.decode(out.vqvae.encode(torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255.0), 40, 48)
    got = decompress(data, out)
    assert np.array_equal(got, (want[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    assert np.array_equal(decompress(data, out, region=(8, 4, 20, 30)), got[4:34, 8:28])
    if dropped:  # only the top level is written: a much smaller file than the base model's
        assert len(data) < 0.6 * len(compress(pixels, load_codec_model(base)))


def test_refit_export_refuses_a_model_whose_codes_changed(tmp_path):
    from vqcodec.testing import write_tiny_codec_model
    from vqcodec.train.export import build_refit_codec_model
    from vqcodec.train.vqvae import refit_model
    from vqcodec.zoo.files import save_model

    base = write_tiny_codec_model(tmp_path / "base.safetensors")
    other = write_tiny_codec_model(tmp_path / "other.safetensors", seed=3)
    model = refit_model(other, 1)
    save_model(tmp_path / "vq.safetensors", model.state_dict(), "vqvae", model.config.to_dict())
    with pytest.raises(VQCodecError, match="was not refit from it"):
        build_refit_codec_model(base, tmp_path / "vq.safetensors", tmp_path / "out.safetensors", "x")
    with pytest.raises(VQCodecError, match="--drop-levels must be"):
        refit_model(base, 0, 2)


def test_first_layers_keeps_the_start_of_a_prior():
    """``first_layers`` keeps a prior's first layers with their weights, and all of them is the prior."""
    from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig
    from vqcodec.train.prior import first_layers

    torch.manual_seed(0)
    prior = PixelCNNPrior(PriorConfig(num_codes=16, channels=8, layers=3, attention_every=2, dropout=0.0)).eval()
    codes = torch.randint(0, 16, (2, 6, 6))
    with torch.no_grad():
        assert torch.equal(first_layers(prior, 3).eval()(codes), prior(codes))
    one = first_layers(prior, 1)
    assert one.config.layers == 1 and len(one.layers) == 1 and not len(one.attention)
    assert torch.equal(one.layers[0].v_conv.weight, prior.layers[0].v_conv.weight)
    assert torch.equal(one.logits.weight, prior.logits.weight)
    with pytest.raises(VQCodecError, match="it can keep 1 to 3, not 0"):
        first_layers(prior, 0)


def test_code_sets_pool_only_the_codes_of_one_model(tmp_path):
    """Several code datasets pool into one (the rungs a prior will code); codes of another model or
    codebook size are refused, since their code numbers mean other things."""
    import json

    from vqcodec.train.code_datasets import load_code_sets

    def write(name: str, count: int, **meta) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / "level0.npy", np.full((count, 8, 8), count, dtype=np.uint16))
        np.save(folder / "level1.npy", np.zeros((count, 4, 4), dtype=np.uint16))
        np.save(folder / "labels.npy", -np.ones(count, dtype=np.int64))
        info = {"levels": 2, "num_codes": 16, "classes": [], "model_fingerprint": "aa", **meta}
        (folder / "meta.json").write_text(json.dumps(info))
        return folder

    a, b = write("a", 2), write("b", 3)
    maps, labels, meta = load_code_sets([a, b])
    assert maps[0].shape == (5, 8, 8) and labels.shape == (5,) and meta["num_codes"] == 16
    assert maps[0][:, 0, 0].tolist() == [2, 2, 3, 3, 3]
    assert load_code_sets(a)[0][0].shape == (2, 8, 8)
    with pytest.raises(VQCodecError, match="another model than"):
        load_code_sets([a, write("c", 1, model_fingerprint="bb")])
    with pytest.raises(VQCodecError, match="another codebook size"):
        load_code_sets([a, write("d", 1, num_codes=32)])
