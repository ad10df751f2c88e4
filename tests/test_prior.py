"""Tests for the PixelCNN priors: exact causality and no blind spot, learning a known entropy, the
integer twin's exactness (incremental == parallel, NLL close to the float prior) and ``vqcodec eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import main as cli_main
from vqcodec.checkpoint import save_model
from vqcodec.codes import CodeGrid, CodeTiles
from vqcodec.intprior import IntPrior, Stepper
from vqcodec.prior import CausalAttention, GatedLayer, PixelCNNPrior, PriorConfig, nll_bits
from vqcodec.train_prior import mean_bits, unigram_entropy
from vqcodec.vqvae import VQVAE, VQVAEConfig

H, W = 5, 6  # small map for the causality checks (odd height: conditioning maps are cropped)




def tiny_cfg(**kw) -> PriorConfig:
    base = dict(num_codes=8, channels=8, layers=2, heads=2, dropout=0.0, out_blocks=1, cond_channels=8, cond_blocks=1)
    base.update(kw)
    return PriorConfig(**base)


def make_prior(seed: int = 0, **kw) -> PixelCNNPrior:
    torch.manual_seed(seed)
    return PixelCNNPrior(tiny_cfg(**kw)).double().eval()


def cond_maps(levels: int, batch: int = 2, k: int = 8, seed: int = 1) -> list[torch.Tensor] | None:
    """Codes of the levels above a H x W map: level i+1 above is ceil(H / 2**(i+1)) x ceil(W / 2**(i+1))."""
    if not levels:
        return None
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, k, (batch, -(-H // 2 ** (i + 1)), -(-W // 2 ** (i + 1))), generator=g)
            for i in range(levels)]


def raster_mask(i: int, shape=(H, W)) -> torch.Tensor:
    """True at raster positions >= i."""
    return (torch.arange(shape[0] * shape[1]) >= i).reshape(shape)


def embedded_input(prior: PixelCNNPrior, batch: int = 2, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, prior.config.num_codes, (batch, H, W), generator=g)
    return prior.embed(codes).permute(0, 3, 1, 2).detach().clone()


def grads_per_position(fn, x: torch.Tensor, out_channels: int) -> list[torch.Tensor]:
    """For every raster position i of the output of ``fn(x)``: |d (random projection of out[:, :, i]) / dx|
    summed over batch and channels, as an (H, W) map."""
    g = torch.Generator().manual_seed(3)
    proj = torch.randn(x.shape[0], out_channels, generator=g, dtype=torch.float64)
    result = []
    for i in range(H * W):
        xi = x.clone().requires_grad_(True)
        out = fn(xi)
        r, c = divmod(i, W)
        (out[:, :, r, c] * proj).sum().backward()
        grad = xi.grad if xi.grad is not None else torch.zeros_like(xi)  # None: no path at all
        result.append(grad.abs().sum((0, 1)))
    return result


def assert_causal(grads: list[torch.Tensor], strict: bool = True) -> None:
    """Zero gradient at positions >= i (strict) or > i (not strict) for every output position i."""
    for i, gmap in enumerate(grads):
        future = raster_mask(i if strict else i + 1)
        assert torch.all(gmap[future] == 0), f"output {divmod(i, W)} depends on a later position:\n{gmap}"


# -- causality, layer by layer ------------------------------------------------------------------------
@pytest.mark.parametrize("cond, classes", [(0, 0), (1, 0), (0, 3), (2, 4)])
def test_gated_layer_stacks(cond: int, classes: int) -> None:
    """v out at row r sees v in rows <= r only; h out at (r, c) sees h in (r, <= c) and v in rows <= r;
    v never sees h. (The stack inputs are shifted before the first layer, so this makes the model causal.)"""
    torch.manual_seed(0)
    cfg = tiny_cfg(cond_levels=cond, num_classes=classes, v_rows=3, v_cols=5, h_cols=4)
    layer = GatedLayer(cfg).double().eval()
    c = cfg.channels
    feat = torch.randn(2, cfg.cond_channels, H, W, dtype=torch.float64) if cond else None
    label = torch.tensor([1, 2]) if classes else None
    v0 = torch.randn(2, c, H, W, dtype=torch.float64)
    h0 = torch.randn(2, c, H, W, dtype=torch.float64)
    for out_idx in (0, 1):
        for wrt in ("v", "h"):
            def fn(x, out_idx=out_idx, wrt=wrt):
                v, h = (x, h0) if wrt == "v" else (v0, x)
                return layer(v, h, feat, label)[out_idx]

            grads = grads_per_position(fn, v0 if wrt == "v" else h0, c)
            for i, gmap in enumerate(grads):
                r, col = divmod(i, W)
                rows = torch.arange(H)[:, None].expand(H, W)
                cols = torch.arange(W)[None, :].expand(H, W)
                if out_idx == 0 and wrt == "h":
                    allowed = torch.zeros(H, W, dtype=torch.bool)
                elif wrt == "v":
                    allowed = rows <= r
                else:
                    allowed = (rows == r) & (cols <= col)
                assert torch.all(gmap[~allowed] == 0), (out_idx, wrt, r, col, gmap)
                assert gmap[r, col] > 0 or (out_idx == 0 and wrt == "h")


def test_causal_attention_layer() -> None:
    torch.manual_seed(0)
    att = CausalAttention(8, 2).double().eval()
    x = torch.randn(2, 8, H, W, dtype=torch.float64)
    grads = grads_per_position(att, x, 8)
    assert_causal(grads, strict=False)  # attends to j <= i
    assert torch.all(grads[-1] > 0)  # ... and to every such j


def test_output_head_is_pointwise() -> None:
    """The output blocks and logits are 1x1 convolutions: position i reads only position i of h."""
    prior = make_prior(out_blocks=2)

    def head(h):
        for a, b in prior.out_blocks:
            h = h + b(torch.relu(a(torch.relu(h))))
        return prior.logits(torch.relu(h))

    x = torch.randn(2, 8, H, W, dtype=torch.float64)
    for i, gmap in enumerate(grads_per_position(head, x, 8)):
        others = torch.ones(H, W, dtype=torch.bool)
        others[divmod(i, W)] = False
        assert torch.all(gmap[others] == 0)


# -- causality and receptive field of whole priors ------------------------------------------------------
PRIORS = {
    "top-attention": dict(layers=6, attention_every=2),
    "top-attention-classes": dict(layers=6, attention_every=3, num_classes=3),
    "bottom-cond1": dict(layers=6, cond_levels=1),
    "bottom-cond2-classes": dict(layers=6, cond_levels=2, num_classes=4),
    "wide-kernels": dict(layers=6, v_rows=3, v_cols=5, h_cols=2),
}


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_causal_without_blind_spot(name: str) -> None:
    """Logits at i have exactly zero gradient w.r.t. the embedded input at positions >= i, for every
    position; with at least as many layers as the map is wide, the last position sees every earlier one."""
    kw = PRIORS[name]
    prior = make_prior(**kw)
    assert prior.config.layers >= max(H, W)
    cond = cond_maps(kw.get("cond_levels", 0))
    label = torch.tensor([0, kw["num_classes"] - 1]) if kw.get("num_classes") else None
    e = embedded_input(prior)
    grads = grads_per_position(lambda x: prior.forward_embedded(x, cond, label), e, prior.config.num_codes)
    assert_causal(grads)
    assert torch.all(grads[-1][~raster_mask(H * W - 1)] > 0), f"blind spot:\n{grads[-1]}"
    # the first code of row 1 sees the whole row above (through the vertical stack)
    assert torch.all(grads[W][0] > 0)


@pytest.mark.parametrize("levels", [1, 2])
def test_conditioning_reaches_every_code_above(levels: int) -> None:
    """The sum of all logits depends on every code of every conditioning level."""
    prior = make_prior(layers=2, cond_levels=levels, num_classes=2)
    cond = cond_maps(levels)
    seen: list[torch.Tensor] = []

    def keep(_mod, _inp, out):
        out.retain_grad()
        seen.append(out)

    hooks = [emb.register_forward_hook(keep) for emb in prior.cond_stack.embeds]
    try:
        e = embedded_input(prior)
        prior.forward_embedded(e, cond, torch.tensor([0, 1])).sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == levels
    for lvl, emb_out in enumerate(seen):
        per_code = emb_out.grad.abs().sum(-1)  # (B, H_l, W_l)
        assert per_code.shape[1:] == cond[lvl].shape[1:]
        assert torch.all(per_code > 0), f"level {lvl} above: some codes are ignored\n{per_code}"


def test_label_changes_every_position() -> None:
    prior = make_prior(layers=2, num_classes=3, attention_every=2)
    e = embedded_input(prior, batch=1)
    with torch.no_grad():
        a = prior.forward_embedded(e, None, torch.tensor([0]))
        b = prior.forward_embedded(e, None, torch.tensor([2]))
    assert torch.all((a - b).abs().sum(1) > 0)


# -- learning a known entropy ----------------------------------------------------------------------------
K, S = 8, 8  # codebook size and map side of the learning test
TRUE_BITS = math.log2(K) / S  # each row is one uniform symbol repeated: log2(K) bits per row of S codes
MARGIN = 0.1  # bits per code the trained prior may stay above the true entropy


def row_constant_codes(n: int, seed: int) -> np.ndarray:
    """(n, S, S) maps whose rows are each one symbol drawn uniformly from K."""
    rng = np.random.default_rng(seed)
    return np.repeat(rng.integers(0, K, (n, S, 1)), S, axis=2).astype(np.uint16)


@pytest.fixture(scope="module")
def trained_prior() -> PixelCNNPrior:
    """A tiny top prior (with attention) trained 200 steps on row-constant maps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    prior = PixelCNNPrior(PriorConfig(num_codes=K, channels=32, layers=2, attention_every=2, heads=2, dropout=0.0,
                                      out_blocks=1))
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    data = torch.from_numpy(row_constant_codes(200 * 32, seed=0).astype(np.int64))
    for step in range(200):
        x = data[step * 32 : (step + 1) * 32]
        loss = nll_bits(prior(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return prior.eval()


def test_prior_learns_true_entropy(trained_prior: PixelCNNPrior) -> None:
    maps = row_constant_codes(256, seed=1)
    tiles = CodeTiles([maps], np.full(len(maps), -1), level=0, tile=S, seed=5)
    bits = mean_bits(trained_prior, tiles, 256)
    assert unigram_entropy(maps, K) == pytest.approx(math.log2(K), abs=0.05)  # no context-free shortcut
    assert TRUE_BITS - 0.01 < bits < TRUE_BITS + MARGIN, (bits, TRUE_BITS)
    assert bits < math.log2(K) / 4


@pytest.fixture(scope="module")
def int_prior(trained_prior: PixelCNNPrior) -> IntPrior:
    calib = torch.from_numpy(row_constant_codes(64, seed=2).astype(np.int64))
    return IntPrior.from_float(trained_prior, [(calib[:32], None, None), (calib[32:], None, None)])


def test_int_prior_stepper_equals_parallel(int_prior: IntPrior) -> None:
    codes = torch.from_numpy(row_constant_codes(4, seed=3).astype(np.int64))
    codes[0, 3, 4] = (codes[0, 3, 4] + 1) % K  # an unlikely code too
    parallel = int_prior.parallel_probs(codes)
    assert parallel.dtype == torch.float64 and torch.all(parallel >= 1)
    assert torch.equal(parallel, parallel.round())
    stepper = Stepper(int_prior, 4, S, S)
    for r in range(S):
        stepper.row(r)
        for c in range(S):
            assert torch.equal(stepper.probs_at(r, c), parallel[:, r, c]), (r, c)
            stepper.put(r, c, codes[:, r, c])


def test_int_prior_nll_close_to_float(trained_prior: PixelCNNPrior, int_prior: IntPrior) -> None:
    codes = torch.from_numpy(row_constant_codes(128, seed=4).astype(np.int64))
    with torch.no_grad():
        float_bits = float(nll_bits(trained_prior(codes), codes))
    probs = int_prior.parallel_probs(codes)
    p = probs.gather(-1, codes[..., None])[..., 0] / probs.sum(-1)
    int_bits = float(-torch.log2(p).mean())
    assert abs(int_bits - float_bits) <= 0.01 * float_bits, (int_bits, float_bits)


# -- vqcodec eval -----------------------------------------------------------------------------------------
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
        prior = PixelCNNPrior(tiny_cfg(num_codes=16, cond_levels=1 - level, attention_every=2 if level else 0))
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
        prior = PixelCNNPrior(tiny_cfg(num_codes=4, cond_levels=1 - level, attention_every=0))
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
