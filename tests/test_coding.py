"""Tests for ``vqcodec.coding``: the tile grid, exact code round trips through the tile codec (2 and 3
levels, batched and single tiles), coded size against the model's cross-entropy, and the range coder's
handling of invalid data. The `.vqc` container (round trips, the exact byte layout, every refusal,
fuzzing) is tested in tests/test_bitstream.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcodec.coding.bitstream import unpack
from vqcodec.coding.range_coder import TileDecoders
from vqcodec.coding.tile_codec import decode_tiles, encode_tiles
from vqcodec.coding.tiles import tile_grid
from vqcodec.errors import VQCodecError
from vqcodec.testing import assert_codes_equal, code_shapes, image_codes, smooth_image
from vqcodec.zoo.codec_model import CodecModel

# --- tiles and the tile codec ------------------------------------------------------------------


def coded_bits_and_cross_entropy(m: CodecModel, codes: list[torch.Tensor], tile: int) -> tuple[int, float, int]:
    """(payload bits, sum of -log2 p(code) under the normalised encoder probabilities, tiles)."""
    payloads = encode_tiles(m.priors, codes, tile)
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], tile)
    assert len(payloads) == len(tiles)
    ce = 0.0
    for t in tiles:
        for level in reversed(range(m.levels)):
            win = [codes[lv][0][t.window(lv)][None] for lv in range(level, m.levels)]
            probs = m.priors[level].parallel_probs(win[0], win[1:] or None)[0]
            p = probs / probs.sum(-1, keepdim=True)
            ce -= float(torch.log2(p.gather(-1, win[0][0][..., None])).sum())
    return 8 * sum(len(p) for p in payloads), ce, len(tiles)


@pytest.mark.parametrize(("height", "width", "seed"), [(16, 16, 1), (40, 72, 2), (72, 40, 3), (100, 36, 4)])
def test_code_round_trip_is_exact(model, height, width, seed):
    codes = image_codes(model, smooth_image(height, width, seed))
    assert code_shapes(codes) == model.vqvae.code_shapes(height, width)
    assert len(torch.unique(codes[0])) > 1  # a real code map, not a constant one
    payloads = encode_tiles(model.priors, codes, model.tile)
    assert_codes_equal(decode_tiles(model.priors, code_shapes(codes), payloads, model.tile), codes)


@pytest.mark.parametrize("tile", [16, 8, 4])
def test_three_level_code_round_trip(model3, tile):
    codes = image_codes(model3, smooth_image(48, 64, seed=11))
    assert code_shapes(codes) == [(12, 16), (6, 8), (3, 4)]
    assert all(len(torch.unique(c)) > 1 for c in codes[:2])
    payloads = encode_tiles(model3.priors, codes, tile)
    assert_codes_equal(decode_tiles(model3.priors, code_shapes(codes), payloads, tile), codes)
    # uniformly random codes exercise every symbol and the conditioning far from the data
    gen = torch.Generator().manual_seed(tile)
    rand = [torch.randint(0, 32, (1, h, w), generator=gen) for h, w in code_shapes(codes)]
    payloads = encode_tiles(model3.priors, rand, tile)
    assert_codes_equal(decode_tiles(model3.priors, code_shapes(rand), payloads, tile), rand)


def test_batched_tiles_decode_like_single_tiles(model):
    tile, priors = 4, model.priors
    codes = image_codes(model, smooth_image(40, 56, seed=31))
    shapes = code_shapes(codes)
    tiles = tile_grid(shapes[0][0], shapes[0][1], tile)
    assert len(tiles) == 12 and sum((t.height, t.width) == (4, 4) for t in tiles) == 6  # 4 shape groups
    payloads = encode_tiles(priors, codes, tile)
    batched = decode_tiles(priors, shapes, payloads, tile)
    assert_codes_equal(batched, codes)
    for t, payload in zip(tiles, payloads):
        own = [c[:, t.window(lv)[0], t.window(lv)[1]] for lv, c in enumerate(codes)]
        assert encode_tiles(priors, own, tile) == [payload]  # the encoder does not depend on the batch either
        single = decode_tiles(priors, code_shapes(own), [payload], tile)
        assert_codes_equal(single, own)
        assert_codes_equal([b[:, t.window(lv)[0], t.window(lv)[1]] for lv, b in enumerate(batched)], single)


@pytest.mark.parametrize("tile", [32, 8])
def test_coded_size_is_close_to_cross_entropy(model, tile):
    codes = image_codes(model, smooth_image(64, 96, seed=51))
    bits, ce, n_tiles = coded_bits_and_cross_entropy(model, codes, tile)
    assert bits <= 1.005 * ce + 64 * n_tiles, f"{bits} payload bits for {ce:.1f} bits of cross-entropy"
    assert bits >= 0.98 * ce  # a coder cannot beat its model by much: guards the measurement itself


def test_coded_size_three_levels(model3):
    codes = image_codes(model3, smooth_image(48, 64, seed=52))
    bits, ce, n_tiles = coded_bits_and_cross_entropy(model3, codes, 8)
    assert 0.98 * ce <= bits <= 1.005 * ce + 64 * n_tiles


# --- the range coder ---------------------------------------------------------------------------


def test_invalid_range_coder_data_is_a_vqcodec_error():
    """constriction reports some invalid streams with an AssertionError (found by
    benchmarks/fuzz_codec.py); the decoder must turn every such failure into VQCodecError."""
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(200):
        probs = torch.from_numpy(rng.random((1, 4, 512)) ** 8 * 2**20 + 1)  # a step of 4 positions
        words = rng.integers(0, 2**32, size=int(rng.integers(1, 4)), dtype=np.uint64).astype("<u4")
        decoders = TileDecoders([words.tobytes()])
        try:
            for _ in range(50):
                decoders.decode(probs)
        except VQCodecError:
            refused += 1
    assert refused > 0


# --- bounds that keep untrusted files from allocating (issue 12) ----------------------------------------------


def test_min_bits_per_code_is_below_what_the_range_coder_writes(model) -> None:
    """The short-payload check refuses a tile of n codes in w words when n * min_bits_per_code > 32 w;
    n codes of the likeliest symbol under the shipped prior's sharpest distribution (2**20 against 1
    for every other code) must never be coded in fewer words than that."""
    from vqcodec import codec as codec_module
    from vqcodec.coding.range_coder import encode_symbols

    bits = codec_module.min_bits_per_code(model.priors[0])
    assert 0.0007 < bits < 0.000704  # -log2(2**20 / (2**20 + 511)), less two units of 2**-24
    probs = np.ones(512)
    probs[0] = 2.0**20
    for n in (1, 100, 10_000, 45_000, 46_000, 100_000, 500_000):
        words = len(encode_symbols([(np.zeros(n, np.int32), torch.from_numpy(np.tile(probs, (n, 1))))])) // 4
        assert n * bits < 32 * words, (n, words)


@pytest.mark.slow
def test_rate_aware_bottom_codes_cost_fewer_bits_decode_exactly_and_ignore_threads(model):
    """``compress(rdo=...)``: the bottom codes weigh bits against distance. The file is smaller than
    with the nearest codes, decodes to exactly the codes chosen, and is the same on 1 and 2 threads;
    the codes above the bottom are the nearest ones either way."""
    from vqcodec.codec import compress, decompress

    pixels = smooth_image(96, 128, seed=61)
    nearest = compress(pixels, model)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = compress(pixels, model, rdo=0.05)
        torch.set_num_threads(2)
        two = compress(pixels, model, rdo=0.05)
    finally:
        torch.set_num_threads(before)
    assert one == two and len(one) < len(nearest)
    head = unpack(one).header
    decoded = decode_tiles(model.priors, model.vqvae.code_shapes(96, 128), list(unpack(one).tiles), head.tile_size,
                           order=head.symbol_order)
    chosen = image_codes(model, pixels, rdo=0.05)
    assert_codes_equal(decoded, chosen)
    assert torch.equal(chosen[1], image_codes(model, pixels)[1])
    assert decompress(one, model).shape == pixels.shape
    assert compress(pixels, model, rdo=0) == nearest


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.02", True])
def test_a_bad_rdo_weight_is_refused(model, bad):
    from vqcodec.codec import compress

    with pytest.raises(VQCodecError, match="rdo"):
        compress(smooth_image(16, 16, seed=1), model, rdo=bad)
