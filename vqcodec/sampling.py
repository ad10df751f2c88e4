"""Generating images from a codec model (VQ-VAE-2, Algorithm 2 lines 10-13, and section 3.3).

Ancestral sampling: the top code map is drawn one code at a time from the top prior, then each
lower map from its prior conditioned on every map above, and the VQ-VAE decoder turns the codes
into pixels. Sampling runs the integer priors through the decoder's own loop
(``priors.autoregress.generate``), so each code costs one position of work per layer.

Each code is drawn by inverse CDF on the integer probability row with one uniform number. All
uniform numbers come from one ``torch.Generator`` seeded by ``seed``, drawn up front in a fixed
order (level by level from the top, then sample, row, column), so a seed gives exactly the same
codes on every run, whatever the batch size, and whether the probabilities come from the
incremental stepper or from the full parallel pass (``vqcodec.testing.naive_sample_codes``).

Classifier-based rejection sampling (section 3.3) draws ``ceil(n / acceptance)`` candidates and
keeps the ``n`` a classifier finds most likely to be of the target class.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqcodec.errors import VQCodecError
from vqcodec.priors.autoregress import Pick, generate, one_thread
from vqcodec.zoo.codec_model import CodecModel

Label = int | torch.Tensor | None


# -- helpers -----------------------------------------------------------------------------------------
def level_shapes(model: CodecModel, height_codes: int, width_codes: int) -> list[tuple[int, int]]:
    """Code-map sizes by level (0 = bottom) for a bottom map of ``height_codes`` x ``width_codes``."""
    unit = 1 << (model.levels - 1)
    if height_codes < unit or width_codes < unit or height_codes % unit or width_codes % unit:
        raise VQCodecError(
            f"the bottom code map must be a positive multiple of {unit} codes on each side, "
            f"not {height_codes}x{width_codes}"
        )
    return [(height_codes >> lvl, width_codes >> lvl) for lvl in range(model.levels)]


def _labels(model: CodecModel, n: int, label: Label) -> list[torch.Tensor | None]:
    """The label tensor (n,) for each level's prior, or None where the prior takes no label."""
    if label is None:
        return [None] * model.levels
    classes = [p.config.num_classes for p in model.priors]
    if not any(classes):
        raise VQCodecError(f"model '{model.name}' is not class-conditional; it cannot sample a class")
    lab = torch.as_tensor(label, dtype=torch.long).reshape(-1)
    if lab.numel() == 1:
        lab = lab.expand(n).clone()
    if lab.numel() != n:
        raise VQCodecError(f"expected one label or {n} labels, got {lab.numel()}")
    count = min(c for c in classes if c)
    if int(lab.min()) < 0 or int(lab.max()) >= count:
        raise VQCodecError(f"class must be in 0..{count - 1} (the model has {count} classes)")
    return [lab if c else None for c in classes]


def _uniforms(model: CodecModel, n: int, shapes: list[tuple[int, int]], seed: int) -> list[torch.Tensor]:
    """Uniform numbers in [0, 1) (float64) for every code, by level; drawn top level first."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out: list[torch.Tensor] = [None] * model.levels  # type: ignore[list-item]
    for level in reversed(range(model.levels)):
        out[level] = torch.rand((n, *shapes[level]), generator=gen, dtype=torch.float64)
    return out


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: codes (B,) from integer-valued probability rows (B, K) and uniforms u (B,) in [0, 1).

    With the cumulative counts c_0 <= ... <= c_{K-1} = total, the code is the k with
    c_{k-1} <= floor(u * total) < c_k. Every operation is exact on integers below 2**53.
    """
    cdf = torch.cumsum(probs.to(torch.float64), dim=1)
    target = torch.floor(u.to(cdf.device, torch.float64) * cdf[:, -1])
    return torch.searchsorted(cdf, target[:, None].contiguous(), right=True)[:, 0].clamp_(max=probs.shape[1] - 1)


def _check(n: int, temperature: float, batch: int) -> None:
    if n < 1:
        raise VQCodecError(f"the number of samples must be at least 1, not {n}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise VQCodecError(f"temperature must be a positive number, not {temperature}")
    if batch < 1:
        raise VQCodecError(f"batch must be at least 1, not {batch}")


def _chunks(n: int, batch: int) -> list[slice]:
    return [slice(s, min(n, s + batch)) for s in range(0, n, batch)]


# -- ancestral sampling ------------------------------------------------------------------------------
def _inverse_cdf(uniforms: list[torch.Tensor]) -> Pick:
    """Choose each code by ``draw`` with its own uniform number (uniforms by level, (B, H_l, W_l)),
    so the codes do not depend on the decoding order."""

    def pick(level: int, probs: torch.Tensor, positions: np.ndarray, inside=None) -> torch.Tensor:
        u = uniforms[level][:, torch.from_numpy(positions[:, 0]), torch.from_numpy(positions[:, 1])]
        return draw(probs.reshape(-1, probs.shape[-1]), u.reshape(-1)).reshape(u.shape)

    return pick


@torch.no_grad()
def sample_codes(
    model: CodecModel,
    n: int,
    height_codes: int,
    width_codes: int,
    temperature: float = 1.0,
    label: Label = None,
    seed: int = 0,
    batch: int = 16,
    order: str = "fast",
) -> list[torch.Tensor]:
    """Sample ``n`` code hierarchies with the integer priors' steppers (cached activations).

    ``height_codes`` x ``width_codes`` is the size of the bottom map (level l is 2**l times
    smaller; both must be multiples of 2**(levels-1)). The top level is sampled first, then each
    lower level conditioned on all levels above. ``temperature`` divides the logits (< 1: more
    likely, less diverse samples). ``label`` (an int, or one per sample) picks the class of
    class-conditional priors. ``batch`` samples are drawn together; it changes speed, never the
    result, and so does the decoding ``order`` ("fast" or "raster"). Returns the code maps by
    level (index 0 = bottom, as ``VQVAE.decode`` takes them),
    each (n, H_l, W_l) int64 on the model's device.
    """
    _check(n, temperature, batch)
    shapes = level_shapes(model, height_codes, width_codes)
    labels = _labels(model, n, label)
    uniforms = _uniforms(model, n, shapes, seed)
    chunks = []
    with one_thread():
        for part in _chunks(n, batch):
            labs = [lab[part].to(model.device) if lab is not None else None for lab in labels]
            pick = _inverse_cdf([u[part] for u in uniforms])
            chunks.append(generate(model.priors, shapes, part.stop - part.start, pick, labs, temperature, order))
    return [torch.cat([chunk[level] for chunk in chunks]) for level in range(model.levels)]


@torch.no_grad()
def decode_codes(model: CodecModel, codes: list[torch.Tensor], batch: int = 16) -> np.ndarray:
    """uint8 images (n, H, W, 3) from code maps by level (0 = bottom)."""
    stride = model.vqvae.config.level_stride(0)
    height, width = codes[0].shape[1] * stride, codes[0].shape[2] * stride
    out = []
    for part in _chunks(codes[0].shape[0], batch):
        x = model.vqvae.decode([c[part].to(model.device) for c in codes], height, width)
        out.append(torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.ascontiguousarray(np.concatenate(out))


def _pixels_to_codes(model: CodecModel, height: int, width: int) -> tuple[int, int]:
    stride = model.vqvae.config.stride
    if height < stride or width < stride or height % stride or width % stride:
        raise VQCodecError(f"the image size must be a positive multiple of the model stride {stride}, "
                           f"not {width}x{height}")
    bottom = model.vqvae.config.level_stride(0)
    return height // bottom, width // bottom


@torch.no_grad()
def sample_images(
    model: CodecModel,
    n: int,
    height: int,
    width: int,
    temperature: float = 1.0,
    label: Label = None,
    seed: int = 0,
    batch: int = 16,
) -> np.ndarray:
    """``n`` sampled images as uint8 (n, height, width, 3); the size in pixels must be a multiple
    of the model stride. The other arguments are those of ``sample_codes``."""
    hc, wc = _pixels_to_codes(model, height, width)
    codes = sample_codes(model, n, hc, wc, temperature, label, seed, batch)
    return decode_codes(model, codes, batch)


# -- classifier-based rejection sampling -------------------------------------------------------------
@dataclass
class RejectionResult:
    images: np.ndarray  # (n, H, W, 3) uint8, the kept samples, most likely first
    acceptance: float  # n / candidates
    scores: np.ndarray  # (n,) float64, the classifier's probability of the target class for each kept image
    indices: np.ndarray  # (n,) int64, which candidates were kept
    candidates: int  # how many were drawn


def load_classifier(classifier: torch.nn.Module | str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A classifier module, or a TorchScript file loaded with ``torch.jit.load``."""
    if isinstance(classifier, torch.nn.Module):
        return classifier
    path = Path(classifier)
    if not path.is_file():
        raise VQCodecError(f"classifier file not found: {path}")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in recent torch, but it is the portable format
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as err:
        raise VQCodecError(f"{path} is not a TorchScript classifier ({err})") from None


@torch.no_grad()
def class_probabilities(
    classifier: torch.nn.Module, images: np.ndarray, target_class: int, device: torch.device | str = "cpu",
    batch: int = 16,
) -> np.ndarray:
    """Softmax probability of ``target_class`` for uint8 images (n, H, W, 3); the classifier gets
    float images (B, 3, H, W) in [0, 1] and returns logits (B, classes)."""
    scores = []
    for part in _chunks(len(images), batch):
        x = torch.from_numpy(images[part]).to(device).permute(0, 3, 1, 2).float() / 255
        logits = classifier(x)
        if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise VQCodecError(f"the classifier must return logits of shape (batch, classes), not {shape}")
        if not 0 <= target_class < logits.shape[1]:
            raise VQCodecError(f"target class {target_class} is not in 0..{logits.shape[1] - 1}")
        scores.append(logits.double().softmax(1)[:, target_class].cpu().numpy())
    return np.concatenate(scores)


def candidate_count(n: int, acceptance_rate: float) -> int:
    """ceil(n / acceptance_rate), robust to the rounding of rates such as 0.1."""
    if not 0 < acceptance_rate <= 1:
        raise VQCodecError(f"the acceptance rate must be in (0, 1], not {acceptance_rate}")
    return max(n, math.ceil(n / acceptance_rate * (1 - 1e-12)))


@torch.no_grad()
def rejection_sample(
    model: CodecModel,
    classifier: torch.nn.Module | str | Path,
    target_class: int,
    n: int,
    acceptance_rate: float,
    height: int = 256,
    width: int | None = None,
    temperature: float = 1.0,
    label: Label = None,
    seed: int = 0,
    batch: int = 16,
) -> RejectionResult:
    """Draw ``ceil(n / acceptance_rate)`` candidates with ``sample_images`` (same seed, same
    candidates), score them with the classifier and keep the ``n`` with the highest probability of
    ``target_class`` (ties: the earlier candidate), most likely first."""
    width = height if width is None else width
    _check(n, temperature, batch)
    m = candidate_count(n, acceptance_rate)
    net = load_classifier(classifier, model.device)
    was_training = net.training
    net.eval()
    try:
        images = sample_images(model, m, height, width, temperature, label, seed, batch)
        scores = class_probabilities(net, images, target_class, model.device, batch)
    finally:
        net.train(was_training)
    order = np.argsort(-scores, kind="stable")[:n]
    return RejectionResult(images[order], n / m, scores[order], order.astype(np.int64), m)


def image_grid(images: np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile uint8 images (n, H, W, 3) into one (rows, columns) grid with white gaps."""
    n, h, w, ch = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, ch), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    return grid
