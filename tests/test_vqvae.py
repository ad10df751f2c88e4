"""Tests for stage 1: the EMA quantizer (updates by hand, Laplace smoothing, dead-code restarts,
bounded counts), the hierarchical VQ-VAE (straight-through gradients, code-map shapes) and windowed
encoding and decoding of large images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqcodec.testing import tiny_vqvae_config
from vqcodec.vqvae import VQVAE, VQVAEConfig, decode_windowed, encode_windowed
from vqcodec.vqvae.quantizer import VectorQuantizerEMA

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
    model = VQVAE(tiny_vqvae_config(levels)).train()
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
    model = VQVAE(tiny_vqvae_config(levels, hidden=8, res_channels=4, num_codes=16, code_dim=4))
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


# -- windowed encoding and decoding -----------------------------------------------------------------


def test_windowed_encode_and_decode_match_whole_image():
    """Very large images run the VQ-VAE in overlapping windows: nearly all codes and, apart from
    float noise, all decoded pixels must match the whole-image pass."""
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


@pytest.mark.parametrize(("height", "width", "stride"), [
    (512, 768, 8), (768, 512, 8), (896, 1344, 8), (328, 488, 8), (256, 64, 8), (248, 1000, 8), (40, 48, 8),
    (4000, 6000, 8), (1024, 2064, 16), (264, 264, 16), (65536, 16, 8),
])
def test_band_windows_tile_the_image(height, width, stride):
    """Format 4's bands: their cores tile the padded image exactly once, every edge on the stride, each
    window its core plus DECODER_REACH (rounded to the stride) where the image goes on, an even number of
    bands across the height (two cores share them evenly) unless the image is lower than BAND_MIN_HEIGHT,
    none wider than BAND_MAX_WIDTH, and no core over BAND_MAX_PIXELS but for its height's rounding to the
    stride (bounded memory)."""
    from vqcodec.vqvae.windows import BAND_MAX_PIXELS, BAND_MAX_WIDTH, BAND_MIN_HEIGHT, DECODER_REACH, band_windows

    windows = band_windows(height, width, stride)
    cover = torch.zeros(height, width, dtype=torch.int32)
    margin = -(-DECODER_REACH // stride) * stride
    for ys, ye, ylo, yhi, xs, xe, xlo, xhi in windows:
        assert all(v % stride == 0 or v in (height, width) for v in (ys, ye, ylo, yhi, xs, xe, xlo, xhi))
        assert (ylo, yhi, xlo, xhi) == (max(0, ys - margin), min(height, ye + margin),
                                        max(0, xs - margin), min(width, xe + margin))
        assert xe - xs <= BAND_MAX_WIDTH and (ye - ys - stride) * (xe - xs) < BAND_MAX_PIXELS  # height rounded up
        cover[ys:ye, xs:xe] += 1
    assert bool((cover == 1).all())
    rows = len({w[:2] for w in windows})
    assert rows == 1 if height < BAND_MIN_HEIGHT else rows % 2 == 0
    if (height, width) == (512, 768):  # a Kodak image: two bands of 256 rows
        assert [w[:4] for w in windows] == [(0, 256, 0, 320), (256, 512, 192, 512)]


def test_windows_decode_the_same_on_one_thread_or_several():
    """``decode_in_windows`` runs its windows side by side on threads (each on one CPU thread under
    ``one_thread``): the pixels must be those of running them one after another, and each window's
    core those of decoding that window alone."""
    from vqcodec.priors.autoregress import one_thread
    from vqcodec.testing import tiny_codec_model
    from vqcodec.vqvae import band_windows, decode_in_windows, decode_window

    vqvae = tiny_codec_model(tile=16).vqvae
    torch.manual_seed(1)
    codes = [torch.randint(0, vqvae.config.num_codes, (1, *s)) for s in vqvae.code_shapes(328, 200)]
    windows = band_windows(328, 200, vqvae.config.stride)
    assert len(windows) == 2
    with one_thread():
        seq = decode_in_windows(vqvae, codes, windows, 321, 197, workers=1)
        par = decode_in_windows(vqvae, codes, windows, 321, 197, workers=2)
        alone = [decode_window(vqvae, codes, w) for w in windows]
    assert seq.shape == (1, 3, 321, 197) and torch.equal(seq, par)
    for (ys, ye, _, _, xs, xe, _, _), core in zip(windows, alone):
        ye, xe = min(ye, 321), min(xe, 197)
        assert torch.equal(seq[:, :, ys:ye, xs:xe], core[:, :, : ye - ys, : xe - xs])
    whole = vqvae.decode(codes, 321, 197)  # the same function of the codes, up to float summation order
    assert torch.allclose(whole, seq, atol=1e-5)


@pytest.mark.parametrize("channels, bit_depth", [(3, 8), (1, 8), (3, 16)])
def test_pixels_made_band_by_band_are_those_of_the_whole_float_image(channels, bit_depth):
    """``pixels_in_windows`` turns each band into pixels as it comes (the decoder's memory at large
    sizes): the very pixels of converting the whole float image, cropped inside the padding, for
    gray and 16-bit images too; and ``from_model_output`` in row blocks gives those of one block."""
    import numpy as np

    from vqcodec.imageio import OUTPUT_ROWS, from_model_output, from_tensor
    from vqcodec.priors.autoregress import one_thread
    from vqcodec.testing import tiny_codec_model
    from vqcodec.vqvae import band_windows, decode_in_windows, pixels_in_windows

    vqvae = tiny_codec_model(tile=16).vqvae
    torch.manual_seed(2)
    codes = [torch.randint(0, vqvae.config.num_codes, (1, *s)) for s in vqvae.code_shapes(328, 200)]
    windows = band_windows(328, 200, vqvae.config.stride)

    def to_pixels(t: torch.Tensor) -> np.ndarray:
        return from_model_output(t, channels, bit_depth)

    with one_thread():
        whole = decode_in_windows(vqvae, codes, windows, 321, 197, workers=1)
        got = pixels_in_windows(vqvae, codes, windows, 321, 197, to_pixels, workers=2)
    want = from_model_output(whole, channels, bit_depth)
    assert got.shape == (321, 197, channels) and got.dtype == want.dtype and np.array_equal(got, want)
    one_block = whole.clamp(0, 1)
    one_block = from_tensor(one_block.mean(1, keepdim=True) if channels == 1 else one_block, bit_depth)
    assert 321 > OUTPUT_ROWS and np.array_equal(want, one_block)


# -- the same bits on any thread count (issue 12) ------------------------------------------------------------


def test_pointwise_convolutions_give_the_same_bits_on_any_thread_count(model):
    """oneDNN's multi-threaded 1x1 convolution summed in another order than its single-threaded one, which
    moved a code near a tie between two codebook vectors (one bottom code of a photo differed between 1
    and 2 threads); the VQ-VAE's 1x1 convolutions are one matrix product, whose sums do not move."""
    from vqcodec.imageio import to_model_input
    from vqcodec.testing import smooth_image

    vqvae = model.vqvae
    x = to_model_input(smooth_image(96, 128, seed=5), 8)

    def features() -> list[torch.Tensor]:
        with torch.no_grad():
            xx = vqvae.pad(x) - 0.5
            f0 = vqvae.encoders[0](xx)
            f1 = vqvae.encoders[1](f0)
            return [f0, f1, vqvae.pre_quant[1](f1), vqvae.pre_quant[0](torch.cat([f0, f0[:, :64]], 1))]

    torch.set_num_threads(1)
    one = features()
    torch.set_num_threads(2)  # the conftest fixture puts it back
    two = features()
    for level, (a, b) in enumerate(zip(one, two)):
        assert torch.equal(a, b), f"feature {level}: {(a != b).sum()} values differ between 1 and 2 threads"


def test_pointwise_conv_is_a_drop_in_nn_conv2d():
    """Same initialisation, state-dict keys and outputs (up to float rounding) as nn.Conv2d(cin, cout, 1):
    checkpoints load unchanged. (For the shipped model's shapes the bits are those of the single-threaded
    convolution: the golden file's codes and pixels did not change.)"""
    from vqcodec.vqvae.model import PointwiseConv

    torch.manual_seed(3)
    ours = PointwiseConv(12, 5)
    torch.manual_seed(3)
    theirs = torch.nn.Conv2d(12, 5, 1)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(ours.state_dict()[k], theirs.state_dict()[k]) for k in ours.state_dict())
    x = torch.randn(2, 12, 7, 9)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    ours(x).sum().backward()  # trains like one
    assert ours.weight.grad is not None and ours.weight.grad.shape == ours.weight.shape


@pytest.mark.parametrize("levels", [2, 3])
def test_split_convolutions_give_the_same_codes_on_any_thread_count(levels):
    """The codec encodes with every convolution split into fixed output-channel groups, each on one thread:
    the codes must not depend on how many threads share the groups (thin images included, where oneDNN and
    MKL split their sums across threads), and outside the context the model is an ordinary one."""
    from vqcodec.imageio import to_model_input
    from vqcodec.priors.autoregress import one_thread
    from vqcodec.testing import smooth_image, tiny_codec_model
    from vqcodec.vqvae import split_convolutions

    vqvae = tiny_codec_model(levels=levels, tile=16).vqvae
    for height, width in [(8, 88), (96, 128), (64, 520)]:
        x = to_model_input(smooth_image(height, width, seed=height), 8)
        codes = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)  # the conftest fixture puts it back
            with split_convolutions(threads), one_thread():
                codes[threads] = vqvae.encode(x)
        for threads in (2, 3):
            for level, (a, b) in enumerate(zip(codes[1], codes[threads])):
                assert torch.equal(a, b), f"{height}x{width}, level {level}: {threads} threads differ from 1"
    plain = vqvae.encode(x)  # no context: the ordinary convolutions
    assert [c.shape for c in plain] == [c.shape for c in codes[1]]


def test_nearest_codes_in_chunks_are_the_nearest_and_independent_of_threads():
    """``codes`` computes distances a chunk of rows at a time (large images): every vector still
    gets its nearest codeword, chunks of several sizes included, on one thread or two."""
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(num_codes=64, dim=8)
    z = torch.randn(3, 41, 97, 8)  # 11,931 vectors: six chunks, of 1,988 and 1,989 rows
    flat = z.reshape(-1, 8)
    want = torch.cdist(flat.double(), vq.embed.double()).argmin(1).reshape(3, 41, 97)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.equal(vq.codes(z), want)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(vq.codes(z[:1, :2]), want[:1, :2])  # fewer rows than a chunk: one piece
