"""Hierarchical VQ-VAE (VQ-VAE-2, Razavi et al. 2019, section 3.1 and appendix).

Level 0 (bottom) codes an image at 1/4 resolution, each further level halves it again (2 levels:
1/4 and 1/8; 3 levels: 1/4, 1/8, 1/16). Quantization runs top-down: each lower level quantizes its
encoder features concatenated with the level above decoded back to its resolution, so the bottom
codes only carry what the top does not. The decoder is feed-forward and takes every level.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vqcodec.resample import resize
from vqcodec.vqvae.quantizer import VectorQuantizerEMA
from vqcodec.vqvae.upscaler import Upscaler

BOTTOM_STRIDE = 4  # pixels per bottom-level code; each level above halves the resolution again
LEVEL_NAMES = {2: ["bottom", "top"], 3: ["bottom", "middle", "top"]}


@dataclass
class VQVAEConfig:
    """Sizes of the stage-1 model; stored as JSON in every checkpoint."""

    in_channels: int = 3
    hidden: int = 128
    res_channels: int = 64
    res_blocks: int = 2
    num_codes: int = 512
    code_dim: int = 64
    levels: int = 2
    beta: float = 0.25
    decay: float = 0.99
    decoder_extra_blocks: int = 0  # residual blocks the decoder adds to the paper's (``vqcodec train --refit``)
    dropped_levels: int = 0  # lowest levels not coded (a lower rate): their codes are always 0
    upscaler_channels: int = 0  # a learned upscaler for rungs coded below full size (0: bicubic only)
    upscaler_layers: int = 0

    def level_stride(self, level: int) -> int:
        """Pixels per code of ``level`` (0 = bottom)."""
        return BOTTOM_STRIDE << level

    @property
    def stride(self) -> int:
        """Pixels per top-level code: images are padded to a multiple of this."""
        return self.level_stride(self.levels - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VQVAEConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


SPLIT = 2  # output-channel groups of every convolution inside split_convolutions(), whatever the thread count
_split = threading.local()  # .pool: the thread pool of split_convolutions(); unset outside it


@contextlib.contextmanager
def split_convolutions(workers: int) -> Iterator[None]:
    """Inside this context every convolution of the VQ-VAE computes its output channels as SPLIT
    fixed groups, each an ordinary convolution, up to ``workers`` of them at once in Python threads.

    Run under ``priors.autoregress.one_thread()``, every group is computed on one CPU thread, so the
    bits depend only on the image: oneDNN and MKL sum in an order that depends on the thread count
    (it moved a code that lay near a tie between two codebook vectors when compressing with 1 or 2
    threads), and a fixed split runs on several cores without that. The codec encodes this way."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, SPLIT)))
    _split.pool = pool
    try:
        yield
    finally:
        _split.pool = None
        pool.shutdown()


def chunk_map() -> Callable:
    """``map`` over independent chunks of work: on split_convolutions' threads inside it, else here."""
    pool = getattr(_split, "pool", None)
    return map if pool is None else pool.map


def _in_groups(layer: nn.Module, x: torch.Tensor, part) -> torch.Tensor | None:
    """``part(a, b)`` (output channels a..b) for each group of ``layer``, concatenated; None outside
    ``split_convolutions`` (or for a layer too narrow to split), to run the layer whole."""
    pool = getattr(_split, "pool", None)
    cout = layer.out_channels
    if pool is None or cout < 2 * SPLIT:
        return None
    bounds = [cout * g // SPLIT for g in range(SPLIT + 1)]
    grad = torch.is_grad_enabled()  # thread-local: the pool's threads take the caller's

    def run(g: int) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return part(bounds[g], bounds[g + 1])

    parts = list(pool.map(run, range(SPLIT)))
    if grad:
        return torch.cat(parts, 1)
    # the parts go into place on the pool's threads too, through the ReLU that follows the layer if
    # one does (``ReLU`` then passes the output through): the same values, with neither pass left
    # on one thread
    # in the layout torch.cat would give: the next convolution's order of summation depends on it
    first = parts[0]
    nhwc = first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    out = torch.empty((first.shape[0], cout, *first.shape[2:]), dtype=first.dtype, device=first.device,
                      memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    relu = getattr(layer, "relu_after", False)

    def place(g: int) -> None:
        if relu:
            torch.clamp_min(parts[g], 0, out=out[:, bounds[g] : bounds[g + 1]])
        else:
            out[:, bounds[g] : bounds[g + 1]] = parts[g]

    list(pool.map(place, range(SPLIT)))
    if relu:
        out.nonnegative = True
    return out


class ReLU(nn.ReLU):
    """``nn.ReLU`` that passes on a tensor a split layer already rectified (``_in_groups``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if getattr(x, "nonnegative", False) else super().forward(x)


def fuse_relus(layers: list[nn.Module]) -> list[nn.Module]:
    """Mark each layer that a ``ReLU`` follows (``relu_after``): split, it rectifies its own output."""
    for layer, after in zip(layers, layers[1:]):
        if isinstance(after, ReLU) and isinstance(layer, Conv2d | ConvTranspose2d | PointwiseConv):
            layer.relu_after = True
    return layers


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, initialisation and state-dict keys) that can run split
    (``split_convolutions``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def part(a: int, b: int) -> torch.Tensor:
            bias = self.bias[a:b] if self.bias is not None else None
            return F.conv2d(x, self.weight[a:b], bias, self.stride, self.padding, self.dilation, self.groups)

        out = _in_groups(self, x, part)
        return super().forward(x) if out is None else out


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that can run split (``split_convolutions``)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        def part(a: int, b: int) -> torch.Tensor:
            bias = self.bias[a:b] if self.bias is not None else None
            return F.conv_transpose2d(x, self.weight[:, a:b], bias, self.stride, self.padding, self.output_padding,
                                      self.groups, self.dilation)

        out = _in_groups(self, x, part) if output_size is None else None
        return super().forward(x, output_size) if out is None else out


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution computed as one matrix product (weights x channels) per image.

    Same parameters, initialisation and state-dict keys as ``nn.Conv2d(cin, cout, 1)`` (and, for the
    shipped model's shapes, the same bits as its single-threaded result). oneDNN's multi-threaded 1x1
    convolution sums in an order that depends on the thread count; the matrix product does not,
    except for maps of a few dozen positions, where MKL may split even a matrix product across
    threads (so the codec runs the VQ-VAE's convolutions on one thread each, ``split_convolutions``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        flat = x.reshape(b, self.in_channels, h * w)

        def part(lo: int, hi: int) -> torch.Tensor:
            # one image (the codec's windows): one plain product, written where it belongs;
            # torch.matmul(weight, flat) gives the same bits through a transposed result and a copy
            # that took 30 % of the decoder's time
            weight = self.weight[lo:hi, :, 0, 0]
            if b > 1 or torch.is_grad_enabled():  # batches, training (autograd takes no out=)
                out = torch.matmul(weight, flat)
                out = out if self.bias is None else out + self.bias[lo:hi, None]
                return out.reshape(b, hi - lo, h, w)
            out = flat.new_empty(hi - lo, h * w)
            torch.mm(weight, flat[0], out=out)
            if self.bias is not None:
                out.add_(self.bias[lo:hi, None])
            return out.view(1, hi - lo, h, w)

        out = _in_groups(self, x, part)
        return part(0, self.out_channels) if out is None else out


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*fuse_relus([
            ReLU(),
            Conv2d(channels, res_channels, 3, padding=1),
            ReLU(),
            PointwiseConv(res_channels, channels),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _res_stack(channels: int, res_channels: int, blocks: int) -> list[nn.Module]:
    return [ResBlock(channels, res_channels) for _ in range(blocks)] + [ReLU()]


class Encoder(nn.Module):
    """Strided 4x4 convolutions down by ``stride`` (2 or 4), then residual blocks."""

    def __init__(self, cin: int, hidden: int, res_channels: int, res_blocks: int, stride: int) -> None:
        super().__init__()
        if stride == 4:
            layers = [
                Conv2d(cin, hidden // 2, 4, stride=2, padding=1),
                ReLU(),
                Conv2d(hidden // 2, hidden, 4, stride=2, padding=1),
                ReLU(),
                Conv2d(hidden, hidden, 3, padding=1),
            ]
        else:
            layers = [
                Conv2d(cin, hidden // 2, 4, stride=2, padding=1),
                ReLU(),
                Conv2d(hidden // 2, hidden, 3, padding=1),
            ]
        self.net = nn.Sequential(*fuse_relus([*layers, *_res_stack(hidden, res_channels, res_blocks)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Residual blocks, then transposed 4x4 convolutions up by ``stride`` (2 or 4).

    ``extra_blocks`` more residual blocks (``extra``) run after the paper's, before its last ReLU.
    They start as the identity (their last convolution is zero), so a decoder grown from a trained
    one computes the same images until fine-tuning improves them; with none, the module and its
    tensors are the paper's."""

    def __init__(
        self, cin: int, cout: int, hidden: int, res_channels: int, res_blocks: int, stride: int,
        extra_blocks: int = 0,
    ) -> None:
        super().__init__()
        self.split = 1 + res_blocks  # layers of ``net`` before the residual stack's last ReLU
        if extra_blocks:
            self.extra = nn.Sequential(*[ResBlock(hidden, res_channels) for _ in range(extra_blocks)])
            for block in self.extra:
                nn.init.zeros_(block.body[-1].weight)
                nn.init.zeros_(block.body[-1].bias)
        layers = [Conv2d(cin, hidden, 3, padding=1), *_res_stack(hidden, res_channels, res_blocks)]
        if stride == 4:
            layers += [
                ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1),
                ReLU(),
                ConvTranspose2d(hidden // 2, cout, 4, stride=2, padding=1),
            ]
        else:
            layers += [ConvTranspose2d(hidden, cout, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*fuse_relus(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "extra"):
            return self.net(x)
        return self.net[self.split :](self.extra(self.net[: self.split](x)))


def _upsampler(dim: int, factor_log2: int) -> nn.Module:
    """Transposed convolutions bringing a level's codes to the bottom resolution."""
    if factor_log2 == 0:
        return nn.Identity()
    layers: list[nn.Module] = []
    for i in range(factor_log2):
        layers.append(ConvTranspose2d(dim, dim, 4, stride=2, padding=1))
        if i < factor_log2 - 1:
            layers.append(ReLU())
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    """The stage-1 model. ``forward`` returns (reconstruction, latent loss, codes per level)."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or VQVAEConfig()
        if c.levels not in (2, 3):
            raise ValueError("levels must be 2 or 3")
        if not 0 <= c.dropped_levels < c.levels:
            raise ValueError("dropped_levels must leave at least the top level")
        h, r, n, d = c.hidden, c.res_channels, c.res_blocks, c.code_dim
        self.encoders = nn.ModuleList(
            [Encoder(c.in_channels, h, r, n, BOTTOM_STRIDE)] + [Encoder(h, h, r, n, 2) for _ in range(c.levels - 1)]
        )
        # Level l's quantizer sees its features plus (below the top) the conditioning from above.
        self.pre_quant = nn.ModuleList(
            [PointwiseConv(h + (d if lvl < c.levels - 1 else 0), d) for lvl in range(c.levels)]
        )
        # cond[l] decodes level l+1 (its codes and its own conditioning) to level l's resolution.
        self.cond_decoders = nn.ModuleList(
            [
                Decoder(d + (d if lvl + 1 < c.levels - 1 else 0), d, h, r, n, 2)
                for lvl in range(c.levels - 1)
            ]
        )
        self.quantizers = nn.ModuleList(
            [VectorQuantizerEMA(c.num_codes, d, c.decay) for _ in range(c.levels)]
        )
        self.upsamplers = nn.ModuleList([_upsampler(d, lvl) for lvl in range(c.levels)])
        self.decoder = Decoder(d * c.levels, c.in_channels, h, r, n, BOTTOM_STRIDE, c.decoder_extra_blocks)
        if c.upscaler_channels:
            self.upscaler = Upscaler(c.in_channels, c.upscaler_channels, c.upscaler_layers)
        self.frozen_codes = False  # see freeze_codes

    def freeze_codes(self) -> None:
        """Fix the encoder and the codebooks, so the codes of every image stay what they are and the
        priors trained on them stay valid: only the decoder (and the upsamplers feeding it) learns."""
        self.frozen_codes = True
        for module in (self.encoders, self.pre_quant, self.cond_decoders, self.quantizers):
            module.requires_grad_(False)
        for lvl in range(self.config.dropped_levels):  # they only predict a dropped level
            self.pre_quant[lvl].requires_grad_(True)
            self.cond_decoders[lvl].requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> VQVAE:
        super().train(mode)
        if self.frozen_codes:  # no EMA codebook updates, no restarts
            self.quantizers.train(False)
        return self

    # -- padding: any input size works; the model sees a multiple of its stride ------------
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.stride
        ph, pw = (-x.shape[2]) % s, (-x.shape[3]) % s
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def code_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Code-map sizes (bottom first) for an image of the given size."""
        c = self.config
        hp, wp = -(-height // c.stride) * c.stride, -(-width // c.stride) * c.stride
        return [(hp // c.level_stride(lvl), wp // c.level_stride(lvl)) for lvl in range(c.levels)]

    def _quantize_all(self, x: torch.Tensor, latents: list | None = None, with_loss: bool = True):
        """(quantized, codes, commitment loss) of every level, bottom first; ``latents``, if given,
        receives each coded level's quantizer input (B, D, H, W), top first; ``with_loss`` False
        (encoding) leaves the loss zero."""
        feats = [self.encoders[0](x)]
        for enc in self.encoders[1:]:
            feats.append(enc(feats[-1]))
        quant: list[torch.Tensor] = [None] * self.config.levels  # type: ignore[list-item]
        codes: list[torch.Tensor] = [None] * self.config.levels  # type: ignore[list-item]
        loss = x.new_zeros(())
        cond = None
        dropped = self.config.dropped_levels
        for lvl in reversed(range(dropped, self.config.levels)):
            inp = feats[lvl] if cond is None else torch.cat([feats[lvl], cond], 1)
            z = self.pre_quant[lvl](inp)
            if latents is not None:
                latents.append(z)
            q, commit, idx = self.quantizers[lvl](z, chunk_map(), with_loss)
            quant[lvl], codes[lvl] = q, idx
            loss = loss + commit
            if lvl > dropped:
                up_in = q if cond is None else torch.cat([q, cond], 1)
                cond = self.cond_decoders[lvl - 1](up_in)
        if dropped:
            quant[:dropped] = self.predict_dropped(quant)
            codes[:dropped] = [torch.zeros(q.shape[0:1] + q.shape[2:], dtype=torch.long, device=q.device)
                               for q in quant[:dropped]]
        return quant, codes, loss

    def predict_dropped(self, quant: list[torch.Tensor | None]) -> list[torch.Tensor]:
        """The decoder's input in place of each dropped level (bottom first): predicted from the coded
        levels above by that level's conditioning decoder and quantizer input, fed no encoder features
        (the decoder has none). Those two modules serve nothing else in a model that drops the level,
        so they are trained for this (``freeze_codes`` leaves them free)."""
        c = self.config
        cond = None
        out: list[torch.Tensor] = []
        for lvl in reversed(range(1, c.levels)):
            q = quant[lvl] if lvl >= c.dropped_levels else out[-1]
            up_in = q if cond is None else torch.cat([q, cond], 1)
            cond = self.cond_decoders[lvl - 1](up_in)
            if lvl - 1 < c.dropped_levels:
                b, _, h, w = cond.shape
                blank = cond.new_zeros((b, c.hidden, h, w))
                out.append(self.pre_quant[lvl - 1](torch.cat([blank, cond], 1)))
        return out[::-1]

    def freeze_decoder(self) -> None:
        """With ``freeze_codes``: only the upscaler learns (the decoder's pixels at the coded size stay)."""
        self.decoder.requires_grad_(False)
        self.upsamplers.requires_grad_(False)
        for lvl in range(self.config.dropped_levels):
            self.pre_quant[lvl].requires_grad_(False)
            self.cond_decoders[lvl].requires_grad_(False)

    def resize_back(self, recon: torch.Tensor, width: int, height: int, workers: int = 1) -> torch.Tensor:
        """The decoder's output ``recon`` at the coded size brought to ``width`` x ``height`` pixels:
        antialiased bicubic (``vqcodec.resample``), then the learned upscaler when the model has one
        and the image was coded smaller than it is (its bands up to ``workers`` at once)."""
        out = resize(recon, width, height)
        if hasattr(self, "upscaler") and width > recon.shape[-1]:
            out = self.upscaler(out, width / recon.shape[-1], workers)
        return out

    def decode_quantized(self, quant: list[torch.Tensor]) -> torch.Tensor:
        ups = [up(q) for up, q in zip(self.upsamplers, quant)]
        return self.decoder(torch.cat(ups, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``x`` in [0, 1]; any size. Returns reconstruction in [0,1] scale, beta*commitment, codes."""
        h, w = x.shape[2:]
        if self.frozen_codes:
            with torch.no_grad():
                quant, codes, _ = self._quantize_all(self.pad(x) - 0.5)
            if self.config.dropped_levels:  # the prediction of a dropped level learns
                quant[: self.config.dropped_levels] = self.predict_dropped(quant)
            commit = x.new_zeros(())
        else:
            quant, codes, commit = self._quantize_all(self.pad(x) - 0.5)
        recon = self.decode_quantized(quant)[:, :, :h, :w] + 0.5
        return recon, self.config.beta * commit, codes

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Code maps (bottom first), each (B, H_l, W_l) int64, for images ``x`` in [0, 1]."""
        return self._quantize_all(self.pad(x) - 0.5, with_loss=False)[1]

    @torch.no_grad()
    def encode_candidates(self, x: torch.Tensor, k: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """``encode``'s code maps, and for the bottom level the ``k`` nearest codes of each latent
        vector (B, H, W, k) with their squared distances (B, H, W, k): the choices a rate-aware
        encoder weighs (``coding.rdo``). The codes above are fixed first, as ``encode`` fixes them."""
        if self.config.dropped_levels:
            raise ValueError("a model that drops its bottom level has no bottom codes to choose")
        latents: list[torch.Tensor] = []
        codes = self._quantize_all(self.pad(x) - 0.5, latents, with_loss=False)[1]
        idx, dist = self.quantizers[0].candidates(latents[-1].permute(0, 2, 3, 1), k, chunk_map())
        return codes, idx, dist

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        """Images in [0, 1] (unclamped) from code maps, cropped to ``height`` x ``width``."""
        dropped = self.config.dropped_levels
        quant = [None] * dropped + [q.lookup(c).permute(0, 3, 1, 2)
                                    for q, c in zip(self.quantizers[dropped:], codes[dropped:])]
        if dropped:
            quant[:dropped] = self.predict_dropped(quant)
        return self.decode_quantized(quant)[:, :, :height, :width] + 0.5
