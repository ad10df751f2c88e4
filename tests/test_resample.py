"""Coding at another resolution (``vqcodec.resample``, format version 3): sizes, round trips of every
kind of image, regions, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vqcodec
from vqcodec.coding.bitstream import unpack
from vqcodec.coding.tile_codec import decode_tiles
from vqcodec.errors import VQCodecError
from vqcodec.metrics import psnr
from vqcodec.resample import check_scale, coded_size, resize
from vqcodec.testing import assert_codes_equal, image_codes, smooth_image
from vqcodec.vqvae import VQVAE, VQVAEConfig


def test_coded_size_rounds_and_never_reaches_zero() -> None:
    assert coded_size(768, 512, 0.5) == (384, 256)
    assert coded_size(101, 33, 0.625) == (63, 21)
    assert coded_size(1, 3, 0.125) == (1, 1)
    assert coded_size(480, 320, 1.75) == (840, 560)


@pytest.mark.parametrize("bad", [0, 0.1, 2.5, -1, float("nan"), float("inf"), "half"])
def test_a_bad_scale_is_refused(bad) -> None:
    with pytest.raises(VQCodecError, match="scale"):
        check_scale(bad)
    with pytest.raises(VQCodecError, match="scale"):
        vqcodec.compress(smooth_image(16, 16, 1), scale=bad)


def test_resize_keeps_a_flat_image_flat_and_is_the_identity_at_its_size() -> None:
    x = torch.full((1, 3, 20, 30), 0.25)
    assert torch.allclose(resize(x, 45, 7), torch.full((1, 3, 7, 45), 0.25))
    assert resize(x, 30, 20) is x


def expected_pixels(model, codes: list[torch.Tensor], coded: tuple[int, int], shape: tuple[int, ...],
                    dtype) -> np.ndarray:
    """What the file must decode to, computed here: the VQ-VAE's decode of the codes at the coded size, brought
    back to the image's size by antialiased bicubic (torch's own call, not ``resample.resize``; the default
    model has no learned upscaler), clamped, gray as the mean of the three channels, rounded to the depth."""
    assert not hasattr(model.vqvae, "upscaler")
    with torch.no_grad():
        recon = model.vqvae.decode(codes, coded[1], coded[0])
        if coded != (shape[1], shape[0]):
            recon = torch.nn.functional.interpolate(recon, size=shape[:2], mode="bicubic", antialias=True,
                                                    align_corners=False)
    recon = recon.clamp(0, 1)
    if len(shape) == 2:
        recon = recon.mean(1, keepdim=True)
    full = np.iinfo(dtype).max
    out = torch.round(recon[0] * full).to(torch.int32).permute(1, 2, 0).numpy().astype(dtype)
    return out[..., 0] if len(shape) == 2 else out


@pytest.mark.parametrize(("shape", "dtype"), [((40, 56, 3), np.uint8), ((40, 56), np.uint8),
                                              ((33, 47, 3), np.uint16), ((3, 5, 3), np.uint8)])
@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_round_trip_at_a_scale(model, shape, dtype, scale) -> None:
    """Every kind of image comes back at its own size, depth and channels; the file records the
    coded size (or leaves it out when rounding gives the image's own size); its codes are exactly those
    of the image resized to the coded size (``testing.image_codes``), and its pixels exactly the model's
    decode of them resized back (``expected_pixels``)."""
    img = smooth_image(shape[0], shape[1], 3, channels=shape[2] if len(shape) == 3 else 1, dtype=dtype)
    data = vqcodec.compress(img, model, scale=scale)
    stream = unpack(data)
    head = stream.header
    want = coded_size(shape[1], shape[0], scale)
    assert (head.coded_width, head.coded_height) == want and head.version == 5
    assert (head.coded_size is None) == (want == (shape[1], shape[0]))
    codes = decode_tiles(model.priors, model.vqvae.code_shapes(want[1], want[0]), list(stream.tiles), head.tile_size,
                         order=head.symbol_order)
    assert_codes_equal(codes, image_codes(model, img, size=want))
    out = vqcodec.decompress(data)
    assert out.shape == img.shape and out.dtype == img.dtype
    np.testing.assert_array_equal(out, expected_pixels(model, codes, want, shape, dtype))


def test_a_smaller_scale_makes_smaller_files_and_a_larger_one_better_pictures(model) -> None:
    img = smooth_image(96, 128, 5)
    sizes, quality = [], []
    for scale in (0.5, 1.0, 1.5):
        data = vqcodec.compress(img, model, scale=scale)
        sizes.append(len(data))
        quality.append(psnr(img, vqcodec.decompress(data)))
    assert sizes[0] < sizes[1] < sizes[2], sizes
    assert quality[0] < quality[2], quality


def test_a_region_of_a_resampled_file_is_that_region_of_the_whole(model) -> None:
    img = smooth_image(60, 90, 7)
    data = vqcodec.compress(img, model, scale=0.75)
    whole = vqcodec.decompress(data)
    assert np.array_equal(vqcodec.decompress(data, region=(17, 9, 40, 31)), whole[9:40, 17:57])
    with pytest.raises(VQCodecError, match="not inside"):
        vqcodec.decompress(data, region=(80, 0, 20, 10))


def test_salvage_of_a_resampled_file_keeps_the_intact_tiles(model) -> None:
    """Tile 0 (coded pixels 0-32 each way, 0-43 of the image) damaged: salvage drops it, and every pixel
    beyond its reach is exactly that of the undamaged file's decode (the decoder's reach of 64 coded pixels
    and the bicubic's 2, times 4/3: 136 pixels of the image)."""
    img = smooth_image(160, 300, 9)
    data = vqcodec.compress(img, model, scale=0.75, tile=8)  # coded at 225x120: 4 x 8 tiles of 32 pixels
    tiles = unpack(data).tiles
    assert len(tiles) == 32
    at = len(data) - sum(map(len, tiles)) + len(tiles[0]) // 2  # the middle of tile 0's payload
    damaged = data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]
    with pytest.raises(VQCodecError, match="corrupted"):
        vqcodec.decompress(damaged)
    image = vqcodec.decompress_image(damaged, salvage=True)
    assert image.damaged_tiles == (0,) and image.pixels.shape == (160, 300, 3)
    intact = vqcodec.decompress(data)
    np.testing.assert_array_equal(image.pixels[136:], intact[136:])
    np.testing.assert_array_equal(image.pixels[:, 136:], intact[:, 136:])
    assert not np.array_equal(image.pixels[:43, :43], intact[:43, :43])  # tile 0's content is gone


def _upscaling_model(channels: int = 4, layers: int = 3) -> VQVAE:
    """A tiny VQ-VAE with a learned upscaler whose every weight is random (none is zero)."""
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden=8, res_channels=4, res_blocks=1, num_codes=8, code_dim=4,
                              upscaler_channels=channels, upscaler_layers=layers)).eval()
    with torch.no_grad():
        for p in model.upscaler.parameters():
            p.normal_(0, 0.2)
    return model


def test_a_new_upscaler_is_bicubic_and_runs_only_when_enlarging() -> None:
    model = VQVAE(VQVAEConfig(hidden=8, res_channels=4, res_blocks=1, num_codes=8, code_dim=4,
                              upscaler_channels=4, upscaler_layers=3))
    x = torch.rand(1, 3, 12, 16)
    assert torch.equal(model.resize_back(x, 32, 24), resize(x, 32, 24))  # its last layer starts at zero
    trained = _upscaling_model()
    assert not torch.equal(trained.resize_back(x, 32, 24), resize(x, 32, 24))
    assert torch.equal(trained.resize_back(x, 8, 6), resize(x, 8, 6))  # shrinking back: bicubic alone
    assert trained.resize_back(x, 16, 12) is x


@pytest.mark.parametrize("extra_rows, width", [(1, 40), (37, 40), (300, 97)])
def test_the_upscaler_in_bands_gives_the_bits_of_one_piece(extra_rows, width) -> None:
    """Bands of BAND_ROWS rows with the upscaler's reach as margin: every output row sees the rows it
    would in one piece, so a tall image (bounded memory) gives the very same bits on one thread, its
    bands one after another or side by side."""
    from vqcodec.priors.autoregress import one_thread
    from vqcodec.vqvae import upscaler as up

    model = _upscaling_model()
    x = torch.rand(1, 3, up.BAND_ROWS + extra_rows, width)
    with torch.no_grad(), one_thread():
        banded = model.upscaler(x, 2.0)
        side_by_side = model.upscaler(x, 2.0, workers=2)  # the bands in two threads, each on one
        whole = x + model.upscaler.net(torch.cat([x, torch.full_like(x[:, :1], 1.0)], 1))
    assert torch.equal(banded, whole) and torch.equal(side_by_side, banded)
