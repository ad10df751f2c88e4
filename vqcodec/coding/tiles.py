"""Tiles: square windows of the bottom code map (and the same windows of the levels above).

A tile's prior context never leaves the tile and each tile is its own range-coder stream, so tiles
of one shape decode as one batch, a region can be decoded alone, and a damaged tile does not take
the others with it. The tile side (in bottom codes) is chosen at compress time and stored in the file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from vqcodec.errors import VQCodecError

DEFAULT_TILE = 32  # bottom codes; chosen by measurement (benchmarks/README.md)
MAX_TILE = 256


@dataclass(frozen=True)
class Tile:
    """A window of the bottom code map; level l uses the same window scaled by 2**-l."""

    row: int
    col: int
    height: int
    width: int

    def window(self, level: int) -> tuple[slice, slice]:
        r, c, h, w = self.row >> level, self.col >> level, self.height >> level, self.width >> level
        return slice(r, r + h), slice(c, c + w)


def tile_grid(height: int, width: int, tile: int) -> list[Tile]:
    """Tiles in raster order covering a bottom code map of ``height`` x ``width``."""
    return [
        Tile(r, c, min(tile, height - r), min(tile, width - c))
        for r in range(0, height, tile)
        for c in range(0, width, tile)
    ]


def shape_groups(tiles: list[Tile]) -> list[list[int]]:
    """Indices of the tiles of each shape (one batch each), in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, t in enumerate(tiles):
        groups[(t.height, t.width)].append(i)
    return list(groups.values())


def check_tile(tile: int, levels: int) -> int:
    """``tile`` if it is a valid tile side for a model of ``levels`` levels, else a VQCodecError."""
    unit = 1 << (levels - 1)
    if tile < 4 or tile > MAX_TILE or tile & (tile - 1) or tile % unit:
        raise VQCodecError(f"tile must be a power of two from {max(4, unit)} to {MAX_TILE}, not {tile}")
    return tile
