"""The multi-pass prior: its schedule, causality, and bit-exact agreement of encoder and decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
                                                     (1, 0, dict(schedule=SCHEDULE_8, window=9))])
def test_the_decoders_passes_give_the_encoders_probabilities_bit_for_bit(cond_levels: int, classes: int, cfg) -> None:
    net, _, codes, cond, label = random_multipass(cond_levels + 3 * classes, cond_levels, classes, **cfg)
    parallel = net.parallel_probs(codes, cond, label)
    assert stepper_mismatches(net.stepper(3, 9, 13, cond, label), parallel, codes) == []


@pytest.mark.parametrize("window,schedule", [(3, SCHEDULE_7), (5, SCHEDULE_7), (9, SCHEDULE_7), (9, SCHEDULE_8)])
def test_a_codes_probabilities_ignore_its_own_pass_and_later_ones(window: int, schedule) -> None:
    """Perturbation: changing every code of pass >= g leaves pass g's probabilities alone (integer
    twin and float model), and changing an earlier pass's codes does move them."""
    net, prior, codes, cond, _ = random_multipass(7, cond_levels=1, window=window, schedule=schedule)
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


@pytest.mark.parametrize("sizes", [[[9, 13], [6, 13], [9, 5]], [[6, 13], [9, 5], [6, 13]], [[1, 1], [9, 13], [3, 2]]])
def test_maps_of_several_extents_step_as_if_each_were_alone(sizes) -> None:
    """A batch padded to one frame gives each map, inside its extent, exactly the probabilities of the
    parallel pass on that map alone, whatever codes are recorded outside it."""
    net, _, codes, cond, label = random_multipass(11, cond_levels=1, classes=2)
    assert extent_mismatches(net, codes, cond, label, torch.tensor(sizes), K) == []


def test_one_thread_and_two_give_the_same_integers() -> None:
    net, _, codes, cond, _ = random_multipass(5, cond_levels=1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = net.parallel_probs(codes, cond)
        torch.set_num_threads(2)
        two = net.parallel_probs(codes, cond)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_the_integer_twin_is_close_to_the_float_model_and_reloads_from_its_tensors() -> None:
    net, prior, codes, cond, _ = random_multipass(3, cond_levels=1)
    with torch.no_grad():
        float_bits = torch.nn.functional.cross_entropy(prior.eval()(codes, cond), codes).item()
    probs = net.parallel_probs(codes, cond)
    int_bits = -torch.log(probs.gather(-1, codes[..., None]) / probs.sum(-1, keepdim=True)).mean().item()
    assert abs(int_bits - float_bits) < 0.01 * float_bits
    again = build_integer_prior(net.config.to_dict(), net.state())
    assert torch.equal(again.parallel_probs(codes, cond), probs)


def test_a_damaged_tensor_is_refused_by_name() -> None:
    from vqcodec.errors import VQCodecError

    net, *_ = random_multipass(2)
    tensors = net.state()
    tensors["context.w"] = tensors["context.w"][:, :, :3]
    with pytest.raises(VQCodecError, match="context.w"):
        build_integer_prior(net.config.to_dict(), tensors)
    with pytest.raises(VQCodecError, match="passes"):
        net.decode_order(4, 4, "raster")
