"""Where a vqcodec file's bits go, level by level: coded bits against two lower bounds.

For each level of an image's code maps this measures three numbers of bits:

* ``coded``: what the range coder writes for that level, each tile's symbols of the level coded
  alone (so it includes the coder's finite precision and each tile stream's final-word padding);
* ``cross_entropy``: sum of -log2 p(code) under the integer prior's probabilities, the exact
  probabilities the coder uses. ``coded / cross_entropy - 1`` is the coding overhead;
* ``unigram``: the entropy of the codes' histogram (over every image measured together) times the
  number of codes: what a coder without context would need. ``cross_entropy / unigram`` is what the
  prior's context buys.

``payload_bits`` is the real thing: the tile payloads of the ``.vqc`` file (all levels of a tile in
one stream), read from the file when it is given, else made by ``coding.tile_codec.encode_tiles``.
A file adds its header and checksums on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vqcodec.codec import image_codes
from vqcodec.coding.bitstream import unpack
from vqcodec.coding.range_coder import encode_symbols
from vqcodec.coding.tile_codec import encode_tiles, tile_symbols
from vqcodec.vqvae import LEVEL_NAMES
from vqcodec.zoo.codec_model import CodecModel


@dataclass
class LevelBits:
    """Bits of one level of one or more images (sums, so images add up)."""

    codes: int = 0
    coded: float = 0.0
    cross_entropy: float = 0.0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, other: LevelBits) -> LevelBits:
        size = max(len(self.histogram), len(other.histogram))
        hist = np.zeros(size, dtype=np.int64)
        hist[: len(self.histogram)] += self.histogram
        hist[: len(other.histogram)] += other.histogram
        return LevelBits(self.codes + other.codes, self.coded + other.coded,
                         self.cross_entropy + other.cross_entropy, hist)

    @property
    def unigram_entropy(self) -> float:
        """Entropy in bits per code of the codes' histogram."""
        counts = self.histogram[self.histogram > 0].astype(np.float64)
        if counts.sum() == 0:
            return 0.0
        p = counts / counts.sum()
        return float(-(p * np.log2(p)).sum())

    def per_code(self) -> dict[str, float]:
        """Bits per code: coded, cross-entropy, unigram entropy, and the two ratios."""
        n = max(self.codes, 1)
        coded, ce, h = self.coded / n, self.cross_entropy / n, self.unigram_entropy
        return {
            "codes": self.codes, "coded_bits_per_code": coded, "cross_entropy_bits_per_code": ce,
            "unigram_entropy_bits_per_code": h,
            "coding_overhead_percent": 100.0 * (coded / ce - 1.0) if ce > 0 else float("nan"),
            "cross_entropy_over_unigram": ce / h if h > 0 else float("nan"),
        }


@dataclass
class CodingStats:
    """Per-level bits (bottom first) and the total payload of one or more images."""

    levels: list[LevelBits]
    payload_bits: int = 0
    pixels: int = 0
    images: int = 1

    def add(self, other: CodingStats) -> CodingStats:
        if not self.levels:
            return other
        return CodingStats([a.add(b) for a, b in zip(self.levels, other.levels)],
                           self.payload_bits + other.payload_bits, self.pixels + other.pixels,
                           self.images + other.images)

    def table(self) -> list[dict]:
        """One dict per level, top level first: its name, codes per image and bits per code."""
        names = LEVEL_NAMES.get(len(self.levels), [str(i) for i in range(len(self.levels))])
        return [{"level": names[i], "codes_per_image": self.levels[i].codes / max(self.images, 1),
                 **self.levels[i].per_code()} for i in reversed(range(len(self.levels)))]


@torch.no_grad()
def coding_stats(model: CodecModel, pixels: np.ndarray, data: bytes | None = None, bit_depth: int = 8,
                 tile: int | None = None) -> CodingStats:
    """The bits of each level of one image (H, W, C) as ``vqcodec.compress`` codes it; ``data``,
    the image's ``.vqc`` file when at hand, gives the payload without coding it again (and the size
    the image was coded at)."""
    head = unpack(data).header if data is not None else None
    tile = head.tile_size if head is not None else (tile or model.tile)
    h, w = pixels.shape[:2]
    size = (head.coded_width, head.coded_height) if head is not None else (w, h)
    codes = image_codes(model, pixels if pixels.ndim == 3 else pixels[..., None], bit_depth, size)
    levels = level_bits(model.priors, codes, tile)
    payloads = unpack(data).tiles if data is not None else encode_tiles(model.priors, codes, tile)
    return CodingStats(levels, 8 * sum(len(p) for p in payloads), h * w)


@torch.no_grad()
def level_bits(priors: Sequence, codes: Sequence[torch.Tensor], tile: int) -> list[LevelBits]:
    """Bits of each level (bottom first) of code maps (each (1, H_l, W_l)) in tiles of ``tile``
    bottom codes, under the integer priors' probabilities."""
    levels = len(priors)
    num_codes = [int(p.config.num_codes) for p in priors]
    stats = [LevelBits(histogram=np.zeros(num_codes[lv], dtype=np.int64)) for lv in range(levels)]
    for _, parts in tile_symbols(priors, codes, tile):
        for level, (symbols, probs) in zip(reversed(range(levels)), parts):
            rows = np.ascontiguousarray(probs.cpu().numpy(), dtype=np.float64)
            chosen = rows[np.arange(len(symbols)), symbols]
            s = stats[level]
            s.codes += len(symbols)
            s.cross_entropy += float(-np.log2(chosen / rows.sum(axis=1)).sum())
            s.coded += 8 * len(encode_symbols([(symbols, rows)]))
            s.histogram += np.bincount(symbols, minlength=num_codes[level])
    return stats
