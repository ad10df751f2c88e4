"""The multi-pass prior: its schedule, causality, and bit-exact agreement of encoder and decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcodec.coding.tile_codec import decode_tiles, encode_tiles
from vqcodec.priors.contract import ordered_probs
from vqcodec.priors.multipass import (
    SCHEDULE_7,
    SCHEDULE_8,
    IntMultipass,
    MultipassConfig,
    MultipassPrior,
    multipass_order,
    pass_map,
)
from vqcodec.priors.registry import build_integer_prior
from vqcodec.priors.wavefront import flat_positions
from vqcodec.testing import extent_mismatches, stepper_mismatches

K = 16


def random_multipass(seed: int, cond_levels: int = 0, classes: int = 0, **cfg) -> tuple:
    """(integer prior, codes (3, 9, 13), cond, label) of a random tiny multi-pass prior with
    weights large enough that every input moves the output."""
    torch.manual_seed(seed)
    base = dict(num_codes=K, channels=8, embed_dim=4, window=5, blocks=1, cond_channels=8, cond_blocks=1)
    config = MultipassConfig(cond_levels=cond_levels, num_classes=classes, **{**base, **cfg})
    prior = MultipassPrior(config)
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.3)
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (3, 9, 13), generator=gen)
    cond = [torch.randint(0, K, (3, -(-9 >> i + 1), -(-13 >> i + 1)), generator=gen)
            for i in range(cond_levels)] or None
    label = torch.randint(0, classes, (3,), generator=gen) if classes else None
    return IntMultipass.from_float(prior, [(codes, cond, label)]), prior, codes, cond, label


@pytest.mark.parametrize("schedule,counts", [(SCHEDULE_7, [4, 4, 8, 8, 8, 16, 16]),
                                             (SCHEDULE_8, [1, 1, 2, 4, 8, 16, 16, 16])])
def test_a_schedule_visits_every_position_once(schedule, counts) -> None:
    order = multipass_order(schedule, 9, 13)
    assert len(order) == len(counts)
    seen = np.concatenate(order)
    assert len(seen) == 9 * 13 and len({tuple(p) for p in seen.tolist()}) == 9 * 13
    groups = pass_map(schedule, 8, 8)
    assert [int((groups == g).sum()) for g in range(len(counts))] == counts


@pytest.mark.parametrize("cond_levels,classes,cfg", [(0, 0, {}), (1, 0, {}), (1, 3, {}), (2, 0, {}),
                                                     (1, 0, dict(schedule=SCHEDULE_8, window=9)),
                                                     (1, 3, dict(act_bits=8)),
                                                     (2, 0, dict(schedule=SCHEDULE_8, window=9, act_bits=8))])
def test_the_decoders_passes_give_the_encoders_probabilities_bit_for_bit(cond_levels: int, classes: int, cfg) -> None:
    net, _, codes, cond, label = random_multipass(cond_levels + 3 * classes, cond_levels, classes, **cfg)
    parallel = net.parallel_probs(codes, cond, label)
    assert stepper_mismatches(net.stepper(3, 9, 13, cond, label), parallel, codes) == []


@pytest.mark.parametrize("window,schedule,bits", [(3, SCHEDULE_7, 16), (5, SCHEDULE_7, 16), (9, SCHEDULE_7, 16),
                                                  (9, SCHEDULE_8, 16), (9, SCHEDULE_8, 8)])
def test_a_codes_probabilities_ignore_its_own_pass_and_later_ones(window: int, schedule, bits: int) -> None:
    """Perturbation: changing every code of pass >= g leaves pass g's probabilities alone (integer
    twin and float model), and changing an earlier pass's codes does move them."""
    net, prior, codes, cond, _ = random_multipass(7, cond_levels=1, window=window, schedule=schedule, act_bits=bits)
    groups = torch.from_numpy(pass_map(net.config.schedule, 9, 13))
    base_int = net.parallel_probs(codes, cond)
    with torch.no_grad():
        base_float = prior(codes, cond)
    moved_by_earlier = 0
    for g in range(net.config.passes):
        changed = torch.where(groups >= g, (codes + 1 + torch.randint(0, K - 1, codes.shape)) % K, codes)
        at = groups == g
        assert torch.equal(net.parallel_probs(changed, cond)[:, at], base_int[:, at])
        with torch.no_grad():
            assert torch.allclose(prior(changed, cond)[:, :, at], base_float[:, :, at], atol=1e-5)
        if g:
            earlier = torch.where(groups < g, (codes + 1) % K, codes)
            moved_by_earlier += not torch.equal(net.parallel_probs(earlier, cond)[:, at], base_int[:, at])
    # a 3x3 window does not reach the 4x4 lattice that passes 1 and 2 are predicted from
    assert moved_by_earlier == net.config.passes - (3 if window == 3 else 1)


@pytest.mark.parametrize("sizes,bits", [([[9, 13], [6, 13], [9, 5]], 16), ([[6, 13], [9, 5], [6, 13]], 16),
                                        ([[1, 1], [9, 13], [3, 2]], 16), ([[6, 13], [9, 5], [1, 1]], 8)])
def test_maps_of_several_extents_step_as_if_each_were_alone(sizes, bits: int) -> None:
    """A batch padded to one frame gives each map, inside its extent, exactly the probabilities of the
    parallel pass on that map alone, whatever codes are recorded outside it."""
    net, _, codes, cond, label = random_multipass(11, cond_levels=1, classes=2, act_bits=bits)
    assert extent_mismatches(net, codes, cond, label, torch.tensor(sizes), K) == []


@pytest.mark.parametrize("bits", [16, 8])
def test_one_thread_and_two_give_the_same_integers(bits: int) -> None:
    net, _, codes, cond, _ = random_multipass(5, cond_levels=1, act_bits=bits)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = net.parallel_probs(codes, cond)
        torch.set_num_threads(2)
        two = net.parallel_probs(codes, cond)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize("bits,tolerance", [(16, 0.01), (8, 0.03)])
def test_the_integer_twin_is_close_to_the_float_model_and_reloads_from_its_tensors(bits: int, tolerance) -> None:
    net, prior, codes, cond, _ = random_multipass(3, cond_levels=1, act_bits=bits)
    with torch.no_grad():
        float_bits = torch.nn.functional.cross_entropy(prior.eval()(codes, cond), codes).item()
    probs = net.parallel_probs(codes, cond)
    int_bits = -torch.log(probs.gather(-1, codes[..., None]) / probs.sum(-1, keepdim=True)).mean().item()
    assert abs(int_bits - float_bits) < tolerance * float_bits
    again = build_integer_prior(net.config.to_dict(), net.state())
    assert torch.equal(again.parallel_probs(codes, cond), probs)


def test_the_8_bit_twins_float32_sums_are_exact() -> None:
    """act_bits 8 keeps every sum below 2**24, so its float32 layers give exactly the integers that
    the same network gives with float64 sums (requantized as in float32)."""
    from vqcodec.priors.int_pixelcnn import requant

    net, _, codes, cond, label = random_multipass(13, cond_levels=2, classes=3, act_bits=8)
    assert net.dtype == torch.float32 and net.state()["logits.w"].dtype == torch.int8
    wide = IntMultipass(net.config, net.state())
    wide.dtype, wide.table = torch.float64, wide.table.double()
    wide.t = {k: v.double() for k, v in wide.t.items()}
    wide.rows = {k: v.double() for k, v in wide.rows.items()}
    sums = []

    def requant_as_float32(acc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        sums.append(float(acc.abs().max()))
        return requant(acc.float(), m.float(), wide.q).double()

    wide._requant = requant_as_float32
    assert torch.equal(net.parallel_probs(codes, cond, label), wide.parallel_probs(codes, cond, label))
    assert 0 < max(sums) < 1 << 24


def test_an_8_bit_prior_whose_sums_could_pass_2_to_the_24_is_refused() -> None:
    from vqcodec.errors import VQCodecError

    net, *_ = random_multipass(4, cond_levels=1, act_bits=8)
    tensors = net.state()
    tensors["blocks.0.a.b"] = tensors["blocks.0.a.b"] + (1 << 24)
    with pytest.raises(VQCodecError, match="2\\*\\*24"):
        build_integer_prior(net.config.to_dict(), tensors)
    tensors = net.state()
    tensors["logits.w"] = tensors["logits.w"].to(torch.int16) * 2
    with pytest.raises(VQCodecError, match="8-bit range"):
        build_integer_prior(net.config.to_dict(), tensors)


def test_a_damaged_tensor_is_refused_by_name() -> None:
    from vqcodec.errors import VQCodecError

    net, *_ = random_multipass(2)
    tensors = net.state()
    tensors["context.w"] = tensors["context.w"][:, :, :3]
    with pytest.raises(VQCodecError, match="context.w"):
        build_integer_prior(net.config.to_dict(), tensors)
    with pytest.raises(VQCodecError, match="passes"):
        net.decode_order(4, 4, "raster")


def test_the_encoders_ordered_probabilities_are_the_parallel_ones_in_decoding_order() -> None:
    net, _, codes, cond, _ = random_multipass(9, cond_levels=1)
    rows, cols = flat_positions(net.decode_order(9, 13))
    expected = net.parallel_probs(codes, cond)[:, torch.from_numpy(rows), torch.from_numpy(cols)]
    assert torch.equal(net.ordered_probs(codes, cond), expected)
    assert torch.equal(ordered_probs(net, codes, cond), expected)


@pytest.mark.parametrize("workers", [2, 3])
def test_tiles_encoded_on_several_threads_give_the_same_bytes_and_decode(workers: int) -> None:
    """encode_tiles' workers split the tiles (of three shapes here) differently, never the bytes."""
    bottom, _, _, _, _ = random_multipass(21, cond_levels=1)
    top, _, _, _, _ = random_multipass(22)
    gen = torch.Generator().manual_seed(3)
    maps = [torch.randint(0, K, (1, 40, 56), generator=gen), torch.randint(0, K, (1, 20, 28), generator=gen)]
    one = encode_tiles([bottom, top], maps, 16)
    assert len(one) == 12
    assert encode_tiles([bottom, top], maps, 16, workers=workers) == one
    decoded = decode_tiles([bottom, top], [(40, 56), (20, 28)], one, 16)
    assert all(torch.equal(d, m) for d, m in zip(decoded, maps, strict=True))
