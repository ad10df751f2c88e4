"""Tests for ancestral sampling, classifier-based rejection sampling and ``vqcodec sample``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.main import main as cli_main
from vqcodec.bundle import CodecModel, load_codec_model
from vqcodec.checkpoint import save_model
from vqcodec.errors import VQCodecError
from vqcodec.intprior import IntPrior
from vqcodec.prior import PixelCNNPrior, PriorConfig
from vqcodec.sampling import (
    candidate_count,
    draw,
    image_grid,
    naive_sample_codes,
    rejection_sample,
    sample_codes,
    sample_images,
)
from vqcodec.vqvae import VQVAE, VQVAEConfig

K = 16
CLASSES = 3




def tiny_parts(num_classes: int, seed: int = 0) -> tuple[VQVAE, list[IntPrior], dict]:
    """A random-init tiny VQ-VAE and integer priors (bottom conditioned on top, top with attention),
    quantized on random codes; plus the configuration a codec model file stores."""
    torch.manual_seed(seed)
    vq_cfg = VQVAEConfig(hidden=16, res_channels=8, res_blocks=1, num_codes=K, code_dim=4, levels=2)
    vqvae = VQVAE(vq_cfg).eval()
    common = dict(num_codes=K, channels=8, layers=2, heads=2, dropout=0.0, out_blocks=1, num_classes=num_classes)
    top = PixelCNNPrior(PriorConfig(attention_every=1, **common)).eval()
    bottom = PixelCNNPrior(PriorConfig(cond_levels=1, cond_channels=8, cond_blocks=1, **common)).eval()
    g = torch.Generator().manual_seed(seed)
    b, t = torch.randint(0, K, (8, 8, 8), generator=g), torch.randint(0, K, (8, 4, 4), generator=g)
    lab = torch.randint(0, CLASSES, (8,), generator=g) if num_classes else None
    priors = [IntPrior.from_float(bottom, [(b, [t], lab)]), IntPrior.from_float(top, [(t, None, lab)])]
    config = {"name": "tiny", "tile": 8, "vqvae": vq_cfg.to_dict(),
              "priors": [bottom.config.to_dict(), top.config.to_dict()]}
    return vqvae, priors, config


def tiny_model(num_classes: int = 0) -> CodecModel:
    vqvae, priors, _ = tiny_parts(num_classes)
    return CodecModel(vqvae, priors, 8, fingerprint=b"0" * 16, name="tiny", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def model() -> CodecModel:
    return tiny_model()


@pytest.fixture(scope="module")
def class_model() -> CodecModel:
    return tiny_model(CLASSES)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """The tiny model as a codec model file (the layout ``bundle`` loads)."""
    vqvae, priors, config = tiny_parts(0)
    tensors = {f"vqvae.{k}": v for k, v in vqvae.state_dict().items()}
    for level, net in enumerate(priors):
        tensors.update({f"prior{level}.{k}": v for k, v in net.state().items()})
    path = tmp_path / "tiny.safetensors"
    save_model(path, tensors, "codec", config)
    return path


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
def test_shapes_and_range(model: CodecModel) -> None:
    codes = sample_codes(model, 3, 8, 4, seed=0)
    assert [tuple(c.shape) for c in codes] == [(3, 8, 4), (3, 4, 2)]  # by level, bottom first
    assert all(c.dtype == torch.int64 and int(c.min()) >= 0 and int(c.max()) < K for c in codes)


def test_same_seed_same_samples(model: CodecModel) -> None:
    a = sample_codes(model, 2, 4, 4, seed=7)
    b = sample_codes(model, 2, 4, 4, seed=7)
    assert equal(a, b)
    assert not equal(a, sample_codes(model, 2, 4, 4, seed=8))
    assert not torch.equal(a[0][0], a[0][1])  # the samples of one batch differ too


def test_batch_size_does_not_change_samples(model: CodecModel) -> None:
    assert equal(sample_codes(model, 3, 4, 4, seed=3, batch=1), sample_codes(model, 3, 4, 4, seed=3, batch=16))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_equals_naive(model: CodecModel, temperature: float) -> None:
    cached = sample_codes(model, 2, 6, 4, temperature=temperature, seed=5)
    assert equal(cached, naive_sample_codes(model, 2, 6, 4, temperature=temperature, seed=5))


def test_cached_equals_naive_with_classes(class_model: CodecModel) -> None:
    label = torch.tensor([0, 2])
    cached = sample_codes(class_model, 2, 4, 4, label=label, seed=1)
    assert equal(cached, naive_sample_codes(class_model, 2, 4, 4, label=label, seed=1))
    assert not equal(cached, sample_codes(class_model, 2, 4, 4, label=1, seed=1))  # the label matters


def test_low_temperature_is_nearly_greedy(model: CodecModel) -> None:
    """At a low temperature the samples of different seeds agree almost everywhere."""
    cold = [sample_codes(model, 1, 4, 4, temperature=0.02, seed=s)[1] for s in range(3)]
    warm = [sample_codes(model, 1, 4, 4, temperature=1.0, seed=s)[1] for s in range(3)]
    cold_diff = sum(int((c != cold[0]).sum()) for c in cold[1:])
    warm_diff = sum(int((c != warm[0]).sum()) for c in warm[1:])
    assert cold_diff < warm_diff


def test_class_errors(model: CodecModel, class_model: CodecModel) -> None:
    with pytest.raises(VQCodecError, match="not class-conditional"):
        sample_codes(model, 1, 4, 4, label=0)
    with pytest.raises(VQCodecError, match="class must be in"):
        sample_codes(class_model, 1, 4, 4, label=CLASSES)
    with pytest.raises(VQCodecError, match="multiple of 2"):
        sample_codes(model, 1, 5, 4)
    with pytest.raises(VQCodecError, match="temperature"):
        sample_codes(model, 1, 4, 4, temperature=0)


def test_sample_images(model: CodecModel) -> None:
    images = sample_images(model, 2, 16, 24, seed=4)
    assert images.shape == (2, 16, 24, 3) and images.dtype == np.uint8
    assert np.array_equal(images, sample_images(model, 2, 16, 24, seed=4))
    with pytest.raises(VQCodecError, match="stride 8"):
        sample_images(model, 1, 12, 16)


# -- rejection sampling -----------------------------------------------------------------------------------
class Brightness(torch.nn.Module):
    """Toy classifier: class 1 logit = mean brightness, class 0 logit = 1 - mean brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([1 - m, m], 1)


def test_candidate_count() -> None:
    assert candidate_count(16, 0.1) == 160
    assert candidate_count(3, 0.1) == 30
    assert candidate_count(2, 0.3) == 7
    assert candidate_count(5, 1.0) == 5
    for bad in (0, -0.5, 1.5):
        with pytest.raises(VQCodecError):
            candidate_count(1, bad)


@pytest.mark.parametrize("target", [0, 1])
def test_rejection_keeps_most_likely(model: CodecModel, target: int) -> None:
    n, rate = 2, 0.3
    result = rejection_sample(model, Brightness(), target, n, rate, height=16, width=16, seed=2)
    m = math.ceil(n / rate)
    assert result.candidates == m == 7
    assert result.acceptance == pytest.approx(n / m)
    # the candidates are exactly what sample_images draws with the same seed
    candidates = sample_images(model, m, 16, 16, seed=2)
    brightness = candidates.reshape(m, -1).mean(1) / 255
    p = torch.tensor(np.stack([1 - brightness, brightness], 1)).softmax(1)[:, target].numpy()
    assert np.allclose(np.sort(p)[::-1][:n], result.scores)
    assert np.array_equal(result.images, candidates[result.indices])
    assert np.allclose(p[result.indices], result.scores)
    rejected = np.setdiff1d(np.arange(m), result.indices)
    assert result.scores.min() >= p[rejected].max()
    assert list(result.scores) == sorted(result.scores, reverse=True)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_rejection_with_torchscript_file(model: CodecModel, tmp_path: Path) -> None:
    path = tmp_path / "clf.pt"
    torch.jit.script(Brightness()).save(str(path))
    a = rejection_sample(model, path, 1, 2, 0.5, height=16, seed=1)
    b = rejection_sample(model, Brightness(), 1, 2, 0.5, height=16, seed=1)
    assert np.array_equal(a.images, b.images) and np.allclose(a.scores, b.scores)
    with pytest.raises(VQCodecError, match="target class"):
        rejection_sample(model, Brightness(), 2, 1, 0.5, height=16)


# -- CLI -----------------------------------------------------------------------------------------------------
def test_cli_help() -> None:
    res = CliRunner().invoke(cli_main, ["sample", "--help"])
    assert res.exit_code == 0
    for opt in ("--model", "--n", "--out", "--size", "--temperature", "--class", "--seed", "--classifier",
                "--target-class", "--acceptance"):
        assert opt in res.output


def test_cli_grid(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(cli_main, ["sample", "--model", str(model_file), "--n", "3", "--out", str(out),
                                        "--size", "16", "--seed", "1"])
    assert res.exit_code == 0, res.output
    grid = np.asarray(Image.open(out).convert("RGB"))
    expected = image_grid(sample_images(load_codec_model(model_file), 3, 16, 16, seed=1))
    assert grid.shape == (34, 34, 3)  # 2 x 2 cells of 16 pixels with 2-pixel gaps
    assert np.array_equal(grid, expected)
    res = CliRunner().invoke(cli_main, ["sample", "--model", str(model_file), "--n", "3", "--out", str(out),
                                        "--size", "16"])
    assert res.exit_code == 1 and "--force" in res.output


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_cli_folder_rejection_and_errors(model_file: Path, tmp_path: Path) -> None:
    clf = tmp_path / "clf.pt"
    torch.jit.script(Brightness()).save(str(clf))
    out = tmp_path / "samples"
    base = ["sample", "--model", str(model_file), "--size", "16"]
    res = CliRunner().invoke(cli_main, [*base, "--n", "2", "--out", str(out), "--classifier", str(clf),
                                        "--target-class", "1", "--acceptance", "0.5"])
    assert res.exit_code == 0, res.output
    assert "acceptance rate: 0.5000" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["sample_0000.png", "sample_0001.png"]
    assert np.asarray(Image.open(out / "sample_0000.png")).shape == (16, 16, 3)
    for extra, message in [(["--class", "1"], "not class-conditional"), (["--size", "20"], "stride"),
                           (["--target-class", "1"], "go together")]:
        res = CliRunner().invoke(cli_main, [*base, "--n", "1", "--out", str(tmp_path / "x.png"), *extra])
        assert res.exit_code == 1 and message in res.output, res.output
