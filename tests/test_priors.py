"""Tests for the PixelCNN priors: exact causality and no blind spot, learning a known entropy, and the
integer twin (calibrated by forward hooks): incremental == parallel, bit for bit, for a trained prior
and for the default model's priors, and an NLL close to the float prior's; the prior registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqcodec.priors.int_pixelcnn import IntPixelCNN
from vqcodec.priors.pixelcnn import CausalAttention, GatedLayer, PixelCNNPrior, PriorConfig, nll_bits
from vqcodec.priors.registry import build_integer_prior, integer_twin
from vqcodec.testing import image_codes, smooth_image, stepper_mismatches, tiny_prior_config
from vqcodec.train.code_datasets import CodeTiles
from vqcodec.train.evaluation import mean_bits, unigram_entropy

H, W = 5, 6  # small map for the causality checks (odd height: conditioning maps are cropped)


def make_prior(seed: int = 0, **kw) -> PixelCNNPrior:
    torch.manual_seed(seed)
    return PixelCNNPrior(tiny_prior_config(**kw)).double().eval()


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
    cfg = tiny_prior_config(cond_levels=cond, num_classes=classes, v_rows=3, v_cols=5, h_cols=4)
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
    grads = grads_per_position(lambda h: att(h) - h, x, 8)  # the module returns h + its attention output
    assert_causal(grads, strict=False)  # attends to j <= i
    assert torch.all(grads[-1] > 0)  # ... and to every such j


def test_output_head_is_pointwise() -> None:
    """The output blocks and logits are 1x1 convolutions: position i reads only position i of h."""
    prior = make_prior(out_blocks=2)

    def head(h):
        for block in prior.out_blocks:
            h = block(h)
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


@pytest.mark.slow
def test_prior_learns_true_entropy(trained_prior: PixelCNNPrior) -> None:
    maps = row_constant_codes(256, seed=1)
    tiles = CodeTiles([maps], np.full(len(maps), -1), level=0, tile=S, seed=5)
    bits = mean_bits(trained_prior, tiles, 256)
    assert unigram_entropy(maps, K) == pytest.approx(math.log2(K), abs=0.05)  # no context-free shortcut
    assert TRUE_BITS - 0.01 < bits < TRUE_BITS + MARGIN, (bits, TRUE_BITS)
    assert bits < math.log2(K) / 4


@pytest.fixture(scope="module")
def int_prior(trained_prior: PixelCNNPrior) -> IntPixelCNN:
    calib = torch.from_numpy(row_constant_codes(64, seed=2).astype(np.int64))
    return IntPixelCNN.from_float(trained_prior, [(calib[:32], None, None), (calib[32:], None, None)])


@pytest.mark.slow
def test_int_prior_stepper_equals_parallel(int_prior: IntPixelCNN) -> None:
    codes = torch.from_numpy(row_constant_codes(4, seed=3).astype(np.int64))
    codes[0, 3, 4] = (codes[0, 3, 4] + 1) % K  # an unlikely code too
    parallel = int_prior.parallel_probs(codes)
    assert parallel.dtype == torch.float64 and torch.all(parallel >= 1)
    assert torch.equal(parallel, parallel.round())
    for order in ("raster", "fast"):
        assert stepper_mismatches(int_prior.stepper(4, S, S, order=order), parallel, codes) == [], order


@pytest.mark.slow
def test_int_prior_nll_close_to_float(trained_prior: PixelCNNPrior, int_prior: IntPixelCNN) -> None:
    codes = torch.from_numpy(row_constant_codes(128, seed=4).astype(np.int64))
    with torch.no_grad():
        float_bits = float(nll_bits(trained_prior(codes), codes))
    probs = int_prior.parallel_probs(codes)
    p = probs.gather(-1, codes[..., None])[..., 0] / probs.sum(-1)
    int_bits = float(-torch.log2(p).mean())
    assert abs(int_bits - float_bits) <= 0.01 * float_bits, (int_bits, float_bits)


# -- the default model's integer priors ----------------------------------------------------------------------
def test_parallel_probs_equal_stepper_probs(model):
    """The default model's integer priors: the stepper (decoder) gives the parallel pass's (encoder's)
    probabilities at every position, bit for bit."""
    # two images as a batch of two, so the stepper's batch rows must not mix either
    maps = [image_codes(model, smooth_image(40, 48, seed=s)) for s in (41, 42)]
    codes = [torch.cat([mp[lv] for mp in maps]) for lv in range(model.levels)]
    for level in reversed(range(model.levels)):
        net = model.priors[level]
        here, cond = codes[level], codes[level + 1 :] or None
        parallel = net.parallel_probs(here, cond)
        b, h, w = here.shape
        for order in ("raster", "fast"):
            assert stepper_mismatches(net.stepper(b, h, w, cond, order=order), parallel, here) == [], (level, order)
        assert parallel.dtype == torch.float64 and torch.equal(parallel, parallel.round())
        assert float(parallel.min()) >= 1


# -- the registry ------------------------------------------------------------------------------------------
def test_registry_builds_the_integer_twin_and_rebuilds_it_from_its_tensors() -> None:
    """``integer_twin`` is ``IntPixelCNN.from_float`` for a gated PixelCNN, and the tensors it stores
    rebuild (``build_integer_prior``, as a model file is loaded) a prior with the same probabilities."""
    torch.manual_seed(0)
    prior = PixelCNNPrior(tiny_prior_config(cond_levels=1, num_classes=3, attention_every=1)).eval()
    g = torch.Generator().manual_seed(1)
    codes, above = torch.randint(0, 8, (4, 8, 8), generator=g), torch.randint(0, 8, (4, 4, 4), generator=g)
    label = torch.randint(0, 3, (4,), generator=g)
    calibration = [(codes, [above], label)]
    twin = integer_twin(prior, calibration)
    assert isinstance(twin, IntPixelCNN)
    mine, direct = twin.state(), IntPixelCNN.from_float(prior, calibration).state()
    assert mine.keys() == direct.keys()
    assert all(torch.equal(mine[k], direct[k]) for k in mine)
    rebuilt = build_integer_prior(prior.config.to_dict(), mine)
    assert torch.equal(rebuilt.parallel_probs(codes, [above], label), twin.parallel_probs(codes, [above], label))


def test_the_float_twin_of_an_integer_prior_computes_its_probabilities() -> None:
    """``to_float`` (where fine-tuning a shipped prior starts) gives back the function of the integer
    twin, with conditioning, labels and attention: the same most likely code nearly everywhere and
    the same bits to 1 %, and quantizing it again gives a twin with the same probabilities to 1 %."""
    torch.manual_seed(3)
    prior = PixelCNNPrior(tiny_prior_config(cond_levels=1, num_classes=3, attention_every=1)).eval()
    g = torch.Generator().manual_seed(4)
    codes, above = torch.randint(0, 8, (6, 8, 8), generator=g), torch.randint(0, 8, (6, 4, 4), generator=g)
    label = torch.randint(0, 3, (6,), generator=g)
    twin = integer_twin(prior, [(codes, [above], label)])
    back = twin.to_float()
    assert back.config == prior.config
    with torch.no_grad():
        want, got = prior(codes, [above], label), back(codes, [above], label)
    assert float((want - got).abs().max()) < 0.05 * float(want.abs().max())
    assert float((want.argmax(1) == got.argmax(1)).double().mean()) > 0.97

    def int_bits(net) -> float:
        probs = net.parallel_probs(codes, [above], label)
        return float(-torch.log2(probs.gather(-1, codes[..., None])[..., 0] / probs.sum(-1)).mean())

    with torch.no_grad():
        float_bits = float(nll_bits(back(codes, [above], label), codes))
    assert float_bits == pytest.approx(int_bits(twin), rel=0.01)
    again = integer_twin(back, [(codes, [above], label)])
    assert int_bits(again) == pytest.approx(int_bits(twin), rel=0.01)


def test_the_uncoded_prior_fulfils_the_contract() -> None:
    """A level a model does not code: one code (0) with probability 1, one decoding step, nothing
    to store; any other code is refused rather than silently coded."""
    from vqcodec.errors import VQCodecError
    from vqcodec.priors.registry import build_integer_prior
    from vqcodec.priors.uncoded import UncodedConfig, is_uncoded

    prior = build_integer_prior(UncodedConfig().to_dict(), {})
    assert is_uncoded(prior) and prior.state() == {}
    codes = torch.zeros((2, 3, 5), dtype=torch.long)
    probs = prior.parallel_probs(codes, [torch.zeros((2, 2, 3), dtype=torch.long)])
    assert probs.shape == (2, 3, 5, 1) and bool((probs == 1).all())
    order = prior.decode_order(3, 5)
    assert len(order) == 1 and sorted(map(tuple, order[0])) == [(r, c) for r in range(3) for c in range(5)]
    stepper = prior.stepper(2, 3, 5)
    assert torch.equal(stepper.probs(0), probs.reshape(2, 15, 1))
    stepper.record(0, torch.zeros((2, 15), dtype=torch.long))
    with pytest.raises(VQCodecError, match="only hold the code 0"):
        stepper.record(0, torch.ones((2, 15), dtype=torch.long))
    with pytest.raises(VQCodecError, match="only hold the code 0"):
        prior.parallel_probs(codes + 1)
    with pytest.raises(VQCodecError, match="no tensors"):
        build_integer_prior(UncodedConfig().to_dict(), {"w": torch.zeros(1)})
    with pytest.raises(ValueError):
        UncodedConfig.from_dict({"arch": "uncoded", "num_codes": 4})
