"""Code maps <-> one range-coded payload per tile, with the integer priors' probabilities.

Within a tile the top level is coded first, then each lower level conditioned on the levels above,
each level's symbols in its prior's decoding order (``order``: "raster", as format version 1
wrote them, or "fast", the wavefront where a prior allows it) -- the order in which
``priors.autoregress.generate`` decodes them. The encoder computes every probability in one
parallel pass per level; the decoder recomputes them step by step, and the integer priors
guarantee both give the same numbers. The decoder runs up to ``BATCH_TILES`` tiles of any shapes
as one batch, and its batches in as many forked processes as it has cores (``vqcodec.workers``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vqcodec.coding.bitstream import code_checksum
from vqcodec.coding.range_coder import TileDecoders, encode_symbols
from vqcodec.coding.tiles import Tile, shape_groups, tile_grid
from vqcodec.errors import VQCodecError
from vqcodec.priors.autoregress import Pick, generate, levels_above, one_thread
from vqcodec.priors.contract import IntegerPrior, ordered_probs
from vqcodec.priors.uncoded import is_uncoded
from vqcodec.priors.wavefront import flat_positions
from vqcodec.workers import fork_workers, map_forked

BATCH_TILES = 48  # tiles decoded together: big enough to amortise each step, small enough to bound memory (~8 MB each)
BATCH_TILE_AREA = 32 * 32  # ... each of at most this many codes: larger tiles make batches of fewer
# bottom codes whose probabilities (4 KB a code) the encoder holds at once, over all its threads:
# 32 MB, 8 tiles of 32 codes or 2 of 64 (the cost hardly depends on it; 32 tiles of 32 took the
# encode peak at Kodak's size to 1 GB)
ENCODE_BATCH_CODES = 8192


def encode_batch_tiles(tile: int, workers: int = 1) -> int:
    """Tiles of ``tile`` x ``tile`` bottom codes in one encoder batch, ``workers`` batches at once
    (``ENCODE_BATCH_CODES``)."""
    return max(1, ENCODE_BATCH_CODES // (max(1, workers) * tile * tile))


def _batches(tiles: list[Tile], size: int) -> list[list[int]]:
    """Tile indices in batches of one shape and at most ``size`` (memory stays bounded at any size)."""
    out = []
    for idx in shape_groups(tiles):
        out += [idx[s : s + size] for s in range(0, len(idx), size)]
    return out


def _decode_batches(tiles: list[Tile], only: set[int] | None = None, workers: int = 1) -> list[list[int]]:
    """Tile indices in as few batches of at most ``BATCH_TILES`` as there can be (fewer for tiles of
    more than ``BATCH_TILE_AREA`` codes: a batch's memory stays bounded), and a multiple of
    ``workers`` where there are enough tiles, of even sizes: tiles of a shape stay together, and the
    tiles cut by the map's edges ride along with the full ones (the stepper pads them), so an image
    of any size takes about as many sequential steps as one of whole tiles."""
    idx = [k for group in shape_groups(tiles) for k in group if only is None or k in only]
    area = max((t.height * t.width for t in tiles), default=1)
    per_batch = max(1, BATCH_TILES * BATCH_TILE_AREA // max(BATCH_TILE_AREA, area))
    count = -(-len(idx) // per_batch)
    count = min(len(idx), -(-count // workers) * workers)
    bounds = [round(i * len(idx) / count) for i in range(count + 1)] if count else [0]
    return [idx[a:b] for a, b in zip(bounds, bounds[1:])]


def _decode_batch(job: tuple, idx: list[int]) -> list[np.ndarray]:
    """The code maps (by level, (len(idx), h, w)) of one batch of tiles, all shapes together; ``job``
    is (priors, payloads, tiles, order)."""
    priors, payloads, tiles, order = job
    with one_thread(), torch.inference_mode():  # inference mode: less bookkeeping per tiny operation
        decoders = TileDecoders([payloads[k] for k in idx])
        extents = [torch.tensor([[tiles[k].height >> lv, tiles[k].width >> lv] for k in idx])
                   for lv in range(len(priors))]
        frame = [(int(e[:, 0].max()), int(e[:, 1].max())) for e in extents]
        mixed = any(bool((e != e[0]).any()) for e in extents)
        decoded = generate(priors, frame, len(idx), _from_stream(decoders), order=order,
                           extents=extents if mixed else None)
    return [d.cpu().numpy() for d in decoded]


def _windows(maps: Sequence[torch.Tensor], tiles: list[Tile], idx: list[int]) -> list[torch.Tensor]:
    """The windows of tiles ``idx`` stacked into a batch, for every level of ``maps`` (each (1, H, W))."""
    return [torch.stack([m[0][tiles[k].window(lv)] for k in idx]) for lv, m in enumerate(maps)]


def _batch_symbols(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], tiles: list[Tile], order: str, idx: list[int]
) -> list[tuple[int, list[tuple[np.ndarray, torch.Tensor]]]]:
    """``tile_symbols``' items for the tiles ``idx`` (one shape), from one parallel pass per level."""
    batch = _windows(codes, tiles, idx)
    parts: list[list] = [[] for _ in idx]
    for level in reversed(range(len(priors))):
        if is_uncoded(priors[level]):
            continue  # nothing to write: its codes are 0
        probs = ordered_probs(priors[level], batch[level], levels_above(batch, level), order)
        steps = priors[level].decode_order(batch[level].shape[1], batch[level].shape[2], order)
        rows, cols = (torch.from_numpy(a) for a in flat_positions(steps))
        for j in range(len(idx)):
            parts[j].append((batch[level][j][rows, cols].cpu().numpy(), probs[j]))
    return list(zip(idx, parts))


@torch.no_grad()
def tile_symbols(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], tile: int, order: str = "fast"
) -> Iterator[tuple[int, list[tuple[np.ndarray, torch.Tensor]]]]:
    """(tile index, what its stream codes: per level, top first, the symbols (N,) and their
    probability rows (N, K) in decoding order), one batch of tiles at a time, so the probability
    rows of only one batch are ever held (they are 4 KB per code)."""
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], tile)
    for idx in _batches(tiles, encode_batch_tiles(tile)):
        yield from _batch_symbols(priors, codes, tiles, order, idx)


def _encode_batch(job: tuple, idx: list[int]) -> list[tuple[int, bytes]]:
    """(tile index, payload) of the tiles ``idx``; ``job`` is (priors, codes, tiles, order)."""
    return [(k, encode_symbols(parts)) for k, parts in _batch_symbols(*job, idx)]


@torch.no_grad()
def encode_tiles(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], tile: int, order: str = "fast", workers: int = 1
) -> list[bytes]:
    """Tile payloads for code maps (bottom first, each (1, H_l, W_l)), tiles in raster order.

    With ``workers`` > 1, that many batches of tiles at once, each on a thread of its own computing
    on one CPU thread (a pass over a batch is a few large operations, so threads overlap well, where
    the decoder's tiny steps need processes; and the caller's threads have run MKL, after which a
    fork is unsafe, ``vqcodec.workers``), the tiles shared evenly where they fit in ``workers``
    batches. The integer priors make the bytes the same whatever ``workers`` is; at most
    ``workers`` batches' probabilities are held at once."""
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], tile)
    per_batch = min(encode_batch_tiles(tile, workers), max(1, -(-len(tiles) // max(1, workers))))
    batches = _batches(tiles, per_batch)
    job = (priors, codes, tiles, order)
    payloads: dict[int, bytes] = {}
    if workers <= 1 or len(batches) <= 1:
        for idx in batches:
            payloads.update(_encode_batch(job, idx))
    else:
        with one_thread(), ThreadPoolExecutor(workers) as pool:
            for wave in range(0, len(batches), workers):
                for done in pool.map(functools.partial(_encode_batch, job), batches[wave : wave + workers]):
                    payloads.update(done)
    return [payloads[k] for k in range(len(tiles))]


def tile_code_checksums(
    maps: Sequence[torch.Tensor], tile: int, only: Iterable[int] | None = None
) -> dict[int, int]:
    """Tile index -> ``bitstream.code_checksum`` of its codes in ``maps`` (bottom first, each
    (1, H_l, W_l)): each level's window of the tile (``Tile.window``), top level first. The encoder
    records these (format version 5) for the codes it coded, the decoder recomputes them for the codes
    it decoded; ``only`` limits them to those tiles."""
    arrays = [m[0].cpu().numpy() for m in maps]
    tiles = tile_grid(arrays[0].shape[0], arrays[0].shape[1], tile)
    keys = range(len(tiles)) if only is None else sorted(only)
    return {k: code_checksum([arrays[lv][tiles[k].window(lv)] for lv in reversed(range(len(arrays)))]) for k in keys}


def _from_stream(decoders: TileDecoders) -> Pick:
    """Choose each code as the range decoder reads it under the prior's probabilities."""
    def pick(level: int, probs: torch.Tensor, positions: np.ndarray, inside: np.ndarray | None) -> torch.Tensor:
        if probs.shape[-1] == 1:  # an uncoded level (priors.uncoded): nothing was written
            return torch.zeros(probs.shape[:2], dtype=torch.long)
        return decoders.decode(probs, inside)

    return pick


@torch.no_grad()
def decode_tiles(
    priors: Sequence[IntegerPrior], shapes: Sequence[tuple[int, int]], payloads: Sequence[bytes], tile: int,
    only: set[int] | None = None, order: str = "fast",
) -> list[torch.Tensor]:
    """Code maps (each (1, H_l, W_l)) from tile payloads, up to ``BATCH_TILES`` tiles of any shapes
    decoding together. With ``only``, just those tiles are decoded (the rest of the maps stay 0)."""
    tiles = tile_grid(shapes[0][0], shapes[0][1], tile)
    if len(tiles) != len(payloads):
        raise VQCodecError(f"the file holds {len(payloads)} tiles where its geometry needs {len(tiles)}")
    maps = [torch.zeros((1, *s), dtype=torch.long, device=priors[0].device) for s in shapes]
    workers = fork_workers(priors[0].device)
    batches = _decode_batches(tiles, only, workers)
    results = map_forked(functools.partial(_decode_batch, (priors, payloads, tiles, order)), batches, workers)
    for idx, decoded in zip(batches, results):
        for lv, batch in enumerate(decoded):
            for j, k in enumerate(idx):
                window = tiles[k].window(lv)
                h, w = window[0].stop - window[0].start, window[1].stop - window[1].start
                maps[lv][0][window] = torch.from_numpy(batch[j][:h, :w]).to(maps[lv].device)
    return maps
