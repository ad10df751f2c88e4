"""Tests for image reading/writing and the exact pixel <-> tensor mapping."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from vqcodec import atomic
from vqcodec.atomic import atomic_write_bytes
from vqcodec.errors import VQCodecError, VQCodecWarning
from vqcodec.imageio import (
    IMAGE_SUFFIXES,
    ImageData,
    _orient,
    encode_image,
    format_from_path,
    from_pil,
    from_tensor,
    read_image,
    to_tensor,
    write_image,
)

RNG = np.random.default_rng(1234)


def random_pixels(h: int, w: int, c: int, bit_depth: int) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return RNG.integers(0, 1 << bit_depth, size=(h, w, c), dtype=dtype)


def pil_bytes(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# ------------------------------------------------------------------------------------------- tensors


def test_every_8bit_value_round_trips_through_tensor() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    t = to_tensor(pixels, 8)
    assert t.dtype == torch.float32 and t.shape == (1, 3, 16, 16)
    assert float(t.min()) == 0.0 and float(t.max()) == 1.0
    back = from_tensor(t, 8)
    assert back.dtype == np.uint8 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, pixels)


def test_random_16bit_values_round_trip_through_tensor() -> None:
    values = RNG.integers(0, 65536, size=10_000, dtype=np.uint16)
    values[:2] = (0, 65535)
    pixels = values.reshape(100, 100, 1)
    back = from_tensor(to_tensor(pixels, 16), 16)
    assert back.dtype == np.uint16 and back.shape == (100, 100, 1)
    np.testing.assert_array_equal(back, pixels)


def test_to_tensor_layout_and_from_tensor_clamps() -> None:
    pixels = random_pixels(2, 3, 3, 8)
    t = to_tensor(pixels, 8)
    assert torch.equal(t[0, :, 1, 2], torch.from_numpy(pixels[1, 2].astype(np.float32)) / 255)
    noisy = torch.tensor([[[[-0.5, 1.7, float("nan"), 10.4 / 255, 10.6 / 255]]]])
    np.testing.assert_array_equal(from_tensor(noisy, 8)[..., 0], [[0, 255, 0, 10, 11]])


def test_tensor_functions_reject_bad_input() -> None:
    with pytest.raises(VQCodecError):
        to_tensor(np.full((2, 2, 1), 300, dtype=np.uint16), 8)
    with pytest.raises(VQCodecError):
        to_tensor(np.zeros((2, 2, 1), dtype=np.uint8), 12)
    with pytest.raises(VQCodecError):
        from_tensor(torch.zeros(2, 3, 4, 4), 8)


# ------------------------------------------------------------------------------------ write/read trips


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(1, 1), (7, 13)])
def test_lossless_round_trip_png_tiff(tmp_path: Path, fmt: str, bit_depth: int, channels: int, size) -> None:
    pixels = random_pixels(*size, channels, bit_depth)
    path = tmp_path / f"img.{fmt}"
    write_image(path, ImageData(pixels, bit_depth, None))
    got = read_image(path)
    assert got.bit_depth == bit_depth
    assert got.pixels.dtype == pixels.dtype and got.pixels.flags.c_contiguous
    np.testing.assert_array_equal(got.pixels, pixels)


def test_16bit_rgb_png_is_exact_and_really_16bit(tmp_path: Path) -> None:
    pixels = random_pixels(7, 13, 3, 16)
    pixels[0, 0] = (1, 257, 65535)  # values an 8-bit path would destroy
    write_image(tmp_path / "a.png", ImageData(pixels, 16, None))
    data = (tmp_path / "a.png").read_bytes()
    assert data[24] == 16 and data[25] == 2  # IHDR: 16 bits, truecolour
    np.testing.assert_array_equal(read_image(data).pixels, pixels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(1, 1), (7, 13)])
def test_bmp_round_trip(tmp_path: Path, channels: int, size) -> None:
    pixels = random_pixels(*size, channels, 8)
    write_image(tmp_path / "a.bmp", ImageData(pixels, 8, None))
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp").pixels, pixels)


def test_webp_lossless_round_trip(tmp_path: Path) -> None:
    pixels = random_pixels(7, 13, 3, 8)
    write_image(tmp_path / "a.webp", ImageData(pixels, 8, None))
    np.testing.assert_array_equal(read_image(tmp_path / "a.webp").pixels, pixels)


def test_webp_stores_gray_as_rgb(tmp_path: Path) -> None:
    pixels = random_pixels(5, 4, 1, 8)
    write_image(tmp_path / "a.webp", ImageData(pixels, 8, None))
    np.testing.assert_array_equal(read_image(tmp_path / "a.webp").pixels, pixels.repeat(3, axis=2))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close(tmp_path: Path, channels: int) -> None:
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([x * 5, y * 7, x + y * 3], axis=2)[..., :channels].astype(np.uint8)
    write_image(tmp_path / "a.jpg", ImageData(smooth, 8, None))
    got = read_image(tmp_path / "a.jpg")
    assert got.pixels.shape == smooth.shape and got.bit_depth == 8
    assert np.abs(got.pixels.astype(int) - smooth).mean() < 2.0


@pytest.mark.parametrize("fmt", ["webp", "bmp", "jpeg"])
def test_16bit_refused_for_8bit_only_formats(fmt: str) -> None:
    with pytest.raises(VQCodecError, match="PNG and TIFF"):
        encode_image(ImageData(random_pixels(2, 2, 3, 16), 16, None), fmt)


def test_format_from_path() -> None:
    assert format_from_path("x.PNG") == "png"
    assert format_from_path(Path("d/x.tif")) == "tiff"
    assert format_from_path("x.jpeg") == format_from_path("x.jpg") == "jpeg"
    assert format_from_path("x.webp") == "webp" and format_from_path("x.bmp") == "bmp"
    with pytest.raises(VQCodecError):
        format_from_path("x.gif")
    with pytest.raises(VQCodecError):
        format_from_path("noextension")


def test_format_is_detected_from_content_not_name(tmp_path: Path) -> None:
    pixels = random_pixels(3, 4, 3, 8)
    (tmp_path / "really_png.jpg").write_bytes(encode_image(ImageData(pixels, 8, None), "png"))
    np.testing.assert_array_equal(read_image(tmp_path / "really_png.jpg").pixels, pixels)


def test_read_from_bytes_and_stream() -> None:
    pixels = random_pixels(3, 4, 1, 16)
    data = encode_image(ImageData(pixels, 16, None), "tiff")
    np.testing.assert_array_equal(read_image(data).pixels, pixels)
    np.testing.assert_array_equal(read_image(io.BytesIO(data)).pixels, pixels)


# ------------------------------------------------------------------------------------------- policy


def test_exif_orientation_6_is_applied() -> None:
    pixels = random_pixels(8, 16, 3, 8)
    exif = Image.Exif()
    exif[274] = 6
    got = read_image(pil_bytes(Image.fromarray(pixels), "JPEG", exif=exif, quality=95))
    assert got.pixels.shape == (16, 8, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pillow(orientation: int) -> None:
    pixels = random_pixels(3, 5, 3, 8)
    exif = Image.Exif()
    exif[274] = orientation
    with Image.open(io.BytesIO(pil_bytes(Image.fromarray(pixels), "PNG", exif=exif))) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(_orient(pixels, orientation), expected)
    tiff = io.BytesIO()
    tifffile.imwrite(tiff, pixels, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    np.testing.assert_array_equal(read_image(tiff.getvalue()).pixels, expected)


def test_palette_becomes_rgb() -> None:
    colours = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    pixels = colours[RNG.integers(0, 3, size=(6, 7))]
    im = Image.fromarray(pixels).quantize(colors=3)
    assert im.mode == "P"
    got = read_image(pil_bytes(im, "PNG"))
    assert got.pixels.shape == (6, 7, 3)
    np.testing.assert_array_equal(got.pixels, pixels)


def test_gray_palette_becomes_gray() -> None:
    gray = random_pixels(6, 7, 1, 8)[..., 0]
    im = Image.fromarray(gray).convert("P")
    assert im.mode == "P"
    got = read_image(pil_bytes(im, "PNG"))
    assert got.pixels.shape == (6, 7, 1)
    np.testing.assert_array_equal(got.pixels[..., 0], gray)


def test_opaque_rgba_is_accepted_and_alpha_dropped() -> None:
    rgb = random_pixels(4, 5, 3, 8)
    rgba = np.dstack([rgb, np.full((4, 5), 255, np.uint8)])
    got = read_image(pil_bytes(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(got.pixels, rgb)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_transparent_rgba_is_refused(fmt: str) -> None:
    rgba = np.dstack([random_pixels(4, 5, 3, 8), np.full((4, 5), 255, np.uint8)])
    rgba[2, 3, 3] = 128
    data = pil_bytes(Image.fromarray(rgba), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    with pytest.raises(VQCodecError, match="transparent alpha"):
        read_image(data)


def test_transparent_16bit_gray_alpha_png_is_refused() -> None:
    import imagecodecs

    gray_alpha = random_pixels(4, 5, 2, 16)
    gray_alpha[..., 1] = 65535
    np.testing.assert_array_equal(read_image(imagecodecs.png_encode(gray_alpha)).pixels, gray_alpha[..., :1])
    gray_alpha[0, 0, 1] = 0
    with pytest.raises(VQCodecError, match="transparent alpha"):
        read_image(imagecodecs.png_encode(gray_alpha))


def test_one_bit_cmyk_and_float_policy() -> None:
    bits = random_pixels(4, 5, 1, 8)[..., 0] > 127
    got = read_image(pil_bytes(Image.fromarray(bits), "PNG"))
    np.testing.assert_array_equal(got.pixels[..., 0], np.where(bits, 255, 0))
    cmyk = Image.fromarray(random_pixels(4, 5, 3, 8)).convert("CMYK")
    assert read_image(pil_bytes(cmyk, "TIFF")).pixels.shape == (4, 5, 3)
    floats = io.BytesIO()
    tifffile.imwrite(floats, np.zeros((4, 5), np.float32))
    with pytest.raises(VQCodecError, match="float32"):
        read_image(floats.getvalue())


def test_tiff_more_than_four_channels_is_refused() -> None:
    buf = io.BytesIO()
    tifffile.imwrite(buf, random_pixels(4, 5, 5, 8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(VQCodecError, match="5 channels"):
        read_image(buf.getvalue())


def test_a_tiff_of_several_pages_is_refused_and_a_thumbnail_page_does_not_count() -> None:
    pages = random_pixels(3 * 4, 5, 3, 8).reshape(3, 4, 5, 3)
    buf = io.BytesIO()
    tifffile.imwrite(buf, pages, photometric="rgb")
    with pytest.raises(VQCodecError, match="is a TIFF of 3 pages; vqcodec codes one image only"):
        read_image(buf.getvalue())
    palette = Image.fromarray(random_pixels(4, 5, 3, 8)).quantize(8)  # a TIFF that Pillow decodes
    palette.save(buf := io.BytesIO(), "TIFF", save_all=True, append_images=[palette])
    with pytest.raises(VQCodecError, match="is a TIFF of 2 pages"):
        read_image(buf.getvalue())
    with tifffile.TiffWriter(buf := io.BytesIO()) as tif:
        tif.write(pages[0], photometric="rgb")
        tif.write(pages[1][::2, ::2], photometric="rgb", subfiletype=1)  # a reduced-resolution page
    np.testing.assert_array_equal(read_image(buf.getvalue()).pixels, pages[0])


@pytest.mark.parametrize(
    ("fmt", "bit_depth"), [("png", 8), ("png", 16), ("tiff", 8), ("tiff", 16), ("jpeg", 8), ("webp", 8)]
)
def test_icc_profile_is_preserved(tmp_path: Path, fmt: str, bit_depth: int) -> None:
    icc = srgb_profile()
    path = tmp_path / f"a.{fmt}"
    write_image(path, ImageData(random_pixels(4, 5, 3, bit_depth), bit_depth, icc))
    assert read_image(path).icc_profile == icc
    if fmt == "png":
        with Image.open(path) as im:  # the hand-made iCCP chunk is valid for other readers too
            assert im.info["icc_profile"] == icc


def test_icc_profile_of_another_colour_space_is_dropped_with_a_warning_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(random_pixels(4, 5, 1, 8)[..., 0]).save(path, icc_profile=srgb_profile())
    with pytest.warns(VQCodecWarning, match=f"{path}: its RGB ICC profile does not describe the gray pixels"):
        assert read_image(path).icc_profile is None
    cmyk_icc = bytearray(srgb_profile())
    cmyk_icc[16:20] = b"CMYK"  # the colour space a CMYK JPEG's profile declares
    Image.fromarray(random_pixels(4, 5, 3, 8)).convert("CMYK").save(jpeg := tmp_path / "cmyk.jpg",
                                                                     icc_profile=bytes(cmyk_icc))
    with pytest.warns(VQCodecWarning, match=f"{jpeg}: its CMYK ICC profile does not describe the RGB pixels"):
        image = read_image(jpeg)
    assert image.icc_profile is None and image.pixels.shape == (4, 5, 3)
    write_image(rgb := tmp_path / "rgb.png", ImageData(random_pixels(4, 5, 3, 8), 8, srgb_profile()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a profile kept is no news
        assert read_image(rgb).icc_profile == srgb_profile()


# ------------------------------------------------------------------------------------------- errors


def _raw_tiff_bytes() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, random_pixels(64, 64, 3, 8), photometric="rgb")  # uncompressed
    return buf.getvalue()


def _png_bytes() -> bytes:
    return encode_image(ImageData(random_pixels(32, 32, 3, 8), 8, None), "png")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.png", b""),
        ("truncated.png", _png_bytes()[:-40]),
        ("random.png", RNG.integers(0, 256, 500, dtype=np.uint8).tobytes()),
        ("text.png", b"hello, this is not an image\n" * 10),
        ("truncated.jpg", pil_bytes(Image.fromarray(random_pixels(32, 32, 3, 8)), "JPEG")[:300]),
        ("truncated.tif", encode_image(ImageData(random_pixels(64, 64, 3, 8), 8, None), "tiff")[:2000]),
        ("truncated_raw.tif", _raw_tiff_bytes()[:2000]),
    ],
)
def test_bad_files_raise_vqcodec_error_naming_the_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VQCodecError, match=name):
        read_image(path)


def test_decompression_bomb_is_a_vqcodec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png_bytes()  # 32x32
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(VQCodecError, match="too large"):
        read_image(data)
    with pytest.raises(VQCodecError, match="too large"):
        read_image(encode_image(ImageData(random_pixels(32, 32, 1, 16), 16, None), "tiff"))


def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(VQCodecError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(VQCodecError, match="directory"):
        read_image(tmp_path)


# ------------------------------------------------------------------------------------------- atomic


def test_atomic_write_refuses_to_clobber_without_force(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(VQCodecError, match="exists; use --force"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    atomic_write_bytes(path, b"new", force=True)
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_image_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    image = ImageData(random_pixels(2, 2, 3, 8), 8, None)
    write_image(path, image)
    with pytest.raises(VQCodecError, match="exists"):
        write_image(path, image)
    write_image(path, image, force=True)


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing)  # the last step of replacing a file ...
    monkeypatch.setattr(atomic.os, "link", failing)  # ... and of creating one
    with pytest.raises(VQCodecError, match="cannot write"):
        atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert os.listdir(tmp_path) == []
    (tmp_path / "old.bin").write_bytes(b"old")
    with pytest.raises(VQCodecError, match="cannot write"):
        atomic_write_bytes(tmp_path / "old.bin", b"data", force=True)
    assert os.listdir(tmp_path) == ["old.bin"] and (tmp_path / "old.bin").read_bytes() == b"old"


def test_concurrent_writers_never_both_create_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-overwrite promise holds under a race: every writer passes the 'does it exist' check before
    any of them finishes (a barrier in fsync), yet exactly one creates the file and the others are refused."""
    import threading

    writers = 6
    barrier = threading.Barrier(writers, timeout=30)
    real_fsync = os.fsync

    waited: set[int] = set()

    def fsync_together(fd: int) -> None:  # the temporary file is complete; wait for the others' to be
        real_fsync(fd)
        me = threading.get_ident()
        if me not in waited and threading.current_thread() is not threading.main_thread():
            waited.add(me)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    monkeypatch.setattr(atomic.os, "fsync", fsync_together)
    path = tmp_path / "out.bin"
    results: dict[int, str] = {}

    def write(i: int) -> None:
        try:
            atomic_write_bytes(path, f"writer {i}".encode())
            results[i] = "created"
        except VQCodecError as err:
            results[i] = str(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    created = [i for i, r in results.items() if r == "created"]
    assert len(created) == 1, results
    assert all("exists; use --force" in r for i, r in results.items() if i not in created)
    assert path.read_bytes() == f"writer {created[0]}".encode()
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary file left behind


def test_animations_are_refused_and_a_single_frame_gif_is_read() -> None:
    first = Image.fromarray(np.full((8, 8, 3), 10, np.uint8))
    second = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True}), ("GIF", {})):
        data = pil_bytes(first, fmt, save_all=True, append_images=[second], **options)
        with pytest.raises(VQCodecError, match="is an animation of 2 frames; vqcodec codes still images only"):
            read_image(data)
    gif = read_image(pil_bytes(Image.fromarray(random_pixels(6, 7, 3, 8)).quantize(16), "GIF"))
    assert gif.pixels.shape == (6, 7, 3) and gif.bit_depth == 8
    assert ".gif" in IMAGE_SUFFIXES


def test_an_all_black_lab_image_is_not_taken_for_alpha() -> None:
    image = from_pil(Image.new("LAB", (4, 3)))
    assert image.pixels.shape == (3, 4, 3)


def test_pillow_errors_do_not_name_our_buffer() -> None:
    with pytest.raises(VQCodecError) as err:
        read_image(io.BytesIO(b"\x89PNG\r\n\x1a\n not really a png"))
    assert "0x" not in str(err.value) and "BytesIO" not in str(err.value)
