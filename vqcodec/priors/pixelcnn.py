"""PixelCNN priors over code maps (VQ-VAE-2 section 3.2), the float model that is trained.

Gated PixelCNN with a vertical and a horizontal stack (van den Oord et al. 2016), so there is no
blind spot:

* the vertical stack ``v`` at row r sees only codes in rows < r (its input is shifted down one
  row, then every vertical convolution covers rows r-k+1..r);
* the horizontal stack ``h`` at (r, c) sees codes (r, < c) (input shifted right one column, then
  convolutions over columns c-k+1..c) plus ``v`` at (r, c).

The design is chosen for the codec (see ``intprior``): ``v`` of a whole row can be computed as soon
as the rows above are known, and ``h`` at one position needs only cached values to its left, so a
decoder does one position of work per layer and code. The top prior interleaves causal multi-head
self-attention over ``h`` (PixelSNAIL-style); lower priors are conditioned on the codes above
through a residual conditioning stack whose output is added inside every gated layer.

Every activation the integer twin quantizes is the output of a module (residual sums included), so
its ranges are collected with forward hooks (``priors.calibration``) rather than a copy of this pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PriorConfig:
    """Sizes of one prior; stored as JSON in its checkpoint (``arch`` picks the registry entry)."""

    arch: str = "gated-pixelcnn"
    num_codes: int = 512
    channels: int = 64
    layers: int = 6
    v_rows: int = 2  # vertical kernel covers rows r-v_rows+1..r of the (shifted) stack
    v_cols: int = 3  # and columns c-v_cols//2..c+v_cols//2
    h_cols: int = 3  # horizontal kernel covers columns c-h_cols+1..c
    attention_every: int = 0  # 0: no attention (lower priors); top prior: every few layers
    # attention sees only positions decoded before (or with) its own on the wavefront of the stacks'
    # reach (``attention_mask``), so the prior decodes along that wavefront like one without
    # attention; False: every earlier position in raster order, decoded one code per step
    attention_wavefront: bool = False
    heads: int = 2
    dropout: float = 0.1
    out_blocks: int = 2
    cond_levels: int = 0  # how many code maps above condition this prior
    cond_channels: int = 64
    cond_blocks: int = 3
    num_classes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def attention_after(self, layer: int) -> bool:
        return self.attention_every > 0 and (layer + 1) % self.attention_every == 0

    @property
    def stack_reach(self) -> int:
        """Columns to the right that the vertical stack reaches in the rows above (half a kernel per layer)."""
        return self.layers * (self.v_cols // 2)

    @property
    def attention_reach(self) -> int | None:
        """The wavefront reach that limits the attention (``attention_mask``); None: raster order."""
        return self.stack_reach if self.attention_wavefront else None


def attention_mask(height: int, width: int, reach: int | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, N) bool over raster positions, True where query i must not see key j: every later position
    in raster order, and with a ``reach`` also every position on a later wavefront
    t = c + (reach + 1) * r, i.e. the rows above far to the right, which a wavefront decoder has not
    decoded yet when it reaches i. Positions on i's own wavefront in rows above are seen: a decoder
    computes them in the same step, before the attention."""
    n = height * width
    hidden = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    if reach is not None:
        rows = torch.arange(height, device=device).repeat_interleave(width)
        t = torch.arange(width, device=device).repeat(height) + (reach + 1) * rows
        hidden |= t[None, :] > t[:, None]
    return hidden


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0))[:, :, :, :-1]


class ResidualBlock(nn.ModuleList):
    """``x + conv1(relu(conv0(relu(x))))``: the conditioning stack's and the output head's blocks."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__([nn.Conv2d(channels, channels, kernel, padding=kernel // 2), nn.Conv2d(channels, channels, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self[1](F.relu(self[0](F.relu(x))))


class CausalAttention(nn.Module):
    """Multi-head self-attention where position i (raster order) attends to positions j <= i (on a
    wavefront no later than i's, with a ``reach``: ``attention_mask``); the module returns ``h``
    plus the attention output (the residual sum is what gets quantized)."""

    def __init__(self, channels: int, heads: int, reach: int | None = None) -> None:
        super().__init__()
        self.heads, self.reach = heads, reach
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        d = c // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, self.heads, d, hh * ww).transpose(2, 3)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = q @ k.transpose(2, 3) / math.sqrt(d)
        mask = attention_mask(hh, ww, self.reach, h.device)
        attn = scores.masked_fill(mask, float("-inf")).softmax(-1)
        out = (attn @ v).transpose(2, 3).reshape(b, c, hh, ww)
        return h + self.out(out)


def levels_stacked(embedded: list[torch.Tensor]) -> torch.Tensor:
    """Embedded code maps of the levels above (each (B, C, h, w), the nearest first, each level half
    the one before), every one repeated to the nearest one's resolution and stacked along channels:
    what every conditioning stack reads, float or integer."""
    size = embedded[0].shape[-2:]
    return torch.cat([e.repeat_interleave(2**i, 2).repeat_interleave(2**i, 3)[..., : size[0], : size[1]]
                      for i, e in enumerate(embedded)], 1)


class ConditionStack(nn.Module):
    """Codes of the levels above -> features at this level's resolution (deep residual stack)."""

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        cc = cfg.cond_channels
        self.embeds = nn.ModuleList([nn.Embedding(cfg.num_codes, cc) for _ in range(cfg.cond_levels)])
        self.inp = nn.Conv2d(cc * cfg.cond_levels, cc, 3, padding=1)
        self.blocks = nn.ModuleList([ResidualBlock(cc, 3) for _ in range(cfg.cond_blocks)])
        self.post = nn.Conv2d(cc, cc, 3, padding=1)

    def forward(self, cond: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        """``cond[0]`` is the level just above (half this resolution), ``cond[1]`` the next, ...;
        the result is cropped to ``out_size`` (odd-sized maps)."""
        x = self.inp(levels_stacked([emb(c).permute(0, 3, 1, 2) for emb, c in zip(self.embeds, cond, strict=True)]))
        for block in self.blocks:
            x = block(x)
        x = F.relu(x).repeat_interleave(2, 2).repeat_interleave(2, 3)
        return self.post(x[..., : out_size[0], : out_size[1]])


class GatedLayer(nn.Module):
    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.v_conv = nn.Conv2d(c, 2 * c, (cfg.v_rows, cfg.v_cols))
        self.h_conv = nn.Conv2d(c, 2 * c, (1, cfg.h_cols))
        self.link = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        self.cond = nn.Conv2d(cfg.cond_channels, 4 * c, 1) if cfg.cond_levels else None
        self.label = nn.Embedding(cfg.num_classes, 4 * c) if cfg.num_classes else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.pad_v = (cfg.v_cols // 2, cfg.v_cols // 2, cfg.v_rows - 1, 0)
        self.pad_h = (cfg.h_cols - 1, 0, 0, 0)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, cond_feat: torch.Tensor | None, label: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One gated layer: new (v, h). The link into h takes v's convolution before the biases."""
        v_pre = self.v_conv(F.pad(v, self.pad_v))
        h_pre = self.h_conv(F.pad(h, self.pad_h)) + self.link(v_pre)
        bias = 0
        if self.cond is not None:
            bias = self.cond(cond_feat)
        if self.label is not None:
            bias = bias + self.label(label)[:, :, None, None]
        if not isinstance(bias, int):
            bv, bh = bias.chunk(2, dim=1)
            v_pre, h_pre = v_pre + bv, h_pre + bh
        return gate(v_pre), h + self.h_out(self.dropout(gate(h_pre)))


class PixelCNNPrior(nn.Module):
    """p(codes | codes above, label) as a product of per-position categoricals over K codes."""

    def __init__(self, cfg: PriorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or PriorConfig()
        c = cfg.channels
        self.embed = nn.Embedding(cfg.num_codes, c)
        self.layers = nn.ModuleList([GatedLayer(cfg) for _ in range(cfg.layers)])
        self.attention = nn.ModuleDict(
            {str(i): CausalAttention(c, cfg.heads, cfg.attention_reach) for i in range(cfg.layers)
             if cfg.attention_after(i)}
        )
        self.cond_stack = ConditionStack(cfg) if cfg.cond_levels else None
        self.out_blocks = nn.ModuleList([ResidualBlock(c, 1) for _ in range(cfg.out_blocks)])
        self.logits = nn.Conv2d(c, cfg.num_codes, 1)

    def forward_embedded(
        self, e: torch.Tensor, cond: list[torch.Tensor] | None = None, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, K, H, W) from embedded codes ``e`` (B, C, H, W); split out for causality tests."""
        cond_feat = self.cond_stack(cond, e.shape[-2:]) if self.cond_stack is not None else None
        v, h = shift_down(e), shift_right(e)
        for i, layer in enumerate(self.layers):
            v, h = layer(v, h, cond_feat, label)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        for block in self.out_blocks:
            h = block(h)
        return self.logits(F.relu(h))

    def forward(
        self, codes: torch.Tensor, cond: list[torch.Tensor] | None = None, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.forward_embedded(self.embed(codes).permute(0, 3, 1, 2), cond, label)


def nll_bits(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in bits per code."""
    return F.cross_entropy(logits, codes) / math.log(2)
