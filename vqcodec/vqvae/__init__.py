"""Stage 1: the hierarchical VQ-VAE (encoder, EMA quantizers, decoder) and its geometry."""

from vqcodec.vqvae.model import (
    BOTTOM_STRIDE,
    DECODER_REACH,
    LEVEL_NAMES,
    VQVAE,
    VQVAEConfig,
    crop_codes,
    decode_part,
    decode_windowed,
    decode_windows,
    encode_windowed,
    split_convolutions,
)

__all__ = ["BOTTOM_STRIDE", "DECODER_REACH", "LEVEL_NAMES", "VQVAE", "VQVAEConfig", "crop_codes",
           "decode_part", "decode_windowed", "decode_windows", "encode_windowed", "split_convolutions"]
