"""Tests for the EMA quantizer, the hierarchical VQ-VAE, its training loop (resume, DDP) and its CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

from cli.main import main as cli_main
from vqcodec.checkpoint import load_model
from vqcodec.errors import VQCodecError
from vqcodec.models import load_vqvae
from vqcodec.quantizer import VectorQuantizerEMA
from vqcodec.train_vqvae import train_vqvae
from vqcodec.training import TrainSettings
from vqcodec.vqvae import VQVAE, VQVAEConfig

REPO = Path(__file__).resolve().parents[1]


def tiny_config(levels: int = 2, **kw) -> VQVAEConfig:
    base = dict(hidden=16, res_channels=8, res_blocks=1, num_codes=16, code_dim=4, levels=levels)
    base.update(kw)
    return VQVAEConfig(**base)




def read_log(run: Path) -> tuple[list[dict], list[dict]]:
    """(training-step records, validation records) of a run's log.jsonl."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "loss" in r], [r for r in records if "val_psnr" in r]


# -- quantizer --------------------------------------------------------------------------------------


def make_quantizer(embed: list[list[float]], decay: float, eps: float, dead_threshold: float) -> VectorQuantizerEMA:
    """A quantizer in training mode whose codebook (counts 1, average = code) is set by hand."""
    q = VectorQuantizerEMA(len(embed), len(embed[0]), decay=decay, eps=eps, dead_threshold=dead_threshold)
    e = torch.tensor(embed, dtype=torch.float32)
    q.embed.copy_(e)
    q.embed_avg.copy_(e)
    q.cluster_size.fill_(1.0)
    q.initialized.fill_(True)
    return q.train()


def ema_reference(cs, avg, flat, codes, decay, eps):
    """The EMA step written out in plain Python: returns (cluster_size, embed_avg, embed)."""
    k, d = len(cs), len(avg[0])
    counts = [sum(1.0 for c in codes if c == j) for j in range(k)]
    sums = [[sum(v[i] for v, c in zip(flat, codes) if c == j) for i in range(d)] for j in range(k)]
    cs = [decay * cs[j] + (1 - decay) * counts[j] for j in range(k)]
    avg = [[decay * avg[j][i] + (1 - decay) * sums[j][i] for i in range(d)] for j in range(k)]
    n = sum(cs)
    cs_s = [(cs[j] + eps) / (n + k * eps) * n for j in range(k)]  # Laplace smoothing
    embed = [[avg[j][i] / cs_s[j] for i in range(d)] for j in range(k)]
    return cs, avg, embed


def close(t: torch.Tensor, expected) -> None:
    torch.testing.assert_close(t, torch.tensor(expected, dtype=t.dtype), rtol=1e-6, atol=1e-6)


E0 = [[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]
X1 = [[0.2, 0.0], [0.0, 0.2], [1.0, 1.2], [0.8, 1.0]]  # nearest codes under E0: 0, 0, 1, 1
C1 = [0, 0, 1, 1]
X2 = [[4.0, 6.0], [0.6, 0.4]]
C2 = [2, 1]


@pytest.mark.parametrize("via_forward", [False, True])
def test_ema_update_matches_hand_computation(via_forward):
    eps = 1e-9
    q = make_quantizer(E0, decay=0.5, eps=eps, dead_threshold=0.0)
    if via_forward:  # (B, D, H, W) layout: the four vectors as a 2x2 map
        z = torch.tensor(X1).reshape(1, 2, 2, 2).permute(0, 3, 1, 2)
        _, _, codes = q(z)
        assert codes.tolist() == [[[0, 0], [1, 1]]]
    else:
        q.ema_update(torch.tensor(X1), torch.tensor(C1))
    # By hand: counts (2, 2, 0); sums (0.2, 0.2), (1.8, 2.2), (0, 0).
    # cs = 0.5 * 1 + 0.5 * counts; avg = 0.5 * E0 + 0.5 * sums; n = 3.5; cs_s ~= cs since eps is tiny.
    close(q.cluster_size, [1.5, 1.5, 0.5])
    close(q.embed_avg, [[0.1, 0.1], [1.4, 1.6], [2.5, 2.5]])
    close(q.embed, [[1 / 15, 1 / 15], [14 / 15, 16 / 15], [5.0, 5.0]])
    assert int(q.restarts) == 0

    q.ema_update(torch.tensor(X2), torch.tensor(C2))
    # counts (0, 1, 1); sums (0, 0), (0.6, 0.4), (4, 6); cs = (0.75, 1.25, 0.75); n = 2.75.
    close(q.cluster_size, [0.75, 1.25, 0.75])
    close(q.embed_avg, [[0.05, 0.05], [1.0, 1.0], [3.25, 4.25]])
    close(q.embed, [[1 / 15, 1 / 15], [0.8, 0.8], [13 / 3, 17 / 3]])

    # The written-out formula agrees with the hand numbers above.
    cs, avg, embed = ema_reference([1.0] * 3, E0, X1, C1, 0.5, eps)
    cs, avg, embed = ema_reference(cs, avg, X2, C2, 0.5, eps)
    close(q.cluster_size, cs)
    close(q.embed_avg, avg)
    close(q.embed, embed)


def test_ema_laplace_smoothing_with_large_eps():
    eps = 0.5
    q = make_quantizer(E0, decay=0.5, eps=eps, dead_threshold=0.0)
    q.ema_update(torch.tensor(X1), torch.tensor(C1))
    # cs = (1.5, 1.5, 0.5), n = 3.5; cs_s = (cs + 0.5) / (3.5 + 3 * 0.5) * 3.5 = (1.4, 1.4, 0.7).
    close(q.cluster_size, [1.5, 1.5, 0.5])  # the stored counts are not smoothed
    close(q.embed_avg, [[0.1, 0.1], [1.4, 1.6], [2.5, 2.5]])
    close(q.embed, [[0.1 / 1.4, 0.1 / 1.4], [1.0, 1.6 / 1.4], [2.5 / 0.7, 2.5 / 0.7]])
    _, _, embed = ema_reference([1.0] * 3, E0, X1, C1, 0.5, eps)
    close(q.embed, embed)


def test_dead_code_restart_reseeds_from_encoder_output():
    q = make_quantizer([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]], decay=0.5, eps=1e-9, dead_threshold=0.1)
    gen = torch.Generator().manual_seed(0)
    # Code 2 is never chosen: its count goes 0.5, 0.25, 0.125, then 0.0625 < 0.1 at step 4.
    for step in range(1, 5):
        centres = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(4, 1)
        flat = centres + 0.1 * torch.randn(8, 2, generator=gen)
        z = flat.reshape(1, 2, 4, 2).permute(0, 3, 1, 2)  # (B, D, H, W)
        _, _, codes = q(z)
        assert (codes != 2).all()
        if step < 4:
            assert int(q.restarts) == 0
            assert q.cluster_size[2].item() == pytest.approx(0.5**step)
            torch.testing.assert_close(q.embed[2], torch.tensor([100.0, 100.0]))
    assert int(q.restarts) == 1
    assert q.cluster_size[2].item() == 1.0
    new = q.embed[2]
    assert any(torch.equal(new, row) for row in flat), (new, flat)
    assert torch.equal(q.embed_avg[2], new)
    # Codes still in use are untouched by the restart.
    assert q.cluster_size[0].item() > 0.9 and q.cluster_size[1].item() > 0.9
    # The re-seeded code is live: its own vector now maps to it.
    assert q.codes(new[None]).item() == 2


@pytest.mark.parametrize("steps, threshold", [(200, 0.1), (3000, 0.0)])
def test_counts_never_blow_up_when_one_code_is_used(steps, threshold):
    k, d = 8, 4
    q = VectorQuantizerEMA(k, d, decay=0.99, eps=1e-5, dead_threshold=threshold).train()
    q.initialized.fill_(True)
    start = q.embed.clone()
    gen = torch.Generator().manual_seed(1)
    target = start[0]
    bound = 2 * max(start.abs().max().item(), target.abs().max().item() + 0.01)
    for _ in range(steps):
        flat = target + 1e-3 * torch.randn(64, d, generator=gen)
        z = flat.reshape(1, 8, 8, d).permute(0, 3, 1, 2)
        _, _, codes = q(z)
        assert (codes == 0).all()
    for buf in (q.embed, q.embed_avg, q.cluster_size):
        assert torch.isfinite(buf).all()
    assert q.embed.abs().max().item() <= bound
    assert int(q.restarts) == 0
    torch.testing.assert_close(q.embed[0], target, atol=2e-3, rtol=0)
    assert q.cluster_size[0].item() == pytest.approx(1 + (64 - 1) * (1 - 0.99**steps), rel=1e-4)
    if threshold > 0:  # 0.99**200 = 0.134 > 0.1: unused codes are neither restarted nor moved
        torch.testing.assert_close(q.embed[1:], start[1:], rtol=1e-3, atol=1e-6)


# -- model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 3])
def test_straight_through_gradient_reaches_encoders(levels):
    torch.manual_seed(0)
    model = VQVAE(tiny_config(levels)).train()
    x = torch.rand(4, 3, 32, 32)
    recon, latent, _ = model(x)
    # Reconstruction loss alone: the code lookup has no gradient, so only the straight-through path
    # can carry it back to the encoders.
    F.mse_loss(recon, x).backward()
    for enc in (model.encoders[0], model.encoders[-1]):
        for name, p in enc.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(b.grad is None for b in model.buffers())

    model.zero_grad(set_to_none=True)
    recon, latent, _ = model(x)
    latent.backward()  # the commitment loss pulls the encoders towards their codes
    for enc in (model.encoders[0], model.encoders[-1]):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (771, 517)])
def test_shapes(levels, size):
    h, w = size
    torch.manual_seed(0)
    model = VQVAE(tiny_config(levels, hidden=8, res_channels=4, num_codes=16, code_dim=4))
    x = torch.rand(1 if h > 100 else 2, 3, h, w)
    if h < 100:  # small inputs also go through a training step
        model.train()
        recon, _, codes = model(x)
        assert recon.shape == x.shape
        assert [tuple(c.shape[1:]) for c in codes] == model.code_shapes(h, w)
    model.eval()
    with torch.no_grad():
        recon, _, codes = model(x)
        enc = model.encode(x)
        dec = model.decode(enc, h, w)
    assert recon.shape == x.shape and dec.shape == x.shape
    shapes = model.code_shapes(h, w)
    assert len(enc) == len(shapes) == levels
    assert [tuple(c.shape[1:]) for c in enc] == shapes
    assert [tuple(c.shape[1:]) for c in codes] == shapes
    assert all(c.shape[0] == x.shape[0] and c.dtype == torch.int64 for c in enc)
    if size == (771, 517):  # padded to a multiple of the stride (8 or 16), then /4, /8, /16
        expected = {2: [(194, 130), (97, 65)], 3: [(196, 132), (98, 66), (49, 33)]}[levels]
        assert shapes == expected
    if size == (1, 1):  # a single pixel still makes one top-level code
        assert shapes == {2: [(2, 2), (1, 1)], 3: [(4, 4), (2, 2), (1, 1)]}[levels]


# -- training ---------------------------------------------------------------------------------------


def settings(out: Path, steps: int, **kw) -> TrainSettings:
    base = dict(out=out, steps=steps, batch=4, lr=2e-3, warmup=5, checkpoint_every=1000, validate_every=1000,
                workers=0)
    base.update(kw)
    return TrainSettings(**base)


def test_training_lowers_the_loss(tiny_images, tmp_path):
    run = tmp_path / "run"
    # decay 0.9: counts of unused codes fall below the restart threshold within ~20 steps, so a short
    # run is not stuck with a collapsed codebook (the default 0.99 needs ~230 steps for that).
    cfg = tiny_config(num_codes=32, code_dim=8, decay=0.9)
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
    cfg = tiny_config()
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
import vqcodec.train_vqvae as tv
from cli.main import main

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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
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


# -- command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["train", "vqvae", "--help"], ["train", "prior", "--help"],
     ["extract-codes", "--help"]],
)
def test_cli_help(argv):
    result = CliRunner().invoke(cli_main, argv)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if argv[:2] == ["train", "vqvae"]:
        assert "--stop-at" in result.output and "--resume" in result.output


def test_cli_missing_data_folder(tmp_path):
    out = tmp_path / "X"
    result = CliRunner().invoke(cli_main, ["train", "vqvae", "--data", "/nonexistent", "--out", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "--data" in result.output
    assert not out.exists()


TINY_CLI = ["--crop", "16", "--batch", "4", "--workers", "0", "--hidden", "16", "--res-channels", "8",
            "--res-blocks", "1", "--codes", "16", "--code-dim", "4"]


def test_cli_resume_without_a_run_is_a_clean_error(tiny_images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        cli_main, ["train", "vqvae", "--data", str(tiny_images), "--out", str(empty), "--resume", *TINY_CLI]
    )
    assert result.exit_code == 1, result.output
    assert "nothing to resume" in result.output
    assert "Traceback" not in result.output
    assert list(empty.iterdir()) == []


def test_cli_stop_at_then_resume(tiny_images, tmp_path):
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


def test_windowed_encode_and_decode_match_whole_image():
    """Very large images run the VQ-VAE in overlapping windows: nearly all codes and, apart from
    float noise, all decoded pixels must match the whole-image pass."""
    from vqcodec.vqvae import decode_windowed, encode_windowed

    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden=16, res_channels=8, res_blocks=1, num_codes=32, code_dim=8)).train()
    model(torch.rand(2, 3, 64, 64))  # seeds the codebooks from encoder outputs
    model.eval()
    x = torch.rand(1, 3, 150, 203)
    whole = model.encode(x)
    windowed = encode_windowed(model, x, window=64, margin=64)
    for a, b in zip(whole, windowed, strict=True):
        assert a.shape == b.shape
        assert (a == b).float().mean() > 0.97
    img_whole = model.decode(whole, 150, 203)
    img_windowed = decode_windowed(model, whole, 150, 203, window=64, margin=64)
    assert img_windowed.shape == img_whole.shape
    assert torch.allclose(img_whole, img_windowed, atol=1e-4)
