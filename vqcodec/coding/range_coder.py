"""Range coding of code maps with constriction, driven by integer prior probabilities.

Pitfalls designed out (see constriction 0.5.0): the model family is always
``Categorical(perfect=False)`` (the default ``perfect=True`` is ~200x slower and writes streams the
other cannot read); probabilities are always C-contiguous float64 (float32 and float64 rows code
differently); compressed words are written little-endian.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

from vqcodec.errors import VQCodecError

FAMILY = constriction.stream.model.Categorical(perfect=False)


def _rows(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = probs.cpu().numpy() if torch.is_tensor(probs) else probs
    return np.ascontiguousarray(arr, dtype=np.float64)


def encode_symbols(parts: list[tuple[np.ndarray, torch.Tensor]]) -> bytes:
    """One stream for a tile: each part is (symbols (N,), probabilities (N, K)), coded in order."""
    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, probs in parts:
        if len(symbols):
            encoder.encode(np.ascontiguousarray(symbols, dtype=np.int32), FAMILY, _rows(probs))
    return encoder.get_compressed().astype("<u4").tobytes()


class TileDecoders:
    """One range decoder per tile of a batch, stepped together: each step reads the symbols of its
    positions, one call per tile (a call per symbol cost ~3 us, a call per step of 5 ~1.5 us each)."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.decoders = []
        for data in payloads:
            if len(data) % 4:
                raise VQCodecError("a tile payload is not a whole number of 32-bit words (corrupted file)")
            words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
            self.decoders.append(constriction.stream.queue.RangeDecoder(words))

    def decode(self, probs: torch.Tensor, inside: np.ndarray | None = None) -> torch.Tensor:
        """Decode the symbols of one step: ``probs`` is (tiles, P, K), P positions of every tile,
        read in that order from each tile's stream, so a tile's P symbols are one call. With
        ``inside`` (tiles, P) bool, only the positions where it is true read a symbol (the others
        have no code there: 0). Returns (tiles, P) int64."""
        rows = _rows(probs)
        out = np.zeros(rows.shape[:2], dtype=np.int64)
        try:
            for i, dec in enumerate(self.decoders):
                if inside is None or inside[i].all():
                    out[i] = dec.decode(FAMILY, rows[i])
                elif inside[i].any():
                    out[i, inside[i]] = dec.decode(FAMILY, rows[i][inside[i]])  # a copy, contiguous
        except (ValueError, KeyError, RuntimeError, AssertionError, OverflowError) as err:
            # constriction reports invalid compressed data with an AssertionError, among others
            raise VQCodecError(f"range decoding failed (corrupted file?): {err}") from None
        return torch.from_numpy(out)
