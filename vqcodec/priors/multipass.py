"""Multi-pass priors: each level decoded in a few passes, each pass one masked-convolution network.

The paper's gated PixelCNN decodes a 32x32 tile in ~160-190 sequential wavefront steps of ~250
small operations each, at ~480 k multiply-adds per code. This prior is designed for few steps and
little arithmetic instead, after the multiscale PixelCNN of Reed et al. 2017 and the
checkerboard context model of He et al. 2021:

* A fixed **schedule** over a ``period`` x ``period`` cell assigns every position a pass (7 passes
  with the default 4x4 cell: a 1/16 lattice, its centres, the 2x2 lattice, the odd-odd lattice in
  two halves, then the checkerboard's other half in two). Pass g predicts its codes from the codes
  of passes < g only, so all codes of a pass are decoded at once.
* **Context**: a ``window`` x ``window`` convolution over the embedded codes, masked to the codes
  already known (an earlier pass, inside the map). Embedding then convolution with nothing in
  between is one lookup table per tap, so the integer twin sums ``window**2`` table rows per code:
  additions, no multiplies.
* **Conditioning** on the levels above: a small residual 3x3 stack at the level above, turned into
  this level's resolution by a 1x1 convolution to 4x the channels and a 2x2 pixel shuffle (no
  convolution at full resolution).
* A per-pass bias, then ``blocks`` residual 1x1 blocks and the logits: each code's own small MLP.

The integer twin (``IntMultipass``) follows ``priors.contract`` with the arithmetic of
``priors.int_pixelcnn``: integer weights and activations, exact sums, one correctly rounded
requantization per layer, probabilities from the stored exp table. Encoder and decoder call the
same functions (``_context``, ``_head``) on the same integers, so they agree bit for bit whatever
the batch, the thread count or the device. Two widths (``act_bits``):

* 16: activations in [-32767, 32767], weights in [-4095, 4095], sums in float64 (as the gated
  PixelCNN's twin);
* 8: activations and weights in [-127, 127], so a layer of K <= 1,024 inputs sums below 2**24 and
  float32 products are exact in any order: half the bytes and twice the multiply-adds per cycle of
  float64, for 0.2 % more bits on validation codes (5.8550 against 5.8439 bits a code, the same
  float prior). The context's table sums stay float64 (81 rows of up to 2**19 each).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqcodec.errors import VQCodecError
from vqcodec.priors.int_pixelcnn import EXP_RANGE, HEAD_ROWS, LOGIT_FRAC, W_MAX, Q, _conv, _lut_tables, requant
from vqcodec.priors.pixelcnn import levels_stacked
from vqcodec.priors.wavefront import Order, flat_positions

ARCH = "multipass"
NARROW = 127  # act_bits 8: the range of activations and of weights
EXACT_FLOAT32 = 1 << 24  # every integer below this is a float32, so sums that stay below it are exact

# 4x4 cell: pass of each (row % 4, column % 4); see the module docstring
SCHEDULE_7 = ((0, 5, 2, 5), (6, 3, 6, 4), (2, 5, 1, 5), (6, 4, 6, 3))
# 8x8 cell in 8 passes of 1, 1, 2, 4, 8, 16, 16 and 16 of its 64 codes: the 8x8 lattice, its centres,
# the 4x4 lattice, its centres, the 2x2 lattice, the odd-odd lattice, then the checkerboard's other half
# in two. A sixteenth as many codes as SCHEDULE_7 are coded with no context at this level; the
# early passes reach 4 codes away, so it needs a window of 9.
SCHEDULE_8 = (
    (0, 6, 4, 6, 2, 6, 4, 6), (7, 5, 7, 5, 7, 5, 7, 5), (4, 6, 3, 6, 4, 6, 3, 6), (7, 5, 7, 5, 7, 5, 7, 5),
    (2, 6, 4, 6, 1, 6, 4, 6), (7, 5, 7, 5, 7, 5, 7, 5), (4, 6, 3, 6, 4, 6, 3, 6), (7, 5, 7, 5, 7, 5, 7, 5),
)
SCHEDULES = {"4x4": SCHEDULE_7, "8x8": SCHEDULE_8}


@dataclass
class MultipassConfig:
    """Sizes and schedule of one multi-pass prior; stored as JSON in its model file."""

    arch: str = ARCH
    num_codes: int = 512
    channels: int = 64  # width of each code's MLP
    embed_dim: int = 32  # code embedding that the context convolution reads
    window: int = 7  # context convolution's side (odd)
    blocks: int = 2  # residual 1x1 blocks after the context
    schedule: tuple[tuple[int, ...], ...] = field(default=SCHEDULE_7)
    cond_levels: int = 0
    cond_channels: int = 64
    cond_blocks: int = 2
    num_classes: int = 0
    act_bits: int = 16  # the integer twin's width: 16 (float64 sums) or 8 (exact float32 sums)

    def __post_init__(self) -> None:
        self.schedule = tuple(tuple(int(g) for g in row) for row in self.schedule)
        p = len(self.schedule)
        passes = sorted({g for row in self.schedule for g in row})
        if p < 1 or any(len(row) != p for row in self.schedule) or passes != list(range(len(passes))):
            raise ValueError("a schedule is a square cell whose passes are numbered 0, 1, ... without gaps")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"the context window must be odd, not {self.window}")
        if self.act_bits not in (8, 16):
            raise ValueError(f"act_bits is 8 or 16, not {self.act_bits}")

    @property
    def period(self) -> int:
        return len(self.schedule)

    @property
    def ranges(self) -> tuple[int, int]:
        """(activation range, weight range) of the integer twin."""
        return (NARROW, NARROW) if self.act_bits == 8 else (Q, W_MAX)

    @property
    def passes(self) -> int:
        return 1 + max(max(row) for row in self.schedule)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = [list(row) for row in self.schedule]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MultipassConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def pass_map(schedule: tuple[tuple[int, ...], ...], height: int, width: int) -> np.ndarray:
    """(H, W) int64: the pass of every position."""
    cell = np.asarray(schedule, dtype=np.int64)
    p = len(cell)
    return np.tile(cell, (-(-height // p), -(-width // p)))[:height, :width]


def multipass_order(schedule: tuple[tuple[int, ...], ...], height: int, width: int) -> Order:
    """One step per pass: its positions in raster order (the order the encoder writes them)."""
    groups = pass_map(schedule, height, width)
    steps = []
    for g in range(int(groups.max()) + 1 if groups.size else 0):
        rows, cols = np.nonzero(groups == g)
        if len(rows):
            steps.append(np.stack([rows, cols], axis=1).astype(np.int64))
    return steps


@functools.lru_cache(maxsize=16)
def _all_neighbours(schedule: tuple, window: int, height: int, width: int) -> np.ndarray:
    """(H*W, window**2): for every position the flat index of each tap's neighbour, or -1 where it
    is outside the map or not decoded before the position's own pass."""
    out = np.full((height * width, window * window), -1, dtype=np.int64)
    for g in range(1 + max(max(row) for row in schedule)):
        here, nb = _neighbours(schedule, window, height, width, g)
        out[here] = nb.T
    return out


# -- the float model (trained) ----------------------------------------------------------------------
def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution on channels-last (..., C) rows, as a matrix product (several times faster to
    train on a CPU than the convolution on NCHW maps)."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class _Block(nn.Module):
    """``x + b(relu(a(relu(x))))`` with 1x1 convolutions (a per-position MLP block), channels last."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 1)
        self.b = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, trace: dict | None = None, name: str = "") -> torch.Tensor:
        a = _pointwise(self.a, F.relu(x))
        _note(trace, f"{name}.a", a)
        return x + _pointwise(self.b, F.relu(a))


def _note(trace: dict | None, name: str, x: torch.Tensor) -> None:
    """Record the largest |x| under ``name``: the ranges the integer twin quantizes to."""
    if trace is not None:
        trace[name] = max(trace.get(name, 0.0), float(x.detach().abs().max()))


def _masked(x: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
    return x if inside is None else x * inside


class MultipassCondition(nn.Module):
    """Codes of the levels above -> (B, C, H, W) features at this level, added to every code's MLP."""

    def __init__(self, cfg: MultipassConfig) -> None:
        super().__init__()
        cc = cfg.cond_channels
        self.embeds = nn.ModuleList([nn.Embedding(cfg.num_codes, cc) for _ in range(cfg.cond_levels)])
        self.inp = nn.Conv2d(cc * cfg.cond_levels, cc, 3, padding=1)
        self.blocks = nn.ModuleList(
            [nn.ModuleList([nn.Conv2d(cc, cc, 3, padding=1), nn.Conv2d(cc, cc, 1)]) for _ in range(cfg.cond_blocks)]
        )
        self.out = nn.Conv2d(cc, 4 * cfg.channels, 1)

    def forward(self, cond: list[torch.Tensor], out_size: tuple[int, int], trace: dict | None = None) -> torch.Tensor:
        embedded = [emb(codes).permute(0, 3, 1, 2) for emb, codes in zip(self.embeds, cond, strict=True)]
        for i, e in enumerate(embedded):
            _note(trace, f"cond.embed{i}", e)
        x = self.inp(levels_stacked(embedded))
        _note(trace, "cond.x", x)
        for j, (c0, c1) in enumerate(self.blocks):
            a = c0(F.relu(x))
            _note(trace, f"cond.{j}.a", a)
            x = x + c1(F.relu(a))
            _note(trace, "cond.x", x)
        out = F.pixel_shuffle(self.out(F.relu(x)), 2)[..., : out_size[0], : out_size[1]]
        _note(trace, "h", out)
        return out


class MultipassPrior(nn.Module):
    """p(codes | codes above, label), every position conditioned on the codes of earlier passes."""

    def __init__(self, cfg: MultipassConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or MultipassConfig()
        c = cfg.channels
        self.embed = nn.Embedding(cfg.num_codes, cfg.embed_dim)
        self.context = nn.Conv2d(cfg.embed_dim, c, cfg.window, bias=False)
        self.pass_bias = nn.Parameter(torch.zeros(cfg.passes, c))
        self.label = nn.Embedding(cfg.num_classes, c) if cfg.num_classes else None
        self.cond_stack = MultipassCondition(cfg) if cfg.cond_levels else None
        self.blocks = nn.ModuleList([_Block(c) for _ in range(cfg.blocks)])
        self.logits = nn.Conv2d(c, cfg.num_codes, 1)

    def context_features(self, codes: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        """(B, C, H, W): at each position the context convolution over the codes of earlier passes.

        Embedding then convolution is one table row per (tap, code), so the masked convolution is
        a sum of the rows of the known neighbours (``F.embedding_bag``), as the integer twin computes
        it (measured 1.4x faster to train than the same convolution as a dense one over 4x4 cells)."""
        cfg = self.config
        b, h, w = codes.shape
        _note(trace, "embed", self.embed.weight)
        taps = cfg.window * cfg.window
        table = torch.einsum("kd,cdt->tkc", self.embed.weight, self.context.weight.flatten(2))
        table = torch.cat([table.reshape(taps * cfg.num_codes, -1), table.new_zeros(1, table.shape[-1])])
        nb = torch.from_numpy(_all_neighbours(cfg.schedule, cfg.window, h, w)).to(codes.device)  # (HW, taps)
        flat = codes.reshape(b, h * w)
        rows = flat[:, nb.clamp_min(0)] + torch.arange(taps, device=codes.device) * cfg.num_codes
        rows = torch.where(nb >= 0, rows, taps * cfg.num_codes)
        x = F.embedding_bag(rows.reshape(b * h * w, taps), table, mode="sum", padding_idx=taps * cfg.num_codes)
        return x.view(b, h, w, -1).permute(0, 3, 1, 2)

    def forward(
        self, codes: torch.Tensor, cond: list[torch.Tensor] | None = None, label: torch.Tensor | None = None,
        trace: dict | None = None,
    ) -> torch.Tensor:
        """Logits (B, K, H, W); with ``trace``, the largest |activation| of each quantized tensor."""
        cfg = self.config
        h_size = codes.shape[-2:]
        groups = torch.from_numpy(pass_map(cfg.schedule, *h_size)).to(codes.device)
        x = self.context_features(codes, trace).permute(0, 2, 3, 1)  # channels last from here
        _note(trace, "ctx", x)
        x = x + self.pass_bias[groups]
        if self.cond_stack is not None:
            x = x + self.cond_stack(cond, h_size, trace).permute(0, 2, 3, 1)
        if self.label is not None:
            x = x + self.label(label)[:, None, None, :]
        _note(trace, "h", x)
        for j, block in enumerate(self.blocks):
            x = block(x, trace, f"blocks.{j}")
            _note(trace, "h", x)
        return _pointwise(self.logits, F.relu(x)).permute(0, 3, 1, 2)


# -- the integer twin (the codec's) -----------------------------------------------------------------
def quantize(prior: MultipassPrior, trace: dict[str, float]) -> dict[str, torch.Tensor]:
    """The integer twin's tensors from a float prior and its calibrated activation ranges."""
    cfg = prior.config
    q_act, w_max = cfg.ranges

    def _scale(name: str) -> float:
        """Activation scale: the calibrated range maps to q_act (a zero range still gets a usable scale)."""
        return max(trace.get(name, 0.0), 1e-6) / q_act

    def _quantize_linear(w: torch.Tensor, b: torch.Tensor | None, s_in: float, s_out: float | None) -> dict:
        """Per-output-channel integer weights, the bias in accumulator units and the requantization
        multiplier ``m`` (accumulator -> ``s_out``; logits: ``s_out`` None, m -> 1/64 nat). With
        act_bits 8 the bias is clipped so that no sum can reach 2**24 (``check_exact_sums``)."""
        w = w.detach().double()
        s_w = w.reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-12) / w_max
        wq = torch.round(w / s_w.view(-1, *([1] * (w.dim() - 1))))
        out = {"w": wq, "m": (s_in * s_w / s_out) if s_out is not None else s_in * s_w * (1 << LOGIT_FRAC)}
        if b is not None:
            out["b"] = torch.round(b.detach().double() / (s_in * s_w))
            if cfg.act_bits == 8:
                room = EXACT_FLOAT32 - 1 - q_act * wq.reshape(wq.shape[0], -1).abs().sum(1)
                out["b"] = torch.minimum(torch.maximum(out["b"], -room), room)
        return out

    s_e, s_h = _scale("embed"), _scale("h")
    t: dict[str, torch.Tensor] = {}

    def put(name: str, q: dict) -> None:
        for k, v in q.items():
            t[f"{name}.{k}"] = v

    t["embed"] = torch.round(prior.embed.weight.detach().double() / s_e).clamp(-q_act, q_act)
    put("context", _quantize_linear(prior.context.weight, None, s_e, s_h))
    t["pass_bias"] = torch.round(prior.pass_bias.detach().double() / s_h)
    if prior.label is not None:
        t["label"] = torch.round(prior.label.weight.detach().double() / s_h)
    if cfg.act_bits == 8:  # beyond 4 q_act a bias saturates the sum it joins anyway: float32 stays exact
        for name in ("pass_bias", "label"):
            if name in t:
                t[name] = t[name].clamp(-4 * q_act, 4 * q_act)
    if prior.cond_stack is not None:
        cs, s_x = prior.cond_stack, _scale("cond.x")
        s_ce = max(_scale(f"cond.embed{i}") for i in range(cfg.cond_levels))
        for i, emb in enumerate(cs.embeds):
            t[f"cond.embed{i}"] = torch.round(emb.weight.detach().double() / s_ce).clamp(-q_act, q_act)
        put("cond.inp", _quantize_linear(cs.inp.weight, cs.inp.bias, s_ce, s_x))
        for j, (c0, c1) in enumerate(cs.blocks):
            s_a = _scale(f"cond.{j}.a")
            put(f"cond.{j}.a", _quantize_linear(c0.weight, c0.bias, s_x, s_a))
            put(f"cond.{j}.b", _quantize_linear(c1.weight, c1.bias, s_a, s_x))
        put("cond.out", _quantize_linear(cs.out.weight, cs.out.bias, s_x, s_h))
    for j, block in enumerate(prior.blocks):
        s_a = _scale(f"blocks.{j}.a")
        put(f"blocks.{j}.a", _quantize_linear(block.a.weight, block.a.bias, s_h, s_a))
        put(f"blocks.{j}.b", _quantize_linear(block.b.weight, block.b.bias, s_a, s_h))
    put("logits", _quantize_linear(prior.logits.weight, prior.logits.bias, s_h, None))
    t["lut.exp_prob"] = _lut_tables()["lut.exp_prob"]
    return t


def expected_shapes(cfg: MultipassConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a model file must hold for ``cfg``, with its shape."""
    c, k, cc = cfg.channels, cfg.num_codes, cfg.cond_channels
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (k, cfg.embed_dim),
        "context.w": (c, cfg.embed_dim, cfg.window, cfg.window), "context.m": (c,),
        "pass_bias": (cfg.passes, c),
        "logits.w": (k, c, 1, 1), "logits.b": (k,), "logits.m": (k,),
        "lut.exp_prob": (EXP_RANGE + 1,),
    }
    if cfg.num_classes:
        shapes["label"] = (cfg.num_classes, c)

    def lin(name: str, cout: int, cin: int, kernel: int) -> None:
        shapes.update({f"{name}.w": (cout, cin, kernel, kernel), f"{name}.b": (cout,), f"{name}.m": (cout,)})

    for j in range(cfg.blocks):
        lin(f"blocks.{j}.a", c, c, 1)
        lin(f"blocks.{j}.b", c, c, 1)
    if cfg.cond_levels:
        for i in range(cfg.cond_levels):
            shapes[f"cond.embed{i}"] = (k, cc)
        lin("cond.inp", cc, cc * cfg.cond_levels, 3)
        for j in range(cfg.cond_blocks):
            lin(f"cond.{j}.a", cc, cc, 3)
            lin(f"cond.{j}.b", cc, cc, 1)
        lin("cond.out", 4 * c, cc, 1)
    return shapes


@functools.lru_cache(maxsize=64)
def _neighbours(schedule: tuple, window: int, height: int, width: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """For pass ``g`` of an H x W map: its positions (P,) as flat indices, and (taps, P) the flat
    index of each tap's neighbour, or -1 where that neighbour is outside the map or not decoded
    before pass g. The same arrays serve the encoder and the decoder."""
    groups = pass_map(schedule, height, width)
    rows, cols = np.nonzero(groups == g)
    r = window // 2
    nb = np.full((window * window, len(rows)), -1, dtype=np.int64)
    for t in range(window * window):
        y, x = rows + t // window - r, cols + t % window - r
        ok = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        known = np.zeros_like(ok)
        known[ok] = groups[y[ok], x[ok]] < g
        nb[t, known] = y[known] * width + x[known]
    return rows * width + cols, nb


def check_exact_sums(t: dict[str, torch.Tensor]) -> None:
    """With act_bits 8, every layer's sum must stay below 2**24 in magnitude for float32 to be exact:
    |bias| plus 127 times the sum of |weights| of each output, and weights and embeddings within
    [-127, 127]; a file that breaks this is refused rather than decoded inexactly."""
    for name, v in t.items():
        if (name.endswith(".w") or name.startswith(("embed", "cond.embed"))) and float(v.abs().max()) > NARROW:
            raise VQCodecError(f"the prior's tensor {name!r} exceeds the 8-bit range")
        if name.endswith(".w") and name != "context.w":
            layer = name[:-2]
            reach = NARROW * v.reshape(v.shape[0], -1).abs().sum(1) + t[f"{layer}.b"].abs()
            if float(reach.max()) >= EXACT_FLOAT32:
                raise VQCodecError(f"the prior's layer {layer!r} can sum past 2**24: float32 would not be exact")
    for name in ("pass_bias", "label"):
        if name in t and float(t[name].abs().max()) > 4 * NARROW:
            raise VQCodecError(f"the prior's tensor {name!r} exceeds its 8-bit bound")


def table_shift(table: torch.Tensor, taps: int) -> int:
    """The least power of two to divide an 8-bit prior's context table by (rounding each row) so that
    ``taps`` rows always sum below 2**24: exact float32 sums (a 9x9 window of 32-dim embeddings
    needs 2, losing 2 of ~19 bits before the context is requantized to 8)."""
    largest = float(table.abs().max())
    shift = 0
    while taps * round(largest / (1 << shift)) >= EXACT_FLOAT32:
        shift += 1
    return shift


@functools.lru_cache(maxsize=64)
def _pass_taps(schedule: tuple, window: int, height: int, width: int, g: int) -> tuple[np.ndarray, ...]:
    """``_neighbours`` of pass ``g`` as (positions (P,), (P, T) neighbours, (T,) window taps), keeping
    only the T taps that reach a known code somewhere in the map (the first passes use few of the
    window's taps); tap t's table rows start at t * num_codes."""
    here, nb = _neighbours(schedule, window, height, width, g)
    used = np.nonzero((nb >= 0).any(1))[0]
    return here, np.ascontiguousarray(nb[used].T), used


class IntMultipass:
    """Integer twin of a ``MultipassPrior``; ``tensors`` are what the model file stores."""

    def __init__(self, config: MultipassConfig, tensors: dict[str, torch.Tensor], device: str = "cpu") -> None:
        shapes = expected_shapes(config)
        for name, shape in shapes.items():
            if name not in tensors:
                raise VQCodecError(f"the prior's tensor {name!r} is missing")
            if tuple(tensors[name].shape) != shape:
                raise VQCodecError(f"the prior's tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                   f"expected {shape}")
        extra = sorted(set(tensors) - set(shapes))
        if extra:
            raise VQCodecError(f"the prior holds an unexpected tensor {extra[0]!r}")
        self.config = config
        self.device = torch.device(device)
        self.q = config.ranges[0]
        self.stored = {k: v.to(device=device, dtype=torch.float64) for k, v in tensors.items()}
        for name, v in self.stored.items():
            if not bool(torch.isfinite(v).all()) or (not name.endswith(".m") and not bool((v == v.round()).all())):
                raise VQCodecError(f"the prior's tensor {name!r} holds values an integer prior cannot have")
        if config.act_bits == 8:
            check_exact_sums(self.stored)
        # one table row per (tap, code): embedding times that tap's weights, exact integers (< 2**43);
        # a last row of zeros stands for a neighbour that is not known
        w = self.stored["context.w"]  # (C, D, k, k)
        taps = w.shape[2] * w.shape[3]
        table = torch.einsum("kd,cdt->tkc", self.stored["embed"], w.reshape(w.shape[0], w.shape[1], taps))
        table = torch.cat([table.reshape(taps * config.num_codes, -1), table.new_zeros(1, w.shape[0])])
        # everything computes in ``dtype``: float32 is exact for act_bits 8, whose table rows are
        # divided by 2**shift and rounded so that the sum of all taps stays below 2**24
        self.dtype = torch.float32 if config.act_bits == 8 else torch.float64
        shift = table_shift(table, taps) if config.act_bits == 8 else 0
        self.table = torch.round(table / (1 << shift)).to(self.dtype)
        self.t = {k: v if k in ("logits.m", "lut.exp_prob") else v.to(self.dtype) for k, v in self.stored.items()}
        self.t["context.m"] = (self.stored["context.m"] * (1 << shift)).to(self.dtype)
        self.rows = {k[:-2]: v.reshape(v.shape[0], -1).t().contiguous() for k, v in self.t.items() if k.endswith(".w")}

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_float(cls, prior: MultipassPrior, calibration: Iterable[tuple]) -> IntMultipass:
        """Quantize ``prior``; ``calibration`` yields (codes, cond list|None, label|None) batches."""
        trace: dict[str, float] = {}
        was_training = prior.training
        prior.eval()
        with torch.no_grad():
            for codes, cond, label in calibration:
                prior(codes, cond, label, trace=trace)
        prior.train(was_training)
        return cls(prior.config, quantize(prior, trace))

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors for the model file: weights as int16 (int8 with act_bits 8), everything else
        float64 (integers but the multipliers), as the gated PixelCNN's twin stores them."""
        wtype = torch.int8 if self.config.act_bits == 8 else torch.int16
        return {k: (v.to(wtype) if k.endswith(".w") else v).cpu() for k, v in self.stored.items()}

    def _requant(self, acc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return requant(acc, m, self.q)

    # -- the network, shared by encoder and decoder ----------------------------------------------
    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """1x1 layer on rows (N, Cin) -> requantized (N, Cout)."""
        acc = torch.addmm(self.t[f"{name}.b"], x, self.rows[name])
        return self._requant(acc, self.t[f"{name}.m"])

    def _conv3(self, name: str, x: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """3x3 layer on (B, C, H, W), zero beyond each map's extent, requantized."""
        acc = _conv(F.pad(_masked(x, inside), (1, 1, 1, 1)), self.t[f"{name}.w"], self.t[f"{name}.b"])
        return self._requant(acc, self.t[f"{name}.m"][None, :, None, None])

    def _conv1(self, name: str, x: torch.Tensor) -> torch.Tensor:
        acc = _conv(x, self.t[f"{name}.w"], self.t[f"{name}.b"])
        return self._requant(acc, self.t[f"{name}.m"][None, :, None, None])

    def condition(self, cond: list[torch.Tensor], size: tuple[int, int], inside: torch.Tensor | None) -> torch.Tensor:
        """(B, H*W, C) integer features from the levels above; ``inside`` (B, 1, h, w) marks each map's
        extent at the level above (None: whole maps), so padded batches match maps coded alone."""
        cfg = self.config
        embedded = [self.t[f"cond.embed{i}"][codes].permute(0, 3, 1, 2) for i, codes in enumerate(cond)]
        x = self._conv3("cond.inp", levels_stacked(embedded), inside)
        for j in range(cfg.cond_blocks):
            a = self._conv3(f"cond.{j}.a", torch.relu(x), inside)
            x = (x + self._conv1(f"cond.{j}.b", torch.relu(a))).clamp_(-self.q, self.q)
        out = F.pixel_shuffle(self._conv1("cond.out", torch.relu(x)), 2)[..., : size[0], : size[1]]
        return out.flatten(2).transpose(1, 2)

    def _context(self, codes: torch.Tensor, known: torch.Tensor | None, g: int, size: tuple[int, int]) -> tuple:
        """(positions (P,), integer context features (B, P, C)) of pass ``g``: the table rows of every
        known neighbour, summed (exact), requantized. ``codes`` (B, H*W); ``known`` (B, H*W) bool
        marks each map's extent (None: all of it)."""
        cfg = self.config
        here, nb, taps = _pass_taps(cfg.schedule, cfg.window, size[0], size[1], g)
        nb_t = torch.from_numpy(nb).to(codes.device)  # (P, taps used)
        zero = self.table.shape[0] - 1
        if nb.shape[1] == 0:
            acc = self.table.new_zeros(codes.shape[0], len(here), self.table.shape[1])
        else:
            valid = nb_t >= 0
            safe = nb_t.clamp_min(0)
            rows = codes[:, safe] + torch.from_numpy(taps).to(codes.device) * cfg.num_codes
            ok = valid[None] if known is None else valid[None] & known[:, safe]
            rows = torch.where(ok, rows, zero)
            # one bag of table rows per code, summed: integers below 2**53, so exact in any order
            acc = F.embedding_bag(rows.reshape(-1, nb.shape[1]), self.table, mode="sum", padding_idx=zero)
            acc = acc.view(codes.shape[0], len(here), -1)
        return torch.from_numpy(here).to(codes.device), self._requant(acc, self.t["context.m"])

    def _head(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """Probabilities (N, K), integer-valued float64, from rows (N, C) of the residual stream."""
        out = torch.empty(x.shape[0], self.config.num_codes, dtype=torch.float64, device=x.device)
        m = self.t["logits.m"] if temperature == 1.0 else self.t["logits.m"] / temperature
        lut = self.t["lut.exp_prob"]
        for s in range(0, x.shape[0], HEAD_ROWS):
            h = x[s : s + HEAD_ROWS]
            for j in range(self.config.blocks):
                a = self._linear(f"blocks.{j}.a", torch.relu(h))
                h = (h + self._linear(f"blocks.{j}.b", torch.relu(a))).clamp_(-self.q, self.q)
            logits = torch.addmm(self.t["logits.b"], torch.relu(h), self.rows["logits"]).double().mul_(m).round_()
            drop = (logits.amax(1, keepdim=True) - logits).clamp_(0, EXP_RANGE)
            torch.index_select(lut, 0, drop.view(-1).long(), out=out[s : s + HEAD_ROWS].view(-1))
        return out

    def _pass_probs(
        self, codes: torch.Tensor, known: torch.Tensor | None, g: int, size: tuple[int, int],
        cond_feat: torch.Tensor | None, label: torch.Tensor | None, temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions (P,), probabilities (B, P, K)) of pass ``g``."""
        here, x = self._context(codes, known, g, size)
        x = x + self.t["pass_bias"][g]
        if cond_feat is not None:
            x = x + cond_feat[:, here]
        if label is not None and self.config.num_classes:
            x = x + self.t["label"][label][:, None, :]
        x = x.clamp_(-self.q, self.q)
        b, p, c = x.shape
        return here, self._head(x.reshape(b * p, c), temperature).reshape(b, p, self.config.num_codes)

    # -- the contract ----------------------------------------------------------------------------
    def decode_order(self, height: int, width: int, order: str = "fast") -> Order:
        if order != "fast":
            raise VQCodecError(f"a multi-pass prior decodes in its passes only, not in {order!r} order")
        return multipass_order(self.config.schedule, height, width)

    def parallel_probs(self, codes: torch.Tensor, cond=None, label=None, temperature: float = 1.0) -> torch.Tensor:
        b, h, w = codes.shape
        out = torch.empty(b, h * w, self.config.num_codes, dtype=torch.float64, device=codes.device)
        rows, cols = flat_positions(self.decode_order(h, w))
        out[:, torch.from_numpy(rows * w + cols).to(codes.device)] = self.ordered_probs(codes, cond, label, temperature)
        return out.reshape(b, h, w, -1)

    def ordered_probs(self, codes: torch.Tensor, cond=None, label=None, temperature: float = 1.0,
                      order: str = "fast") -> torch.Tensor:
        """``parallel_probs`` in decoding order, (B, H*W, K): the passes one after another, as the
        encoder writes them (no scatter into the map and gather back)."""
        b, h, w = codes.shape
        self.decode_order(h, w, order)  # refuses an order this prior does not have
        flat = codes.reshape(b, h * w)
        cond_feat = self.condition(cond, (h, w), None) if self.config.cond_levels else None
        out = torch.empty(b, h * w, self.config.num_codes, dtype=torch.float64, device=codes.device)
        start = 0
        for g in range(self.config.passes):
            here, probs = self._pass_probs(flat, None, g, (h, w), cond_feat, label, temperature)
            out[:, start : start + len(here)] = probs
            start += len(here)
        return out

    def stepper(self, batch: int, height: int, width: int, cond=None, label=None, temperature: float = 1.0,
                order: str = "fast", extents: torch.Tensor | None = None) -> MultipassStepper:
        return MultipassStepper(self, batch, height, width, cond, label, temperature, order, extents)


class MultipassStepper:
    """Pass by pass: the probabilities of a pass's codes from the codes recorded in earlier passes."""

    def __init__(self, prior: IntMultipass, batch: int, height: int, width: int, cond, label,
                 temperature: float, order: str, extents: torch.Tensor | None) -> None:
        self.prior, self.size, self.label, self.temperature = prior, (height, width), label, temperature
        self.order = prior.decode_order(height, width, order)
        self._passes = [int(g) for g in sorted(set(pass_map(prior.config.schedule, height, width).ravel().tolist()))]
        dev = prior.device
        self.codes = torch.zeros(batch, height * width, dtype=torch.long, device=dev)
        self.known = None
        inside_above = None
        if extents is not None:
            ext = extents.to(dev)
            rows = torch.arange(height, device=dev)[None, :, None] < ext[:, 0, None, None]
            cols = torch.arange(width, device=dev)[None, None, :] < ext[:, 1, None, None]
            self.known = (rows & cols).reshape(batch, height * width)
            if cond:
                th, tw = cond[0].shape[-2:]
                up = -(-ext // 2)
                r2 = torch.arange(th, device=dev)[None, :, None] < up[:, 0, None, None]
                c2 = torch.arange(tw, device=dev)[None, None, :] < up[:, 1, None, None]
                inside_above = (r2 & c2)[:, None].to(prior.dtype)
        self.cond_feat = prior.condition(cond, self.size, inside_above) if prior.config.cond_levels else None

    def probs(self, step: int) -> torch.Tensor:
        _, probs = self.prior._pass_probs(self.codes, self.known, self._passes[step], self.size, self.cond_feat,
                                          self.label, self.temperature)
        return probs

    def record(self, step: int, codes: torch.Tensor) -> None:
        here, _ = _neighbours(self.prior.config.schedule, self.prior.config.window, *self.size, self._passes[step])
        self.codes[:, torch.from_numpy(here).to(self.codes.device)] = codes.to(self.codes.device)
