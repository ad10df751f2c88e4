"""Code maps <-> one range-coded payload per tile, with the integer priors' probabilities.

Within a tile the top level is coded first, then each lower level conditioned on the levels above,
each level's symbols in its prior's decoding order (``order``: "raster", as format version 1
wrote them, or "fast", the wavefront where a prior allows it) -- the order in which
``priors.autoregress.generate`` decodes them. The encoder computes every probability in one
parallel pass per level; the decoder recomputes them step by step, and the integer priors
guarantee both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from vqcodec.coding.range_coder import TileDecoders, encode_symbols
from vqcodec.coding.tiles import Tile, shape_groups, tile_grid
from vqcodec.errors import VQCodecError
from vqcodec.priors.autoregress import Pick, generate, levels_above, one_thread
from vqcodec.priors.contract import IntegerPrior
from vqcodec.priors.uncoded import is_uncoded
from vqcodec.priors.wavefront import flat_positions

BATCH_TILES = 32  # tiles decoded together: big enough to amortise each step, small enough to bound memory
ENCODE_BATCH_TILES = 8  # tiles the encoder's parallel pass holds at once (its cost hardly depends on it)


def _batches(tiles: list[Tile], only: set[int] | None = None, size: int = BATCH_TILES) -> list[list[int]]:
    """Tile indices in batches of one shape and at most ``size`` (memory stays bounded at any size)."""
    out = []
    for idx in shape_groups(tiles):
        idx = [k for k in idx if only is None or k in only]
        out += [idx[s : s + size] for s in range(0, len(idx), size)]
    return out


def _windows(maps: Sequence[torch.Tensor], tiles: list[Tile], idx: list[int]) -> list[torch.Tensor]:
    """The windows of tiles ``idx`` stacked into a batch, for every level of ``maps`` (each (1, H, W))."""
    return [torch.stack([m[0][tiles[k].window(lv)] for k in idx]) for lv, m in enumerate(maps)]


@torch.no_grad()
def tile_symbols(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], tile: int, order: str = "fast"
) -> Iterator[tuple[int, list[tuple[np.ndarray, torch.Tensor]]]]:
    """(tile index, what its stream codes: per level, top first, the symbols (N,) and their
    probability rows (N, K) in decoding order), one batch of tiles at a time, so the probability
    rows of only one batch are ever held (they are 4 KB per code)."""
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], tile)
    for idx in _batches(tiles, size=ENCODE_BATCH_TILES):
        batch = _windows(codes, tiles, idx)
        parts: list[list] = [[] for _ in idx]
        for level in reversed(range(len(priors))):
            if is_uncoded(priors[level]):
                continue  # nothing to write: its codes are 0
            probs = priors[level].parallel_probs(batch[level], levels_above(batch, level))
            steps = priors[level].decode_order(probs.shape[1], probs.shape[2], order)
            rows, cols = (torch.from_numpy(a) for a in flat_positions(steps))
            for j in range(len(idx)):
                parts[j].append((batch[level][j][rows, cols].cpu().numpy(), probs[j][rows, cols]))
        yield from zip(idx, parts)


def encode_tiles(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], tile: int, order: str = "fast"
) -> list[bytes]:
    """Tile payloads for code maps (bottom first, each (1, H_l, W_l)), tiles in raster order."""
    payloads = dict((k, encode_symbols(parts)) for k, parts in tile_symbols(priors, codes, tile, order))
    return [payloads[k] for k in range(len(payloads))]


def _from_stream(decoders: TileDecoders) -> Pick:
    """Choose each code as the range decoder reads it under the prior's probabilities."""
    def pick(level: int, probs: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
        if probs.shape[-1] == 1:  # an uncoded level (priors.uncoded): nothing was written
            return torch.zeros(probs.shape[:2], dtype=torch.long)
        return torch.stack([decoders.decode(probs[:, p]) for p in range(probs.shape[1])], 1)

    return pick


@torch.no_grad()
def decode_tiles(
    priors: Sequence[IntegerPrior], shapes: Sequence[tuple[int, int]], payloads: Sequence[bytes], tile: int,
    only: set[int] | None = None, order: str = "fast",
) -> list[torch.Tensor]:
    """Code maps (each (1, H_l, W_l)) from tile payloads: all tiles of a shape decode together.
    With ``only``, just those tiles are decoded (the rest of the maps stay 0)."""
    tiles = tile_grid(shapes[0][0], shapes[0][1], tile)
    if len(tiles) != len(payloads):
        raise VQCodecError(f"the file holds {len(payloads)} tiles where its geometry needs {len(tiles)}")
    maps = [torch.zeros((1, *s), dtype=torch.long, device=priors[0].device) for s in shapes]
    with one_thread():
        for idx in _batches(tiles, only):
            decoders = TileDecoders([payloads[k] for k in idx])
            first = tiles[idx[0]]
            sizes = [(first.height >> lv, first.width >> lv) for lv in range(len(priors))]
            decoded = generate(priors, sizes, len(idx), _from_stream(decoders), order=order)
            for lv, batch in enumerate(decoded):
                for j, k in enumerate(idx):
                    maps[lv][0][tiles[k].window(lv)] = batch[j]
    return maps
