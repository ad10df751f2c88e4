"""Rate-aware choice of the bottom codes: each latent vector takes, among its few nearest codewords,
the one that minimises squared distance + lambda x its bits under the bottom prior.

The nearest codeword is what the VQ-VAE was trained to decode, but often a slightly farther one is
far cheaper to code: the prior expects it there. Weighing the two moves a model along a better
rate-distortion curve than its rungs' scales do, at no cost to decoding (the decoder reads whichever
codes were written, exactly as before). Measured on 12 BSD validation photos with ``paper-refit2``
(``docs/models.md``): lambda 0.02 saves 4.3 % of the payload's bits for 0.10 dB, where coding at a smaller
scale would lose 0.17 dB for the same bits.

The bits come from one parallel pass of the integer bottom prior over the nearest codes (the exact
probabilities the coder uses, in the context of the nearest codes rather than of the chosen ones:
a second pass with the chosen codes' context was measured, and did worse). Everything is exact or computed in
chunks fixed by the image's size, so the choice does not depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vqcodec.coding.tile_codec import _batches, _windows, encode_batch_tiles
from vqcodec.coding.tiles import tile_grid
from vqcodec.priors.autoregress import levels_above
from vqcodec.priors.contract import IntegerPrior
from vqcodec.priors.uncoded import is_uncoded

CANDIDATES = 8  # nearest codewords weighed per bottom position


def weighs_codes(model, lam: float) -> bool:
    """Whether ``lam`` makes a codec model choose its bottom codes by rate: lam > 0 and a coded
    bottom level (a model that drops it, or leaves it uncoded, has no bottom codes to choose)."""
    return lam > 0 and not model.vqvae.config.dropped_levels and not is_uncoded(model.priors[0])


@torch.no_grad()
def candidate_bits(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], candidates: torch.Tensor, tile: int,
) -> torch.Tensor:
    """Bits (-log2 p) of each candidate code (1, H, W, k) at its bottom position under the bottom
    prior, given ``codes`` (bottom first, each (1, H_l, W_l)), tile by tile as the encoder codes them."""
    tiles = tile_grid(codes[0].shape[1], codes[0].shape[2], tile)
    bits = torch.zeros(candidates.shape, dtype=torch.float64)
    for idx in _batches(tiles, encode_batch_tiles(tile)):
        batch = _windows(codes, tiles, idx)
        probs = priors[0].parallel_probs(batch[0], levels_above(batch, 0)).cpu()  # (n, h, w, K) integers
        total = probs.sum(-1, keepdim=True)
        for j, k in enumerate(idx):
            rows, cols = tiles[k].window(0)
            h, w = rows.stop - rows.start, cols.stop - cols.start
            p = probs[j, :h, :w].gather(-1, candidates[0, rows, cols].cpu())
            bits[0, rows, cols] = torch.log2(total[j, :h, :w]) - torch.log2(p)
    return bits


def choose_bottom_codes(
    priors: Sequence[IntegerPrior], codes: Sequence[torch.Tensor], candidates: torch.Tensor,
    distances: torch.Tensor, lam: float, tile: int,
) -> list[torch.Tensor]:
    """``codes`` with the bottom map replaced by argmin over the candidates (1, H, W, k) of
    distance + ``lam`` x bits; the levels above are kept (the bottom prior is conditioned on them)."""
    bits = candidate_bits(priors, codes, candidates, tile)
    cost = distances.double().cpu() + lam * bits
    pick = cost.argmin(-1, keepdim=True)
    return [candidates.gather(-1, pick.to(candidates.device))[..., 0], *codes[1:]]
