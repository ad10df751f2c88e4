"""Wavefront decoding (format version 2): a prior without attention decodes every code of a
wavefront in one step, with exactly the encoder's probabilities; version 1 files still decode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vqcodec.codec import compress, decompress
from vqcodec.coding.bitstream import Bitstream, pack, unpack
from vqcodec.coding.tile_codec import decode_tiles, encode_tiles
from vqcodec.coding.tiles import tile_grid
from vqcodec.errors import VQCodecError
from vqcodec.imageio import read_image, to_model_input
from vqcodec.priors.int_pixelcnn import IntPixelCNN
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig
from vqcodec.priors.wavefront import WavefrontStepper, flat_positions, raster_order, wavefront_order
from vqcodec.sampling import sample_codes
from vqcodec.testing import (
    extent_mismatches,
    naive_sample_codes,
    smooth_image,
    stepper_mismatches,
    tiny_codec_model,
)
from vqcodec.zoo.codec_model import load_codec_model

SAMPLE = "vqcodec/samples/endeavour.png"


def test_orders_visit_every_position_once() -> None:
    for h, w, reach in ((1, 1, 5), (7, 3, 2), (4, 9, 0), (32, 32, 5)):
        for order in (wavefront_order(h, w, reach), raster_order(h, w)):
            rows, cols = flat_positions(order)
            assert sorted(zip(rows.tolist(), cols.tolist())) == [(r, c) for r in range(h) for c in range(w)]
    assert len(wavefront_order(32, 32, 5)) == 32 + 6 * 31


def random_int_prior(seed: int, **cfg) -> tuple[IntPixelCNN, torch.Tensor, list | None, torch.Tensor | None]:
    """A random integer prior (weights perturbed so its context matters) and random inputs."""
    torch.manual_seed(seed)
    config = PriorConfig(num_codes=16, channels=8, dropout=0.0, cond_channels=8, cond_blocks=1, **cfg)
    prior = PixelCNNPrior(config).eval()
    for p in prior.parameters():
        p.data += torch.randn_like(p) * 0.1
    codes = torch.randint(0, 16, (3, 9, 13))
    cond = [torch.randint(0, 16, (3, 5, 7))] if config.cond_levels else None
    label = torch.randint(0, config.num_classes, (3,)) if config.num_classes else None
    return IntPixelCNN.from_float(prior, [(codes, cond, label)]), codes, cond, label


@pytest.mark.parametrize("cfg", [
    dict(layers=1),
    dict(layers=3, cond_levels=1, num_classes=2),
    dict(layers=4, v_rows=3, v_cols=5, h_cols=2),
    dict(layers=2, v_cols=1, h_cols=4, out_blocks=0),
])
def test_wavefront_probabilities_equal_the_parallel_pass(cfg) -> None:
    net, codes, cond, label = random_int_prior(len(cfg), **cfg)
    parallel = net.parallel_probs(codes, cond, label)
    stepper = net.stepper(3, 9, 13, cond, label)
    assert len(stepper.order) < 9 * 13
    assert stepper_mismatches(stepper, parallel, codes) == []


def test_an_order_tighter_than_the_priors_reach_is_refused() -> None:
    net, codes, cond, label = random_int_prior(0, layers=3, v_cols=5)
    assert net.reach == 6
    with pytest.raises(VQCodecError, match="reach is larger"):
        WavefrontStepper(net, 3, 9, 13, cond, label, 1.0, net.reach - 1)
    WavefrontStepper(net, 3, 9, 13, cond, label, 1.0, net.reach + 2)  # a wider wavefront is merely slower


def test_priors_with_attention_decode_in_raster_order() -> None:
    net, codes, cond, label = random_int_prior(1, layers=2, attention_every=1, num_classes=3)
    assert net.reach is None and len(net.decode_order(4, 5)) == 20
    assert stepper_mismatches(net.stepper(3, 9, 13, cond, label), net.parallel_probs(codes, cond, label), codes) == []
    with pytest.raises(VQCodecError, match="raster order only"):
        WavefrontStepper(net, 3, 9, 13, cond, label, 1.0, 5)


@pytest.mark.parametrize("cfg", [
    dict(layers=2, attention_every=1, num_classes=3),
    dict(layers=3, attention_every=3, heads=4, cond_levels=1),
    dict(layers=4, attention_every=2, v_rows=3, v_cols=5, h_cols=2),
])
def test_wavefront_attention_decodes_along_the_wavefront_exactly(cfg) -> None:
    """Attention limited to positions no later on the wavefront (``attention_mask``): the prior has
    the reach of its stacks, its stepper gives the parallel pass's probabilities in far fewer steps
    (and in raster order too), and the tensors record the reach, so the fingerprint does."""
    net, codes, cond, label = random_int_prior(len(cfg) + 3, attention_wavefront=True, **cfg)
    assert net.reach == net.config.stack_reach and "attn.reach" in net.state()
    parallel = net.parallel_probs(codes, cond, label)
    for order in ("fast", "raster"):
        stepper = net.stepper(3, 9, 13, cond, label, order=order)
        assert len(stepper.order) == (9 * 13 if order == "raster" else 13 + (net.reach + 1) * 8)
        assert stepper_mismatches(stepper, parallel, codes) == [], order
    raster, _, _, _ = random_int_prior(len(cfg) + 3, **cfg)  # the same weights, attention in raster order
    assert not torch.equal(raster.parallel_probs(codes, cond, label), parallel)  # the mask matters here
    with pytest.raises(VQCodecError, match="reach is larger"):
        WavefrontStepper(net, 3, 9, 13, cond, label, 1.0, net.reach - 1)


def test_wavefront_attention_sees_no_code_decoded_later() -> None:
    """The float model: the logits at a position do not depend on any code decoded at or after it in
    wavefront order (gradients through the embedded input), and do depend on some decoded before."""
    from vqcodec.priors.pixelcnn import attention_mask

    torch.manual_seed(5)
    prior = PixelCNNPrior(PriorConfig(num_codes=8, channels=8, layers=3, attention_every=1, dropout=0.0,
                                      out_blocks=1, attention_wavefront=True)).double().eval()
    hh, ww, reach = 5, 9, prior.config.stack_reach
    e = prior.embed(torch.randint(0, 8, (1, hh, ww))).permute(0, 3, 1, 2).detach().clone().requires_grad_(True)
    logits = prior.forward_embedded(e)
    step = {(r, c): c + (reach + 1) * r for r in range(hh) for c in range(ww)}
    for (r, c), t in step.items():
        (grad,) = torch.autograd.grad(logits[0, :, r, c].sum(), e, retain_graph=True)
        moved = grad[0].abs().sum(0) > 0
        later = torch.tensor([[step[(rr, cc)] >= t for cc in range(ww)] for rr in range(hh)])
        assert not (moved & later).any(), (r, c)
        assert moved.any() or (r, c) == (0, 0)
    assert attention_mask(2, 9, reach).sum() > attention_mask(2, 9, None).sum()  # some of the row above is hidden


def test_shipped_bottom_prior_wavefront_is_exact_on_real_codes() -> None:
    m = load_codec_model()
    codes = m.vqvae.encode(to_model_input(read_image(SAMPLE).pixels[:128, :128], 8))
    bottom = m.priors[0]
    parallel = bottom.parallel_probs(codes[0], [codes[1]])
    stepper = bottom.stepper(1, 32, 32, [codes[1]])
    assert len(stepper.order) == 218
    assert stepper_mismatches(stepper, parallel, codes[0]) == []


def test_version_1_and_2_files_decode_to_the_same_pixels() -> None:
    m = load_codec_model()
    pixels = read_image(SAMPLE).pixels[:96, :160]
    stream = unpack(compress(pixels, m))  # version 4: version 2's symbols, decoded in bands (one here)
    stream = dataclasses.replace(stream, header=dataclasses.replace(stream.header, version=2))
    v2 = pack(stream)
    codes = m.vqvae.encode(to_model_input(pixels, 8))
    v1 = pack(Bitstream(dataclasses.replace(stream.header, version=1),
                        tuple(encode_tiles(m.priors, codes, stream.header.tile_size, "raster"))))
    assert v1 != v2 and abs(len(v1) - len(v2)) <= 0.01 * len(v1)
    assert np.array_equal(decompress(v1, m), decompress(v2, m))
    shapes = [tuple(c.shape[1:]) for c in codes]
    try:  # the order is part of the format: raster symbols read as wavefronts give other codes
        decoded = decode_tiles(m.priors, shapes, list(unpack(v1).tiles), stream.header.tile_size, order="fast")
    except VQCodecError:
        return
    assert not all(torch.equal(a, b) for a, b in zip(decoded, codes))


def test_tiles_of_mixed_shapes_and_more_than_a_batch_round_trip(monkeypatch) -> None:
    import vqcodec.coding.tile_codec as tile_codec

    monkeypatch.setattr(tile_codec, "BATCH_TILES", 2)
    m = tiny_codec_model(levels=3, tile=8)
    pixels = smooth_image(72, 104, 5)  # 18 x 26 bottom codes: full, cut and corner tiles
    codes = m.vqvae.encode(to_model_input(pixels, 8))
    payloads = encode_tiles(m.priors, codes, 8)
    decoded = decode_tiles(m.priors, [tuple(c.shape[1:]) for c in codes], payloads, 8)
    assert all(torch.equal(a, b) for a, b in zip(decoded, codes))
    monkeypatch.setattr(tile_codec, "BATCH_TILES", 32)
    assert encode_tiles(m.priors, codes, 8) == payloads  # batching never changes the bytes


def test_sampling_gives_the_same_codes_in_every_order() -> None:
    m = tiny_codec_model(levels=2, num_classes=2)
    fast = sample_codes(m, 3, 8, 12, label=1, seed=4)
    raster = sample_codes(m, 3, 8, 12, label=1, seed=4, order="raster")
    naive = naive_sample_codes(m, 3, 8, 12, label=1, seed=4)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(fast, raster, naive))


@pytest.mark.parametrize("cfg", [
    dict(layers=3, cond_levels=1, num_classes=2),
    dict(layers=2, attention_every=1, cond_levels=1),
    dict(layers=4, v_rows=3, v_cols=5, h_cols=2),
])
@pytest.mark.parametrize("sizes", [[[9, 13], [6, 13], [9, 5]], [[6, 13], [9, 5], [6, 13]]])
def test_maps_of_several_extents_step_as_if_each_were_alone(cfg, sizes) -> None:
    """A batch padded to one frame (tiles cut by the image's edge ride with whole tiles) gives every
    map, inside its extent, exactly the probabilities of the parallel pass on that map alone, even
    with random codes recorded outside it; also when maps of one extent are not side by side in the
    batch (their conditioning is computed together and scattered into the frame)."""
    net, codes, cond, label = random_int_prior(len(cfg) + 7, **cfg)
    assert extent_mismatches(net, codes, cond, label, torch.tensor(sizes), 16) == []


def test_edge_tiles_decode_in_the_batch_of_whole_tiles(monkeypatch) -> None:
    """Tiles of 4 shapes decode in one batch, to the codes the encoder wrote."""
    import vqcodec.coding.tile_codec as tile_codec

    m = tiny_codec_model(levels=2, tile=8)
    pixels = smooth_image(56, 88, 3)  # 14 x 22 bottom codes: 8x8, 8x6, 6x8 and 6x6 tiles
    codes = m.vqvae.encode(to_model_input(pixels, 8))
    payloads = encode_tiles(m.priors, codes, 8)
    calls = []
    real = tile_codec.generate
    monkeypatch.setattr(tile_codec, "generate", lambda *a, **k: calls.append(k["extents"]) or real(*a, **k))
    decoded = decode_tiles(m.priors, [tuple(c.shape[1:]) for c in codes], payloads, 8)
    assert all(torch.equal(a, b) for a, b in zip(decoded, codes))
    assert len(calls) == 1 and len(torch.unique(calls[0][0], dim=0)) == 4


def test_batches_decoded_in_worker_processes_give_the_same_codes(monkeypatch) -> None:
    """With two threads the batches go to two forked processes: the same codes as one process,
    and a damaged tile still gives one clean VQCodecError."""
    import vqcodec.coding.tile_codec as tile_codec
    from vqcodec.workers import fork_workers

    monkeypatch.setattr(tile_codec, "BATCH_TILES", 2)
    m = tiny_codec_model(levels=2, tile=8)
    codes = m.vqvae.encode(to_model_input(smooth_image(56, 88, 4), 8))
    shapes = [tuple(c.shape[1:]) for c in codes]
    payloads = encode_tiles(m.priors, codes, 8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert fork_workers(torch.device("cpu")) == 2
        assert len(tile_codec._decode_batches(tile_grid(*shapes[0], 8), None, 2)) == 4  # 6 tiles: 3 batches, made even
        decoded = decode_tiles(m.priors, shapes, payloads, 8)
        assert all(torch.equal(a, b) for a, b in zip(decoded, codes))
        bad = list(payloads)
        bad[4] = b"\xff" * 3  # not whole 32-bit words: the worker refuses it
        with pytest.raises(VQCodecError, match="whole number of 32-bit words"):
            decode_tiles(m.priors, shapes, bad, 8)
    finally:
        torch.set_num_threads(before)


def test_two_threads_decoding_different_files_at_once_get_their_own_codes(monkeypatch) -> None:
    """Each decode hands its workers its own job (no shared state between concurrent decodes)."""
    import threading

    import vqcodec.coding.tile_codec as tile_codec

    monkeypatch.setattr(tile_codec, "BATCH_TILES", 2)
    m = tiny_codec_model(levels=2, tile=8)
    jobs = []
    for seed in (5, 6):
        codes = m.vqvae.encode(to_model_input(smooth_image(40, 72, seed), 8))
        jobs.append((codes, encode_tiles(m.priors, codes, 8)))
    assert not torch.equal(jobs[0][0][0], jobs[1][0][0])
    results: dict[int, list] = {}

    def run(k: int) -> None:
        codes, payloads = jobs[k]
        results[k] = decode_tiles(m.priors, [tuple(c.shape[1:]) for c in codes], payloads, 8)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    for k, (codes, _) in enumerate(jobs):
        assert all(torch.equal(a, b) for a, b in zip(results[k], codes))
