"""Stage 1: the hierarchical VQ-VAE (encoder, EMA quantizers, decoder) and its geometry."""

from vqcodec.vqvae.model import BOTTOM_STRIDE, LEVEL_NAMES, VQVAE, VQVAEConfig, split_convolutions
from vqcodec.vqvae.windows import (
    DECODER_REACH,
    band_windows,
    crop_codes,
    decode_in_windows,
    decode_window,
    decode_windowed,
    decode_windows,
    encode_windowed,
    pixels_in_windows,
    window_cores,
)

__all__ = ["BOTTOM_STRIDE", "DECODER_REACH", "LEVEL_NAMES", "VQVAE", "VQVAEConfig", "band_windows", "crop_codes",
           "decode_in_windows", "decode_window", "decode_windowed", "decode_windows", "encode_windowed",
           "pixels_in_windows", "split_convolutions", "window_cores"]
