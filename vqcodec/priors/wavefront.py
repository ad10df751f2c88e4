"""Decoding orders, and the wavefront stepper of the gated PixelCNN.

A decoding order is a list of steps, each an array (P, 2) of the (row, column) positions whose
codes are chosen together; every position appears once. The range coder writes a tile's symbols
in the same order, so the order is part of the file format (``coding.bitstream``).

In a gated PixelCNN without attention the code at (r, c) depends on the codes (r, < c) and on the
rows above only up to column c + R, where R = layers * (v_cols // 2) is the reach of the vertical
stack (each layer widens it by half a kernel). So every code on the wavefront t = c + (R + 1) * r
can be decoded in one batched step: a 32x32 tile takes 32 + (R + 1) * 31 steps instead of 1,024
(R = 5: 218 steps), with exactly the same integer probabilities as the encoder's parallel pass.

``WavefrontStepper`` never computes with a code it does not know: before each step it works out,
from the codes decoded so far, which activations have become computable, computes just those, and
refuses (VQCodecError) a step whose probabilities would need one that is not, e.g. an order built
for a smaller reach than the prior has.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vqcodec.errors import VQCodecError
from vqcodec.priors.autoregress import inside_extents
from vqcodec.priors.pixelcnn import attention_mask

if TYPE_CHECKING:
    from vqcodec.priors.int_pixelcnn import IntPixelCNN

Order = list[np.ndarray]  # steps of (P, 2) int64 (row, column) positions
STATE = torch.float32  # the stepper's cached activations: integers of at most 2**15, exact in float32


def raster_order(height: int, width: int) -> Order:
    """One position per step, row by row."""
    return [np.array([[r, c]], dtype=np.int64) for r in range(height) for c in range(width)]


def wavefront_order(height: int, width: int, reach: int) -> Order:
    """All (r, c) with c + (reach + 1) * r = t in step t, top row first (empty steps left out)."""
    slope = reach + 1
    rows = np.arange(height, dtype=np.int64)
    steps = []
    for t in range(width + slope * (height - 1)):
        cols = t - slope * rows
        keep = (cols >= 0) & (cols < width)
        if keep.any():  # a map narrower than the slope has empty wavefronts
            steps.append(np.stack([rows[keep], cols[keep]], axis=1))
    return steps


def flat_positions(order: Order) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of every position in decoding order: how the encoder lays out the symbols."""
    both = np.concatenate(order)
    return both[:, 0], both[:, 1]


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of columns [starts[r], stops[r]) of every row r, row by row."""
    lengths = np.maximum(stops - starts, 0)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, offsets + np.repeat(starts, lengths)


@dataclass(frozen=True)
class _Step:
    """Flat indices (into the stepper's padded maps) of everything one step reads and writes."""

    v_windows: tuple[torch.Tensor, ...]  # per layer: (P_i * v_rows * v_cols) into v[i]
    v_out: tuple[torch.Tensor, ...]  # per layer: (P_i) into v[i + 1]
    v_conv_at: tuple[torch.Tensor, ...]  # per layer: (P_i) into v_conv[i] (and the H x W bias maps)
    here: torch.Tensor  # (P) the step's positions in H x W
    h_windows: torch.Tensor  # (P * h_cols) into h[i]
    h_out: torch.Tensor  # (P) into h[i + 1]
    e_v: torch.Tensor  # (P) where a decoded code enters v[0] (the row below)
    e_h: torch.Tensor  # (P) where it enters h[0] (the column to the right)


def _split(values: np.ndarray, sizes: np.ndarray) -> list[torch.Tensor]:
    """``values`` cut into consecutive pieces of ``sizes`` (views of one tensor)."""
    return list(torch.from_numpy(values).split(sizes.tolist()))


@functools.lru_cache(maxsize=32)
def _plan(height: int, width: int, reach: int, layers: int, v_rows: int, v_cols: int, h_cols: int) -> list[_Step]:
    """What each step of the wavefront of ``reach`` computes: the vertical-stack activations that the
    codes decoded so far make computable in the step's rows and above (each once; a row below waits
    for its first step, so in raster order a row's vertical stack is one batch, not one column per
    step), then the step's positions. A step whose positions need an activation that is not
    computable yet is refused: the prior's reach is larger.

    The walk along the steps only tracks, per layer and row, how many columns are computed; the
    index arrays of all steps are then built at once and cut into steps (one numpy pass instead of
    a dozen small ones per step and layer: the plan is made in every decoding process)."""
    order = wavefront_order(height, width, reach)
    pad = v_cols // 2
    v_width, h_width = width + 2 * pad, width + h_cols
    known = np.zeros(height, dtype=np.int64)
    done = np.zeros((layers, height), dtype=np.int64)
    starts = np.empty((len(order), layers, height), dtype=np.int64)  # columns [start, stop) of each row
    stops = np.empty_like(starts)  # that step s computes in layer i's vertical stack
    for s, positions in enumerate(order):
        ready = np.concatenate([[width], known[:-1]])  # v[0] of row r is the codes of row r - 1
        below = int(positions[:, 0].max()) + 1  # rows below the step's wait for their first step
        for i in range(layers):
            usable = np.where(ready >= width, width, np.maximum(ready - pad, 0))
            count = usable.copy()
            for k in range(1, v_rows):  # the rows above; above row 0 is padding, always ready
                count[k:] = np.minimum(count[k:], usable[:-k])
            count[below:] = done[i][below:]
            starts[s, i], stops[s, i] = done[i], count
            done[i] = np.maximum(done[i], count)
            ready = done[i]
        rows, cols = positions[:, 0], positions[:, 1]
        if (known[rows] != cols).any() or (done[:, rows] <= cols).any():
            raise VQCodecError(f"decoding order of reach {reach} needs codes the prior has not seen yet: "
                               "the prior's reach is larger")
        known[rows] = cols + 1
    # the vertical stack: every (step, layer, row)'s run of columns, in that order
    flat_rows, cols = _ranges(starts.reshape(-1), stops.reshape(-1))
    rows = flat_rows % height
    sizes = np.maximum(stops - starts, 0).sum(2).reshape(-1)  # per (step, layer)
    win_r, win_c = np.arange(v_rows), np.arange(v_cols)
    win = (rows[:, None, None] + win_r[None, :, None]) * v_width + cols[:, None, None] + win_c[None, None, :]
    v_windows = _split(win.reshape(-1), sizes * v_rows * v_cols)
    v_out = _split((rows + v_rows - 1) * v_width + cols + pad, sizes)
    v_conv_at = _split(rows * width + cols, sizes)
    # the step's own positions
    per_step = np.array([len(p) for p in order])
    rows, cols = flat_positions(order)
    here = _split(rows * width + cols, per_step)
    h_windows = _split((rows[:, None] * h_width + cols[:, None] + np.arange(h_cols)).reshape(-1), per_step * h_cols)
    h_out = _split(rows * h_width + cols + h_cols - 1, per_step)
    e_v = _split((rows + v_rows) * v_width + cols + pad, per_step)
    e_h = _split(rows * h_width + cols + h_cols, per_step)
    return [_Step(v_windows=tuple(v_windows[s * layers : (s + 1) * layers]),
                  v_out=tuple(v_out[s * layers : (s + 1) * layers]),
                  v_conv_at=tuple(v_conv_at[s * layers : (s + 1) * layers]),
                  here=here[s], h_windows=h_windows[s], h_out=h_out[s], e_v=e_v[s], e_h=e_h[s])
            for s in range(len(order))]


def _to(value, device: torch.device):
    return tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device)


def _rows(x: torch.Tensor, index: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Windows of a position-major map x (H*W, B, C) whose positions ``index`` lists (P * kh * kw,
    window by window) as a batch (P * B, C, kh, kw): one GEMM row per window and map."""
    kh, kw = kernel
    win = x.index_select(0, index)
    p, b, c = win.shape[0] // (kh * kw), win.shape[1], win.shape[2]
    rows = torch.empty((p, b, c, kh * kw), dtype=torch.float64, device=x.device)
    rows.copy_(win.view(p, kh * kw, b, c).permute(0, 2, 3, 1))  # one copy: the layout and float64
    return rows.view(p * b, c, kh, kw)


def _at(bias, index: torch.Tensor):
    """A position-major bias map (H*W, B, C) at positions ``index`` as rows (P * B, C, 1, 1); a
    scalar stays a scalar."""
    if not torch.is_tensor(bias):
        return bias
    return bias.index_select(0, index).reshape(-1, bias.shape[-1], 1, 1)


def _biases_by_extent(
    net: IntPixelCNN, cond: list[torch.Tensor], label: torch.Tensor | None, height: int, width: int,
    extents: torch.Tensor,
) -> list:
    """``net.condition`` (position-major) for a batch of maps of several extents, each computed on its
    own extent -- the conditioning stack's convolutions see that map's edge, as the encoder's
    parallel pass on the map alone does -- and zero beyond it."""
    c2, layers = 2 * net.config.channels, net.config.layers
    out = [torch.zeros(height, width, len(extents), 2 * c2, dtype=torch.float32, device=net.device)
           for _ in range(layers)]  # float32: see WavefrontStepper.__init__
    for ext in torch.unique(extents.cpu(), dim=0).tolist():
        idx = torch.nonzero((extents.cpu() == torch.tensor(ext)).all(1)).flatten()
        eh, ew = ext
        # the level i above is 2**(i + 1) times coarser (``IntPixelCNN.cond_features``)
        part = [m[idx.to(m.device), : -(-eh >> i + 1), : -(-ew >> i + 1)] for i, m in enumerate(cond)]
        for maps, (cv, ch, _, _) in zip(out, net.condition(part, None, (eh, ew), dtype=torch.float32)):
            maps[:eh, :ew, idx.to(maps.device)] = torch.cat([cv, ch], 1).permute(2, 3, 0, 1)
    return [(m[..., :c2].reshape(height * width, -1, c2), m[..., c2:].reshape(height * width, -1, c2),
             *net.label_biases(label, i)) for i, m in enumerate(out)]


class WavefrontStepper:
    """Decodes an ``IntPixelCNN`` along the wavefront of ``reach``, caching the vertical and
    horizontal stacks (and attention keys and values); what each step computes is planned once per
    map size (``_plan``), so a step is a fixed list of gathers, integer layers and scatters. Raster
    order is the wavefront of reach width - 1 (one position per step), the only order a prior with
    attention allows.

    Maps are stored position-major, (positions, B, channels), so gathering a step's windows copies
    whole rows, and every layer runs as one matrix product over (positions x maps) rows, through the
    same ``IntPixelCNN`` layer functions as the parallel pass (a window is a 1x1-output convolution).
    State, integers held in float32 (``STATE``: exact, half the memory and traffic of float64; the
    layers compute on float64 copies of the windows they read): ``v[i]`` the gated vertical stack
    entering layer i (v[0] is the codes' embedding shifted down one row) on a grid padded with
    v_rows-1 rows on top (one spare below) and v_cols//2 columns on each side; ``v_conv[i]`` its
    convolution before the biases; ``h[i]`` the horizontal stack, padded h_cols-1 columns left (one
    spare right). The attention caches stay float64 (the products read them whole).
    """

    def __init__(
        self, net: IntPixelCNN, batch: int, height: int, width: int, cond: list[torch.Tensor] | None,
        label: torch.Tensor | None, temperature: float, reach: int, extents: torch.Tensor | None = None,
    ) -> None:
        cfg = self.cfg = net.config
        if cfg.attention_every and not cfg.attention_wavefront and reach < width - 1:
            raise VQCodecError("a prior with attention in raster order decodes in raster order only")
        self.net, self.temperature, self.batch = net, temperature, batch
        self.order = wavefront_order(height, width, reach)
        self.plan = _plan(height, width, reach, cfg.layers, cfg.v_rows, cfg.v_cols, cfg.h_cols)
        dev, c, pad = net.device, cfg.channels, cfg.v_cols // 2
        cond = [x.to(dev) for x in cond] if cond else None
        label = label.to(dev) if label is not None else None
        # (H*W, B) float64: 1 inside each map's extent, 0 outside
        self.valid = (None if extents is None else
                      inside_extents(extents, height, width).reshape(height * width, -1).to(dev, torch.float64))
        # the conditioning maps (H*W, B, 2C) are integers in [-Q, Q], held in float32 (exactly), which
        # halves the largest part of the state; adding them to float64 sums promotes them back, exactly
        if extents is None or not cfg.cond_levels:
            self.biases = net.condition(cond, label, (height, width), position_major=True, dtype=torch.float32)
        else:
            self.biases = _biases_by_extent(net, cond, label, height, width, extents)

        def zeros(positions: int, ch: int) -> torch.Tensor:
            return torch.zeros(positions, batch, ch, dtype=STATE, device=dev)

        self.v = [zeros((height + cfg.v_rows) * (width + 2 * pad), c) for _ in range(cfg.layers + 1)]
        # every position of v_conv is written (``_advance``) before a step reads it (``_plan``)
        self.v_conv = [torch.empty(height * width, batch, 2 * c, dtype=STATE, device=dev)
                       for _ in range(cfg.layers)]
        self.h = [zeros(height * (width + cfg.h_cols), c) for _ in range(cfg.layers + 1)]
        d = c // cfg.heads  # attention caches: keys and values of every position decoded so far
        self.kv = {i: (torch.zeros(batch, cfg.heads, height * width, d, dtype=torch.float64, device=dev),
                       torch.zeros(batch, cfg.heads, height * width, d, dtype=torch.float64, device=dev))
                   for i in range(cfg.layers) if cfg.attention_after(i)}
        # attention never sees a position outside its map's extent: (B, 1, 1, H*W), True = hidden;
        # nor a later one (raster order, or a later wavefront of the prior's reach): (H*W, H*W)
        self.hidden = None if self.valid is None else (self.valid.t() == 0)[:, None, None, :]
        self.later, self.raster_index = None, []
        if cfg.attention_every:
            self.later = attention_mask(height, width, cfg.attention_reach, dev)
            self.raster_index = [torch.from_numpy(p[:, 0] * width + p[:, 1]).to(dev) for p in self.order]
        if dev.type != "cpu":
            self.plan = [_Step(**{f.name: _to(getattr(s, f.name), dev) for f in dataclasses.fields(s)})
                         for s in self.plan]

    def _inside(self, x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Rows (P, B, C) of the map positions ``at`` (flat in H x W), zero where a position lies
        outside its map's extent: there a smaller map has its zero padding."""
        return x if self.valid is None else x * self.valid.index_select(0, at)[:, :, None]

    def _label(self, bias, n: int):
        """A label bias (B, C, 1, 1) for n positions' rows (n * B, C, 1, 1)."""
        return bias.repeat(n, 1, 1, 1) if torch.is_tensor(bias) else bias

    def _advance(self, step: _Step) -> None:
        """The vertical stack wherever the codes decoded so far make it computable."""
        cfg, net = self.cfg, self.net
        for i in range(cfg.layers):
            n = len(step.v_out[i])
            if not n:
                continue
            window = _rows(self.v[i], step.v_windows[i], (cfg.v_rows, cfg.v_cols))
            conv = net.linear(f"layers.{i}.v_conv", window)  # (n * B, 2C, 1, 1)
            self.v_conv[i].index_copy_(0, step.v_conv_at[i], conv.view(n, self.batch, -1).to(STATE))
            cv, _, lv, _ = self.biases[i]
            pre = net.plus(net.plus(conv, _at(cv, step.v_conv_at[i])), self._label(lv, n))
            gated = net.gate(pre).view(n, self.batch, -1)
            self.v[i + 1].index_copy_(0, step.v_out[i], self._inside(gated, step.v_conv_at[i]).to(STATE))

    def probs(self, step: int) -> torch.Tensor:
        """Integer-valued probabilities (B, P, K) of the step's positions."""
        cfg, net, plan = self.cfg, self.net, self.plan[step]
        self._advance(plan)
        n = len(plan.here)
        for i in range(cfg.layers):
            h_cols = _rows(self.h[i], plan.h_windows, (1, cfg.h_cols))  # (n * B, C, 1, h_cols)
            v_conv = self.v_conv[i].index_select(0, plan.here).reshape(n * self.batch, -1, 1, 1).double()
            _, ch, _, lh = self.biases[i]
            new = net.h_layer(i, h_cols, h_cols[..., -1:], v_conv, _at(ch, plan.here), self._label(lh, n))
            if cfg.attention_after(i):
                new = self._attend(i, new, self.raster_index[step])
            self.h[i + 1].index_copy_(0, plan.h_out, new.view(n, self.batch, -1).to(STATE))
        last = self.h[cfg.layers].index_select(0, plan.h_out).reshape(n * self.batch, -1, 1, 1).double()
        probs = net.probs(net.head_logits(last, self.temperature))  # (n * B, K, 1, 1)
        return probs.view(n, self.batch, -1).transpose(0, 1)

    def _attend(self, i: int, h: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Attention layer i for the step's positions (raster indices ``at``, P of them); h is
        (P * B, C, 1, 1), position-major. Every position of the step enters the key and value cache
        first: a position on the same wavefront in a row above is seen (``attention_mask``)."""
        n, b = len(at), self.batch
        heads, c = self.cfg.heads, h.shape[1]
        q, k, v = (t.reshape(n, b, heads, -1).permute(1, 2, 0, 3) for t in self.net.qkv(i, h))  # (B, heads, P, d)
        keys, values = self.kv[i]
        keys.index_copy_(2, at, k)
        values.index_copy_(2, at, v)
        seen = int(at.max()) + 1  # no position after the step's last in raster order is ever seen
        hidden = self.later[at, :seen][None, None]  # (1, 1, P, seen)
        if self.hidden is not None:
            hidden = hidden | self.hidden[..., :seen]
        w = self.net.attn_weights(i, q @ keys[:, :, :seen].transpose(2, 3), hidden)  # (B, heads, P, seen)
        weighted = (w @ values[:, :, :seen]).permute(2, 0, 1, 3).reshape(n * b, c, 1, 1)
        total = w.sum(-1).permute(2, 0, 1)[..., None].expand(n, b, heads, c // heads).reshape(n * b, c, 1, 1)
        return self.net.attn_finish(i, h, weighted, total)

    def record(self, step: int, codes: torch.Tensor) -> None:
        """Record the codes (B, P) chosen at the step's positions."""
        plan = self.plan[step]
        e = self._inside(self.net.t["embed"][codes.to(self.net.device).t()], plan.here).to(STATE)  # (P, B, C)
        self.v[0].index_copy_(0, plan.e_v, e)  # v[0] of the row below
        self.h[0].index_copy_(0, plan.e_h, e)  # h[0] of the column to the right
