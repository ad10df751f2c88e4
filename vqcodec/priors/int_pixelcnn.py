"""The prior as an integer network, so encoder and decoder compute bit-identical probabilities.

A range decoder fails if its probabilities differ from the encoder's in a single bit, and float
networks give different bits for different thread counts, batch shapes, code paths and devices.
Following Ballé et al. 2019 ("Integer networks for data compression with latent-variable models"),
the trained float prior is converted to integer arithmetic:

* weights are integers (per-output-channel scale), activations integers in [-Q, Q];
* every convolution, matmul and attention sum is an exact integer sum held in float64 (exact and
  independent of summation order while every partial sum stays below 2**53; ours stay below 2**40);
* requantization is one IEEE multiply by a stored float64 constant and one round-half-even:
  correctly rounded, so identical on every CPU and GPU;
* tanh, sigmoid and exp come from lookup tables computed once at conversion and stored in the
  model file, never from a libm at run time;
* output probabilities are integers from the exp table, handed to constriction as float64.

``parallel_probs`` runs the whole map at once (the encoder); ``stepper`` (``priors.wavefront``)
runs step by step with cached activations (the decoder and the sampler). Both call the same layer
functions, on whole maps or on windows of the cached ones, so they produce the same integers. This class is the
``gated-pixelcnn`` entry of the prior registry (``priors.registry``) and follows ``priors.contract``.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from vqcodec.errors import VQCodecError
from vqcodec.priors.calibration import Tap, activation_ranges
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig, attention_mask, levels_stacked
from vqcodec.priors.wavefront import Order, WavefrontStepper, raster_order, wavefront_order

Q = 32767  # activation range [-Q, Q]
W_MAX = 4095  # weight range [-W_MAX, W_MAX]
GATE_FRAC = 8  # gate pre-activations in units of 2**-8 ...
GATE_RANGE = 12 << GATE_FRAC  # ... clamped to [-12, 12]
GATED_FRAC = 12  # gate outputs in units of 2**-12
LOGIT_FRAC = 6  # logits (and attention scores) in units of 1/64 nat
EXP_RANGE = 16 << LOGIT_FRAC  # exp table covers 16 nats below the maximum
PROB_BITS = 20  # the most likely code gets 2**20; every code at least 1
COND_ROWS = 512  # rows of the stepper's conditioning maps computed at once (they stay in cache)
HEAD_ROWS = 512  # rows the encoder's head takes at once: its 512-wide float64 temporaries stay in cache


def _lut_tables() -> dict[str, torch.Tensor]:
    """Lookup tables, computed once with numpy at conversion time and stored with the weights."""
    g = np.arange(-GATE_RANGE, GATE_RANGE + 1, dtype=np.float64) / (1 << GATE_FRAC)
    e = np.arange(EXP_RANGE + 1, dtype=np.float64) / (1 << LOGIT_FRAC)
    return {
        "lut.tanh": torch.from_numpy(np.round(np.tanh(g) * (1 << GATED_FRAC))),
        "lut.sigmoid": torch.from_numpy(np.round((1 / (1 + np.exp(-g))) * (1 << GATED_FRAC))),
        "lut.exp_prob": torch.from_numpy(np.maximum(1, np.round(np.exp(-e) * (1 << PROB_BITS)))),
        "lut.exp_attn": torch.from_numpy(np.round(np.exp(-e) * (1 << PROB_BITS))),
    }


def requant(acc: torch.Tensor, m: torch.Tensor, q: int = Q) -> torch.Tensor:
    """Exact integer accumulator -> integer at the target scale, within [-q, q]: one multiply, one
    rounding. ``acc`` is a temporary and is overwritten (in place saves a third of the encoder's time)."""
    return acc.mul_(m).round_().clamp_(-q, q)


def _conv(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, w_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Integer convolution (no padding) as float64 matrix products: exact, and no FFT or Winograd
    algorithm can be picked behind our back. ``w_rows`` is ``w`` as a (K, Cout) matrix, if at hand.

    A kernel wider than 1x1 runs as one product per kernel tap on shifted views of the flattened
    input (no im2col copy, which is kh*kw times the input): output (y, x) reads input flat index
    (y + dy) * W + x + dx, so tap (dy, dx) is the input shifted by dy * W + dx, computed for whole
    rows (the last kw - 1 columns of each row wrap around and are dropped). Every partial sum is an
    integer below 2**53, so the order of the taps does not change a bit."""
    bsz, cin, hh, ww = x.shape
    cout, _, kh, kw = w.shape
    oh, ow = hh - kh + 1, ww - kw + 1
    if oh == ow == 1:  # one output position (the decoder's steps): one plain GEMM, bias included
        w_rows = w.reshape(cout, -1).t() if w_rows is None else w_rows
        out = x.reshape(bsz, -1) @ w_rows if b is None else torch.addmm(b, x.reshape(bsz, -1), w_rows)
        return out.view(bsz, cout, 1, 1)
    flat = x.reshape(bsz, cin, hh * ww)
    if kh == kw == 1:  # (Cout, K) @ (B, K, L): no transposed copies, the result is already NCHW
        out = torch.matmul(w.reshape(cout, -1), flat).view(bsz, cout, oh, ow)
    else:
        span = (oh - 1) * ww + ow  # from the first output to the last, in input row width
        acc = torch.matmul(w[:, :, 0, 0], flat[:, :, :span])
        for tap in range(1, kh * kw):
            shift = (tap // kw) * ww + tap % kw
            acc.baddbmm_(w[:, :, tap // kw, tap % kw].expand(bsz, cout, cin), flat[:, :, shift : shift + span])
        rows = torch.empty(bsz, cout, oh * ww, dtype=acc.dtype, device=acc.device)
        rows[:, :, :span] = acc
        out = rows.view(bsz, cout, oh, ww)[..., :ow].contiguous()
    return out if b is None else out.add_(b[None, :, None, None])


class IntPixelCNN:
    """Integer twin of a ``PixelCNNPrior``; ``tensors`` are what the model file stores."""

    def __init__(self, config: PriorConfig, tensors: dict[str, torch.Tensor], device: str = "cpu") -> None:
        check_tensors(config, tensors)
        self.config = config
        self.t = {k: v.to(device=device, dtype=torch.float64) for k, v in tensors.items()}
        self.device = torch.device(device)
        # derived once, for speed (the same integers): weights as (K, Cout) GEMM operands, and the
        # gate's two tables end to end, so one lookup serves both halves of a gate
        self.w_rows = {k[:-2]: v.reshape(v.shape[0], -1).t().contiguous() for k, v in self.t.items()
                       if k.endswith(".w")}
        self.gate_lut = torch.cat([self.t["lut.tanh"], self.t["lut.sigmoid"]])
        c, span = config.channels, 2 * GATE_RANGE + 1
        self.gate_offset = torch.tensor([GATE_RANGE] * c + [GATE_RANGE + span] * c, dtype=torch.float64,
                                        device=self.device)[None, :, None, None]

    # -- building from a float model ---------------------------------------------------------
    @classmethod
    def from_float(cls, prior: PixelCNNPrior, calibration: Iterable[tuple]) -> IntPixelCNN:
        """Quantize ``prior``; ``calibration`` yields (codes, cond list|None, label|None) batches."""
        ranges = activation_ranges(prior, calibration_taps(prior), calibration)
        return cls(prior.config, quantize(prior, ranges))

    def to_float(self) -> PixelCNNPrior:
        """The float prior that computes what this twin does, up to its roundings (``dequantize``):
        where fine-tuning a shipped prior starts."""
        return dequantize(self.config, self.t)

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors for the model file: weights as int16, everything else float64."""
        return {k: (v.to(torch.int16) if k.endswith(".w") else v).cpu() for k, v in self.t.items()}

    # -- primitives ----------------------------------------------------------------------------
    @staticmethod
    def plus(x: torch.Tensor, bias: torch.Tensor | float) -> torch.Tensor:
        """x + bias, where a bias may be the scalar 0.0 of an absent conditioning or label (no
        operation then: a decoder step runs hundreds of tiny ones)."""
        return x + bias if torch.is_tensor(bias) else x

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Convolution ``name`` on an integer window, requantized to its target scale."""
        return requant(_conv(x, self.t[f"{name}.w"], self.t[f"{name}.b"], self.w_rows[name]), self.t[f"{name}.m"])

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        """tanh(first half) * sigmoid(second half), both from the tables, in units of 2**-GATED_FRAC."""
        index = torch.clamp(pre, -GATE_RANGE, GATE_RANGE).add_(self.gate_offset).long()
        a, b = torch.take(self.gate_lut, index).chunk(2, dim=1)
        return a.mul(b).mul_(2.0**-GATED_FRAC).round_()

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        return self.t["embed"][codes].permute(0, 3, 1, 2)

    def label_bias(self, label: torch.Tensor | None, layer: int) -> torch.Tensor | float:
        if not self.config.num_classes or label is None:
            return 0.0
        return self.t[f"layers.{layer}.label"][label][:, :, None, None]

    # -- layers on windows (shared by the parallel and the incremental pass) --------------------
    def v_layer(self, i: int, v_rows: torch.Tensor) -> torch.Tensor:
        """Vertical convolution for the rows of ``v_rows`` (which holds v_rows-1 extra rows above),
        before the conditioning biases: the link into the h-stream takes it in this form."""
        p = self.config.v_cols // 2
        return self.linear(f"layers.{i}.v_conv", F.pad(v_rows, (p, p, 0, 0)))

    def h_layer(
        self, i: int, h_cols: torch.Tensor, h_here: torch.Tensor, v_conv: torch.Tensor, cond_h, label_h
    ) -> torch.Tensor:
        """New h-stream values where ``h_cols`` (with h_cols-1 extra columns left) ends."""
        pre = self.linear(f"layers.{i}.h_conv", h_cols).add_(self.linear(f"layers.{i}.link", v_conv))
        out = self.linear(f"layers.{i}.h_out", self.gate(self.plus(self.plus(pre, cond_h), label_h)))
        return out.add_(h_here).clamp_(-Q, Q)

    def attn_weights(self, i: int, scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        logits = torch.round(scores * self.t[f"attn.{i}.score_m"])
        if mask is not None:
            logits = logits.masked_fill(mask, -math.inf)
        drop = torch.clamp(logits.amax(-1, keepdim=True) - logits, 0, EXP_RANGE)
        return self.t["lut.exp_attn"][drop.long()]

    def attn_finish(self, i: int, h: torch.Tensor, weighted: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """h + out(attention output) with the attention output rounded to v's scale."""
        out = torch.round(weighted / total)
        return torch.clamp(h + self.linear(f"attn.{i}.out", out), -Q, Q)

    def head_logits(self, h: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Integer logits in 1/64 nat from the final h-stream (any spatial shape)."""
        for j in range(self.config.out_blocks):
            a = self.linear(f"out.{j}.a", torch.relu(h))
            h = torch.clamp(h + self.linear(f"out.{j}.b", torch.relu(a)), -Q, Q)
        acc = _conv(torch.relu(h), self.t["logits.w"], self.t["logits.b"], self.w_rows["logits"])
        m = self.t["logits.m"] if temperature == 1.0 else self.t["logits.m"] / temperature
        return torch.round(acc * m)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Integer-valued float64 probabilities over dim 1 from integer logits."""
        drop = torch.clamp(logits.amax(1, keepdim=True) - logits, 0, EXP_RANGE)
        return self.t["lut.exp_prob"][drop.long()]

    def condition(
        self, cond: list[torch.Tensor] | None, label: torch.Tensor | None, size: tuple[int, int],
        position_major: bool = False, dtype: torch.dtype = torch.float64,
    ):
        """Per-layer (cond_v, cond_h, label_v, label_h) integer biases at the gate scale. The
        conditioning maps are (B, 2C, H, W), or (H*W, B, 2C) with ``position_major`` (the layout of
        the wavefront stepper; the 1x1 convolution then runs on rows, the same integers), in
        ``dtype``: float32 holds them exactly (integers up to 2**15) in half the memory, and each
        layer's maps are narrowed as they are made, so the float64 maps of only one layer are held."""
        c, layers = self.config.channels, self.config.layers
        feat = self.cond_features(cond, size) if self.config.cond_levels else None
        if feat is None:
            return [(0.0, 0.0, *self.label_biases(label, i)) for i in range(layers)]
        if not position_major:
            return [(*(part.to(dtype) for part in self.linear(f"layers.{i}.cond", feat).split(2 * c, dim=1)),
                     *self.label_biases(label, i)) for i in range(layers)]
        b, cc, hh, ww = feat.shape
        rows = feat.permute(2, 3, 0, 1).reshape(hh * ww * b, cc, 1, 1)
        cv = torch.empty(layers, hh * ww, b, 2 * c, dtype=dtype, device=feat.device)
        ch = torch.empty_like(cv)
        for start in range(0, len(rows), COND_ROWS):  # a block of rows through every layer, in cache
            part = rows[start : start + COND_ROWS]
            for i in range(layers):
                maps = self.linear(f"layers.{i}.cond", part).view(len(part), 4 * c)
                cv[i].view(-1, 2 * c)[start : start + len(part)] = maps[:, : 2 * c]
                ch[i].view(-1, 2 * c)[start : start + len(part)] = maps[:, 2 * c :]
        return [(cv[i], ch[i], *self.label_biases(label, i)) for i in range(layers)]

    def label_biases(self, label: torch.Tensor | None, layer: int) -> tuple:
        """(label_v, label_h) of ``layer``: (B, 2C, 1, 1) each, or zeros without a label."""
        lb, c2 = self.label_bias(label, layer), 2 * self.config.channels
        return (lb[:, :c2], lb[:, c2:]) if torch.is_tensor(lb) else (0.0, 0.0)

    def cond_features(self, cond: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        embedded = [self.t[f"cond.embed.{i}"][codes].permute(0, 3, 1, 2) for i, codes in enumerate(cond)]
        x = self.linear("cond.inp", F.pad(levels_stacked(embedded), (1, 1, 1, 1)))
        for j in range(self.config.cond_blocks):
            a = self.linear(f"cond.block.{j}.conv3", F.pad(torch.relu(x), (1, 1, 1, 1)))
            x = torch.clamp(x + self.linear(f"cond.block.{j}.conv1", torch.relu(a)), -Q, Q)
        x = torch.relu(x).repeat_interleave(2, 2).repeat_interleave(2, 3)[..., : out_size[0], : out_size[1]]
        return self.linear("cond.post", F.pad(x, (1, 1, 1, 1)))

    # -- the parallel pass (encoder) -------------------------------------------------------------
    @torch.no_grad()
    def parallel_hidden(
        self, codes: torch.Tensor, cond: list[torch.Tensor] | None = None, label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final h-stream (B, C, H, W) at every position, given all codes: what the head reads."""
        cfg = self.config
        codes = codes.to(self.device)
        cond = [c.to(self.device) for c in cond] if cond else None
        label = label.to(self.device) if label is not None else None
        biases = self.condition(cond, label, codes.shape[-2:])
        e = self.embed(codes)
        v = F.pad(e, (0, 0, 1, 0))[:, :, :-1]
        h = F.pad(e, (1, 0))[:, :, :, :-1]
        mask = attention_mask(codes.shape[1], codes.shape[2], cfg.attention_reach, self.device)
        for i in range(cfg.layers):
            cv, ch, lv, lh = biases[i]
            v_conv = self.v_layer(i, F.pad(v, (0, 0, cfg.v_rows - 1, 0)))
            h = self.h_layer(i, F.pad(h, (cfg.h_cols - 1, 0)), h, v_conv, ch, lh)
            v = self.gate(v_conv + cv + lv)
            if cfg.attention_after(i):
                h = self.parallel_attention(i, h, mask)
        return h

    def qkv(self, i: int, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v as (B, heads, N, d) from h (B, C, H, W)."""
        b, c, hh, ww = h.shape
        heads = self.config.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, heads, c // heads, hh * ww).transpose(2, 3)

        return tuple(split(self.linear(f"attn.{i}.{n}", h)) for n in "qkv")

    def parallel_attention(self, i: int, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(i, h)
        w = self.attn_weights(i, q @ k.transpose(2, 3), mask)
        weighted = (w @ v).transpose(2, 3).reshape(b, c, hh, ww)
        total = w.sum(-1)[:, :, None, :].expand(b, self.config.heads, c // self.config.heads, hh * ww)
        return self.attn_finish(i, h, weighted, total.reshape(b, c, hh, ww))

    def parallel_probs(
        self, codes: torch.Tensor, cond: list[torch.Tensor] | None = None, label: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Probabilities (B, H, W, K) for every position: what the encoder codes with. The head runs
        on the positions as rows, as the stepper's does: each position's K probabilities come out
        contiguous, as the range coder reads them (the same integers as on the (B, C, H, W) map)."""
        h = self.parallel_hidden(codes, cond, label)
        b, c, hh, ww = h.shape
        rows = h.permute(0, 2, 3, 1).reshape(b * hh * ww, c, 1, 1)
        out = torch.empty(len(rows), self.config.num_codes, dtype=torch.float64, device=self.device)
        for s in range(0, len(rows), HEAD_ROWS):  # every row alone: the same integers in any blocks
            out[s : s + HEAD_ROWS] = self.probs(self.head_logits(rows[s : s + HEAD_ROWS], temperature)).flatten(1)
        return out.view(b, hh, ww, -1)

    @property
    def reach(self) -> int | None:
        """Columns to the right that a code's context reaches in the rows above; None: unbounded
        (attention in raster order sees every earlier position)."""
        cfg = self.config
        return None if cfg.attention_every and not cfg.attention_wavefront else cfg.stack_reach

    def decode_order(self, height: int, width: int, order: str = "fast") -> Order:
        """The steps of decoding a map: ``"raster"``, or ``"fast"``: the wavefront where the reach
        is bounded (raster otherwise)."""
        if order == "raster" or self.reach is None:
            return raster_order(height, width)
        if order != "fast":
            raise ValueError(f"unknown decoding order {order!r}")
        return wavefront_order(height, width, self.reach)

    def stepper(
        self, batch: int, height: int, width: int, cond: list[torch.Tensor] | None = None,
        label: torch.Tensor | None = None, temperature: float = 1.0, order: str = "fast",
        extents: torch.Tensor | None = None,
    ) -> WavefrontStepper:
        """A stepper over ``batch`` maps of ``height`` x ``width`` codes along ``decode_order``
        (raster order is the wavefront whose reach spans the whole row); ``extents`` (B, 2) makes
        map b a map of ``extents[b]`` rows and columns padded to that size (``contract``)."""
        if order not in ("fast", "raster"):
            raise ValueError(f"unknown decoding order {order!r}")
        reach = self.reach if order == "fast" and self.reach is not None else max(width - 1, 0)
        return WavefrontStepper(self, batch, height, width, cond, label, temperature, reach, extents)


@functools.lru_cache(maxsize=16)
def _expected_shapes(config_json: str) -> dict[str, tuple[int, ...]]:
    prior = PixelCNNPrior(PriorConfig.from_dict(json.loads(config_json)))
    return {k: tuple(v.shape) for k, v in quantize(prior, defaultdict(lambda: 1.0)).items()}


def check_tensors(config: PriorConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse tensors that are not exactly those ``quantize`` makes for ``config`` (names and shapes)."""
    want = _expected_shapes(json.dumps(config.to_dict(), sort_keys=True))
    missing = sorted(set(want) - set(tensors))
    if missing:
        more = f" (and {len(missing) - 1} more)" if missing[1:] else ""
        raise VQCodecError(f"tensor '{missing[0]}' is missing{more}")
    extra = sorted(set(tensors) - set(want))
    if extra:
        raise VQCodecError(f"unexpected tensor '{extra[0]}' for this configuration")
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape)
            raise VQCodecError(f"tensor '{name}' has shape {got}, its configuration needs {shape}")
    if "attn.reach" in want and float(tensors["attn.reach"]) != config.stack_reach:
        raise VQCodecError(f"tensor 'attn.reach' is {float(tensors['attn.reach']):g}, its configuration's reach "
                           f"is {config.stack_reach}")


# -- conversion ------------------------------------------------------------------------------------
def calibration_taps(prior: PixelCNNPrior) -> list[Tap]:
    """Where each quantized activation of ``quantize`` comes out of the float model: one range per
    name (the h-stream shares one scale everywhere, so every module that writes it is a tap of "h")."""
    taps = [Tap(prior.embed, "h"), *(Tap(layer, "h", output=1) for layer in prior.layers)]
    for i, att in prior.attention.items():
        taps += [Tap(att, "h"), *(Tap(getattr(att, n), f"attn.{i}.{n}") for n in "qkv")]
    for j, block in enumerate(prior.out_blocks):
        taps += [Tap(block[0], f"out.{j}.a"), Tap(block, "h")]
    cs = prior.cond_stack
    if cs is not None:
        taps += [*(Tap(e, "cond.embed") for e in cs.embeds), Tap(cs.inp, "cond.x"), Tap(cs.post, "cond.feat")]
        for j, block in enumerate(cs.blocks):
            taps += [Tap(block[0], f"cond.block.{j}"), Tap(block, "cond.x")]
    return taps


def _scale(maxabs: float) -> float:
    """Scale so that 1.25x the calibrated range fits in [-Q, Q]."""
    return max(maxabs, 1e-6) * 1.25 / Q


def _quant_conv(
    out: dict, name: str, conv: torch.nn.Conv2d, in_scale: float, out_scale: float | torch.Tensor
) -> None:
    w = conv.weight.detach().double()
    s_w = w.abs().flatten(1).amax(1).clamp(min=1e-12) / W_MAX
    out[f"{name}.w"] = torch.round(w / s_w[:, None, None, None])
    acc_scale = s_w * in_scale
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(s_w)
    out[f"{name}.b"] = torch.round(b / acc_scale)
    out[f"{name}.m"] = (acc_scale / out_scale)[None, :, None, None]


@torch.no_grad()
def quantize(prior: PixelCNNPrior, stats: dict[str, float]) -> dict[str, torch.Tensor]:
    """Integer tensors and float64 multipliers for every layer of ``prior``."""
    cfg, t = prior.config, _lut_tables()
    gate_s, gated_s, logit_s = 2.0**-GATE_FRAC, 2.0**-GATED_FRAC, 2.0**-LOGIT_FRAC
    s_h = _scale(stats["h"])
    t["embed"] = torch.clamp(torch.round(prior.embed.weight.double() / s_h), -Q, Q)
    if prior.cond_stack is not None:
        cs = prior.cond_stack
        s_ce, s_cx, s_cf = _scale(stats["cond.embed"]), _scale(stats["cond.x"]), _scale(stats["cond.feat"])
        for i, emb in enumerate(cs.embeds):
            t[f"cond.embed.{i}"] = torch.clamp(torch.round(emb.weight.double() / s_ce), -Q, Q)
        _quant_conv(t, "cond.inp", cs.inp, s_ce, s_cx)
        for j, (conv3, conv1) in enumerate(cs.blocks):
            s_a = _scale(stats[f"cond.block.{j}"])
            _quant_conv(t, f"cond.block.{j}.conv3", conv3, s_cx, s_a)
            _quant_conv(t, f"cond.block.{j}.conv1", conv1, s_a, s_cx)
        _quant_conv(t, "cond.post", cs.post, s_cx, s_cf)
    for i, layer in enumerate(prior.layers):
        _quant_conv(t, f"layers.{i}.v_conv", layer.v_conv, s_h if i == 0 else gated_s, gate_s)
        _quant_conv(t, f"layers.{i}.h_conv", layer.h_conv, s_h, gate_s)
        _quant_conv(t, f"layers.{i}.link", layer.link, gate_s, gate_s)
        _quant_conv(t, f"layers.{i}.h_out", layer.h_out, gated_s, s_h)
        if layer.cond is not None:
            _quant_conv(t, f"layers.{i}.cond", layer.cond, s_cf, gate_s)
        if layer.label is not None:
            t[f"layers.{i}.label"] = torch.round(layer.label.weight.double() / gate_s)
        if str(i) in prior.attention:
            att = prior.attention[str(i)]
            s = {n: _scale(stats[f"attn.{i}.{n}"]) for n in "qkv"}
            for n in "qkv":
                _quant_conv(t, f"attn.{i}.{n}", getattr(att, n), s_h, s[n])
            d = cfg.channels // cfg.heads
            t[f"attn.{i}.score_m"] = torch.tensor(s["q"] * s["k"] / math.sqrt(d) / logit_s, dtype=torch.float64)
            _quant_conv(t, f"attn.{i}.out", att.out, s["v"], s_h)
    if cfg.attention_every and cfg.attention_wavefront:  # the mask is part of the function, so of the fingerprint
        t["attn.reach"] = torch.tensor(float(cfg.stack_reach), dtype=torch.float64)
    for j, (a, b) in enumerate(prior.out_blocks):
        s_a = _scale(stats[f"out.{j}.a"])
        _quant_conv(t, f"out.{j}.a", a, s_h, s_a)
        _quant_conv(t, f"out.{j}.b", b, s_a, s_h)
    _quant_conv(t, "logits", prior.logits, s_h, logit_s)
    return t


FREE_RANGE = 8.0  # the float range given to an activation whose scale the integer twin does not keep


@torch.no_grad()
def dequantize(cfg: PriorConfig, t: dict[str, torch.Tensor]) -> PixelCNNPrior:
    """The inverse of ``quantize``: a float prior computing the same function as the integer tensors
    ``t``, up to their roundings. A convolution's integers keep only the ratio of its input and
    output scales (``m``), so the scales ``quantize`` took from calibration are not recoverable; the
    gates', gated outputs' and logits' scales are fixed constants, and every other activation (the
    h-stream, the conditioning stack, the attention's values, the head's blocks) is given the scale
    of a float range of ``FREE_RANGE``. Linear maps, ReLUs and residual sums do not care which scale
    an activation has, so the function is the same whatever it is; the attention's q and k share
    their product's scale, which ``score_m`` keeps."""
    t = {k: v.detach().double().cpu() for k, v in t.items()}
    prior = PixelCNNPrior(cfg).double()
    gate_s, gated_s, logit_s = 2.0**-GATE_FRAC, 2.0**-GATED_FRAC, 2.0**-LOGIT_FRAC
    free = _scale(FREE_RANGE)
    s_h = free
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, module: str, in_scale: float, out_scale: float) -> None:
        s_w = t[f"{name}.m"].reshape(-1) * out_scale / in_scale  # m = s_w * in_scale / out_scale
        state[f"{module}.weight"] = t[f"{name}.w"] * s_w[:, None, None, None]
        state[f"{module}.bias"] = t[f"{name}.b"] * s_w * in_scale

    state["embed.weight"] = t["embed"] * s_h
    if cfg.cond_levels:
        for i in range(cfg.cond_levels):
            state[f"cond_stack.embeds.{i}.weight"] = t[f"cond.embed.{i}"] * free
        conv("cond.inp", "cond_stack.inp", free, free)
        for j in range(cfg.cond_blocks):
            conv(f"cond.block.{j}.conv3", f"cond_stack.blocks.{j}.0", free, free)
            conv(f"cond.block.{j}.conv1", f"cond_stack.blocks.{j}.1", free, free)
        conv("cond.post", "cond_stack.post", free, free)
    for i in range(cfg.layers):
        conv(f"layers.{i}.v_conv", f"layers.{i}.v_conv", s_h if i == 0 else gated_s, gate_s)
        conv(f"layers.{i}.h_conv", f"layers.{i}.h_conv", s_h, gate_s)
        conv(f"layers.{i}.link", f"layers.{i}.link", gate_s, gate_s)
        conv(f"layers.{i}.h_out", f"layers.{i}.h_out", gated_s, s_h)
        if cfg.cond_levels:
            conv(f"layers.{i}.cond", f"layers.{i}.cond", free, gate_s)
        if cfg.num_classes:
            state[f"layers.{i}.label.weight"] = t[f"layers.{i}.label"] * gate_s
        if cfg.attention_after(i):
            d = cfg.channels // cfg.heads
            s_qk = math.sqrt(float(t[f"attn.{i}.score_m"]) * math.sqrt(d) * logit_s)
            conv(f"attn.{i}.q", f"attention.{i}.q", s_h, s_qk)
            conv(f"attn.{i}.k", f"attention.{i}.k", s_h, s_qk)
            conv(f"attn.{i}.v", f"attention.{i}.v", s_h, free)
            conv(f"attn.{i}.out", f"attention.{i}.out", free, s_h)
    for j in range(cfg.out_blocks):
        conv(f"out.{j}.a", f"out_blocks.{j}.0", s_h, free)
        conv(f"out.{j}.b", f"out_blocks.{j}.1", free, s_h)
    conv("logits", "logits", s_h, logit_s)
    prior.load_state_dict(state)  # strict: a tensor this function forgot is an error, not a random weight
    return prior.float().eval()
