"""Tests for ancestral sampling (cached steppers against the recomputing reference sampler) and
classifier-based rejection sampling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vqcodec.errors import VQCodecError
from vqcodec.sampling import candidate_count, draw, rejection_sample, sample_codes, sample_images
from vqcodec.testing import Brightness, naive_sample_codes, tiny_codec_model
from vqcodec.zoo.codec_model import CodecModel

K = 16
CLASSES = 3


@pytest.fixture(scope="module")
def tiny() -> CodecModel:
    """A tiny random-init 2-level codec model with K codes."""
    return tiny_codec_model(num_codes=K)


@pytest.fixture(scope="module")
def class_model() -> CodecModel:
    """The same with class-conditional priors (CLASSES classes)."""
    return tiny_codec_model(num_codes=K, num_classes=CLASSES)


def equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# -- inverse CDF ------------------------------------------------------------------------------------------
def test_draw_is_inverse_cdf() -> None:
    probs = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).expand(8, 4)  # cumulative 1, 3, 6, 10
    u = torch.tensor([0.0, 0.09, 0.1, 0.29, 0.3, 0.59, 0.6, 0.999], dtype=torch.float64)
    assert draw(probs, u).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_draw_frequencies_follow_probabilities() -> None:
    probs = torch.tensor([[1.0, 5.0, 2.0, 12.0]], dtype=torch.float64)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.bincount(draw(probs.expand(20000, 4), u), minlength=4).double() / 20000
    assert torch.allclose(counts, probs[0] / probs.sum(), atol=0.01)


# -- ancestral sampling -----------------------------------------------------------------------------------
def test_shapes_and_range(tiny: CodecModel) -> None:
    codes = sample_codes(tiny, 3, 8, 4, seed=0)
    assert [tuple(c.shape) for c in codes] == [(3, 8, 4), (3, 4, 2)]  # by level, bottom first
    assert all(c.dtype == torch.int64 and int(c.min()) >= 0 and int(c.max()) < K for c in codes)


def test_same_seed_same_samples(tiny: CodecModel) -> None:
    a = sample_codes(tiny, 2, 4, 4, seed=7)
    b = sample_codes(tiny, 2, 4, 4, seed=7)
    assert equal(a, b)
    assert not equal(a, sample_codes(tiny, 2, 4, 4, seed=8))
    assert not torch.equal(a[0][0], a[0][1])  # the samples of one batch differ too


def test_batch_size_does_not_change_samples(tiny: CodecModel) -> None:
    assert equal(sample_codes(tiny, 3, 4, 4, seed=3, batch=1), sample_codes(tiny, 3, 4, 4, seed=3, batch=16))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_equals_naive(tiny: CodecModel, temperature: float) -> None:
    cached = sample_codes(tiny, 2, 6, 4, temperature=temperature, seed=5)
    assert equal(cached, naive_sample_codes(tiny, 2, 6, 4, temperature=temperature, seed=5))


def test_cached_equals_naive_with_classes(class_model: CodecModel) -> None:
    label = torch.tensor([0, 2])
    cached = sample_codes(class_model, 2, 4, 4, label=label, seed=1)
    assert equal(cached, naive_sample_codes(class_model, 2, 4, 4, label=label, seed=1))
    assert not equal(cached, sample_codes(class_model, 2, 4, 4, label=1, seed=1))  # the label matters


def test_low_temperature_is_nearly_greedy(tiny: CodecModel) -> None:
    """At a low temperature the samples of different seeds agree almost everywhere."""
    cold = [sample_codes(tiny, 1, 4, 4, temperature=0.02, seed=s)[1] for s in range(3)]
    warm = [sample_codes(tiny, 1, 4, 4, temperature=1.0, seed=s)[1] for s in range(3)]
    cold_diff = sum(int((c != cold[0]).sum()) for c in cold[1:])
    warm_diff = sum(int((c != warm[0]).sum()) for c in warm[1:])
    assert cold_diff < warm_diff


def test_class_errors(tiny: CodecModel, class_model: CodecModel) -> None:
    with pytest.raises(VQCodecError, match="not class-conditional"):
        sample_codes(tiny, 1, 4, 4, label=0)
    with pytest.raises(VQCodecError, match="class must be in"):
        sample_codes(class_model, 1, 4, 4, label=CLASSES)
    with pytest.raises(VQCodecError, match="multiple of 2"):
        sample_codes(tiny, 1, 5, 4)
    with pytest.raises(VQCodecError, match="temperature"):
        sample_codes(tiny, 1, 4, 4, temperature=0)


def test_sample_images(tiny: CodecModel) -> None:
    images = sample_images(tiny, 2, 16, 24, seed=4)
    assert images.shape == (2, 16, 24, 3) and images.dtype == np.uint8
    assert np.array_equal(images, sample_images(tiny, 2, 16, 24, seed=4))
    with pytest.raises(VQCodecError, match="stride 8"):
        sample_images(tiny, 1, 12, 16)


# -- rejection sampling -----------------------------------------------------------------------------------
def test_candidate_count() -> None:
    assert candidate_count(16, 0.1) == 160
    assert candidate_count(3, 0.1) == 30
    assert candidate_count(2, 0.3) == 7
    assert candidate_count(5, 1.0) == 5
    for bad in (0, -0.5, 1.5):
        with pytest.raises(VQCodecError):
            candidate_count(1, bad)


@pytest.mark.parametrize("target", [0, 1])
def test_rejection_keeps_most_likely(tiny: CodecModel, target: int) -> None:
    n, rate = 2, 0.3
    result = rejection_sample(tiny, Brightness(), target, n, rate, height=16, width=16, seed=2)
    m = math.ceil(n / rate)
    assert result.candidates == m == 7
    assert result.acceptance == pytest.approx(n / m)
    # the candidates are exactly what sample_images draws with the same seed
    candidates = sample_images(tiny, m, 16, 16, seed=2)
    brightness = candidates.reshape(m, -1).mean(1) / 255
    p = torch.tensor(np.stack([1 - brightness, brightness], 1)).softmax(1)[:, target].numpy()
    assert np.allclose(np.sort(p)[::-1][:n], result.scores)
    assert np.array_equal(result.images, candidates[result.indices])
    assert np.allclose(p[result.indices], result.scores)
    rejected = np.setdiff1d(np.arange(m), result.indices)
    assert result.scores.min() >= p[rejected].max()
    assert list(result.scores) == sorted(result.scores, reverse=True)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_rejection_with_torchscript_file(tiny: CodecModel, tmp_path: Path) -> None:
    path = tmp_path / "clf.pt"
    torch.jit.script(Brightness()).save(str(path))
    a = rejection_sample(tiny, path, 1, 2, 0.5, height=16, seed=1)
    b = rejection_sample(tiny, Brightness(), 1, 2, 0.5, height=16, seed=1)
    assert np.array_equal(a.images, b.images) and np.allclose(a.scores, b.scores)
    with pytest.raises(VQCodecError, match="target class"):
        rejection_sample(tiny, Brightness(), 2, 1, 0.5, height=16)
