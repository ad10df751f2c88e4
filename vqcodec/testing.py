"""Test helpers shared by the test suite and the benchmarks (like ``numpy.testing``): a tiny random
codec model, synthetic images, the code maps of an image, a reference sampler that recomputes the
full parallel pass for every code, random damage to `.vqc` files, a toy classifier and the log of a
training run. Nothing here is used to compress real images.
"""

from __future__ import annotations

import dataclasses
import json
import random
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vqcodec.codec import compress
from vqcodec.coding.bitstream import Bitstream, pack, unpack
from vqcodec.coding.rdo import CANDIDATES, choose_bottom_codes, weighs_codes
from vqcodec.imageio import to_tensor
from vqcodec.priors.contract import IntegerPrior
from vqcodec.priors.pixelcnn import PixelCNNPrior, PriorConfig
from vqcodec.priors.registry import integer_twin
from vqcodec.sampling import sample_codes
from vqcodec.vqvae import BOTTOM_STRIDE, VQVAE, VQVAEConfig
from vqcodec.zoo.codec_model import CodecModel, codec_model_from
from vqcodec.zoo.files import save_model


# -- images -------------------------------------------------------------------------------------------
def smooth_image(height: int, width: int, seed: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """Random-ish smooth image: a few sinusoids per channel plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    img = np.full((height, width, channels), 0.5)
    for c in range(channels):
        for _ in range(3):
            fx, fy, phase, amp = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 6), rng.uniform(0.1, 0.25)
            img[..., c] += amp * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    img += rng.normal(0, 0.02, img.shape)
    full = np.iinfo(dtype).max
    out = (np.clip(img, 0, 1) * full).round().astype(dtype)
    return out[..., 0] if channels == 1 else out


def shapes_image(index: int, height: int = 32, width: int = 40) -> np.ndarray:
    """A smooth colour gradient with a flat rectangle and a disc on it (uint8, H x W x 3)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 1)
        img[..., c] = phase + a * x / width + b * y / height
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.uniform(0, 1, 3)
    cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(3, 9)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# -- code maps ------------------------------------------------------------------------------------------
def image_codes(model: CodecModel, pixels: np.ndarray, size: tuple[int, int] | None = None,
                rdo: float = 0.0, tile: int | None = None) -> list[torch.Tensor]:
    """Code maps (bottom first, each (1, H_l, W_l)) exactly as compress computes them, the image
    coded at ``size`` = (width, height) if given, with compress's ``rdo`` and ``tile`` (written out
    here rather than calling the codec's own conversion, so tests compare against an independent
    path; the rate-aware choice is the library's ``choose_bottom_codes``)."""
    bits = 8 if pixels.dtype == np.uint8 else 16
    x = to_tensor(pixels, bits)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if size is not None and size != (x.shape[3], x.shape[2]):
        x = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True)
    if not weighs_codes(model, rdo):
        return model.vqvae.encode(x)
    codes, candidates, distances = model.vqvae.encode_candidates(x, CANDIDATES)
    return choose_bottom_codes(model.priors, codes, candidates, distances, rdo, tile or model.tile)


def code_shapes(codes: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(H_l, W_l) of each code map (each (B, H_l, W_l))."""
    return [(c.shape[1], c.shape[2]) for c in codes]


def assert_codes_equal(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """The code maps are identical, level by level; the message names the first level that is not."""
    assert len(got) == len(want)
    for level, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"level {level}: {g.shape} != {w.shape}"
        assert torch.equal(g.cpu(), w.cpu()), f"level {level}: {(g.cpu() != w.cpu()).sum()} codes differ"


# -- small configurations ---------------------------------------------------------------------------------
def tiny_vqvae_config(levels: int = 2, **overrides) -> VQVAEConfig:
    """A VQ-VAE small enough to train for a few steps in a test."""
    base = dict(hidden=16, res_channels=8, res_blocks=1, num_codes=16, code_dim=4, levels=levels)
    base.update(overrides)
    return VQVAEConfig(**base)


def tiny_prior_config(**overrides) -> PriorConfig:
    """A PixelCNN prior small enough for exhaustive gradient checks (no dropout)."""
    base = dict(num_codes=8, channels=8, layers=2, heads=2, dropout=0.0, out_blocks=1, cond_channels=8, cond_blocks=1)
    base.update(overrides)
    return PriorConfig(**base)


# -- a tiny codec model ---------------------------------------------------------------------------------
def tiny_codec_file_parts(
    levels: int = 2, tile: int = 8, seed: int = 0, num_codes: int = 32, channels: int = 16, num_classes: int = 0,
) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config) of a random-init codec model, as a codec-model file stores them: a small
    VQ-VAE whose codebooks are seeded from encoder outputs (so codes vary) and a random PixelCNN
    per level (the top with attention, lower ones conditioned), quantized on random codes."""
    torch.manual_seed(seed)
    vq_cfg = VQVAEConfig(levels=levels, hidden=16, res_channels=8, res_blocks=1, num_codes=num_codes, code_dim=8)
    vqvae = VQVAE(vq_cfg)
    images = np.stack([smooth_image(32, 32, s) for s in range(4)])
    vqvae.train()
    with torch.no_grad():
        vqvae(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0)  # data-dependent codebook initialisation
    vqvae.eval()
    top = levels - 1
    gen = torch.Generator().manual_seed(seed)
    tensors = {f"vqvae.{k}": v for k, v in vqvae.state_dict().items()}
    prior_cfgs = []
    for level in range(levels):
        cfg = PriorConfig(num_codes=num_codes, channels=channels, layers=2, attention_every=1 if level == top else 0,
                          heads=2, dropout=0.0, out_blocks=1, cond_levels=top - level, cond_channels=channels,
                          cond_blocks=1, num_classes=num_classes)
        prior = PixelCNNPrior(cfg).eval()
        calibration = []
        for _ in range(2):
            codes = torch.randint(0, num_codes, (4, 8, 8), generator=gen)
            cond = [torch.randint(0, num_codes, (4, 8 >> k, 8 >> k), generator=gen) for k in range(1, top - level + 1)]
            label = torch.randint(0, num_classes, (4,), generator=gen) if num_classes else None
            calibration.append((codes, cond or None, label))
        tensors.update({f"prior{level}.{k}": v for k, v in integer_twin(prior, calibration).state().items()})
        prior_cfgs.append(cfg.to_dict())
    config = {"name": f"tiny{levels}", "tile": tile, "vqvae": vq_cfg.to_dict(), "priors": prior_cfgs}
    return tensors, config


def tiny_codec_model(**kwargs) -> CodecModel:
    """The tiny codec model (arguments of ``tiny_codec_file_parts``), built as a model file loads."""
    tensors, config = tiny_codec_file_parts(**kwargs)
    return codec_model_from(config["name"], config, tensors, "cpu")


def write_tiny_codec_model(path: str | Path, **kwargs) -> Path:
    """The tiny codec model as a codec-model file at ``path``."""
    tensors, config = tiny_codec_file_parts(**kwargs)
    save_model(path, tensors, "codec", config)
    return Path(path)


# -- a reference sampler --------------------------------------------------------------------------------
class _RecomputingStepper:
    """A stepper that recomputes ``parallel_probs`` over the whole map for every step."""

    def __init__(self, net: IntegerPrior, batch: int, height: int, width: int, cond, label, temperature: float,
                 order: str):
        self.net, self.cond, self.label, self.temperature = net, cond, label, temperature
        self.order = net.decode_order(height, width, order)
        self.codes = torch.zeros((batch, height, width), dtype=torch.long, device=net.device)

    def _where(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.order[step][:, 0]), torch.from_numpy(self.order[step][:, 1])

    def probs(self, step: int) -> torch.Tensor:
        rows, cols = self._where(step)
        return self.net.parallel_probs(self.codes, self.cond, self.label, self.temperature)[:, rows, cols]

    def record(self, step: int, codes: torch.Tensor) -> None:
        rows, cols = self._where(step)
        self.codes[:, rows, cols] = codes


@dataclasses.dataclass(frozen=True)
class RecomputingPrior:
    """An integer prior whose stepper is the full parallel pass: quadratic, but obviously right."""

    net: IntegerPrior

    @property
    def config(self):
        return self.net.config

    @property
    def device(self) -> torch.device:
        return self.net.device

    def parallel_probs(self, *args, **kwargs) -> torch.Tensor:
        return self.net.parallel_probs(*args, **kwargs)

    def decode_order(self, *args, **kwargs) -> list[np.ndarray]:
        return self.net.decode_order(*args, **kwargs)

    def stepper(self, batch, height, width, cond=None, label=None, temperature=1.0,
                order="fast", extents=None) -> _RecomputingStepper:
        if extents is not None:
            raise ValueError("the recomputing stepper runs maps of one size only")
        return _RecomputingStepper(self.net, batch, height, width, cond, label, temperature, order)

    def state(self) -> dict[str, torch.Tensor]:
        return self.net.state()


def stepper_mismatches(stepper, parallel: torch.Tensor, codes: torch.Tensor) -> list[int]:
    """Walk ``stepper`` through its order feeding it ``codes`` (B, H, W); the steps whose
    probabilities differ from ``parallel`` (B, H, W, K), the encoder's, in any bit (device-safe)."""
    bad = []
    for step, positions in enumerate(stepper.order):
        rows, cols = torch.from_numpy(positions[:, 0]), torch.from_numpy(positions[:, 1])
        if not torch.equal(stepper.probs(step).cpu(), parallel[:, rows, cols].cpu()):
            bad.append(step)
        stepper.record(step, codes[:, rows, cols].to(parallel.device))
    return bad


def extent_mismatches(net: IntegerPrior, codes: torch.Tensor, cond, label, extents: torch.Tensor,
                      num_codes: int) -> list[tuple[int, int, int, int]]:
    """Walk ``net``'s stepper over a batch of maps padded to ``codes``' frame, map b being the top-left
    ``extents[b]``, recording ``codes`` inside each extent and random codes outside it; the
    (step, map, row, column) where its probabilities differ from the parallel pass on that map alone."""
    alone = []
    for b, (eh, ew) in enumerate(extents.tolist()):
        part = [cond[0][b : b + 1, : -(-eh // 2), : -(-ew // 2)]] if cond else None
        lab = label[b : b + 1] if label is not None else None
        alone.append(net.parallel_probs(codes[b : b + 1, :eh, :ew], part, lab)[0])
    stepper = net.stepper(codes.shape[0], codes.shape[1], codes.shape[2], cond, label, extents=extents)
    noise = torch.randint(0, num_codes, codes.shape, generator=torch.Generator().manual_seed(1))
    bad = []
    for step, positions in enumerate(stepper.order):
        probs, record = stepper.probs(step), codes[:, positions[:, 0], positions[:, 1]].clone()
        for b, (eh, ew) in enumerate(extents.tolist()):
            for p, (r, c) in enumerate(positions.tolist()):
                if r < eh and c < ew:
                    bad += [] if torch.equal(probs[b, p], alone[b][r, c]) else [(step, b, r, c)]
                else:
                    record[b, p] = noise[b, r, c]
        stepper.record(step, record)
    return bad


def naive_sample_codes(model: CodecModel, *args, **kwargs) -> list[torch.Tensor]:
    """``sampling.sample_codes`` with every prior replaced by its ``RecomputingPrior``: the cached
    steppers are exact when both give the same codes."""
    naive = dataclasses.replace(model, priors=tuple(RecomputingPrior(p) for p in model.priors))
    return sample_codes(naive, *args, **kwargs)


# -- random damage to .vqc files --------------------------------------------------------------------------
def header_end(data: bytes) -> int:
    """Offset of the header CRC in a valid file (the header is everything before it)."""
    stream = unpack(data)
    return len(data) - sum(len(t) for t in stream.tiles) - 4


def with_header_crc(data: bytearray, end: int) -> bytes:
    data[end : end + 4] = zlib.crc32(bytes(data[:end])).to_bytes(4, "little")
    return bytes(data)


def tile_count(width: int, height: int, levels: int, tile_size: int) -> int:
    """How many tiles the codec expects for an image of this size (4 pixels per bottom code, the image
    padded to the top level's stride): what a consistent header must record."""
    stride = BOTTOM_STRIDE << (levels - 1)
    rows = -(-height // stride) * stride // BOTTOM_STRIDE
    cols = -(-width // stride) * stride // BOTTOM_STRIDE
    return -(-rows // tile_size) * -(-cols // tile_size)


def huge_claim(data: bytes, width: int, height: int, tile_size: int = 256, payload: bytes = b"\0" * 4) -> bytes:
    """A valid container (every checksum right, the tile count consistent) with ``data``'s model and
    levels that claims a ``width`` x ``height`` image whose every tile payload is ``payload``: the
    shape of a crafted file that aims to make a decoder allocate far more than the file's size."""
    head = unpack(data).header
    head = dataclasses.replace(head, width=width, height=height, tile_size=tile_size, icc_profile=None)
    n = tile_count(width, height, head.levels, tile_size)
    return pack(Bitstream(head, (payload,) * n, code_checksums=(0,) * n))  # (format 5's code checksums)


def huge_header_mutation(rng: random.Random, data: bytes) -> bytes:
    """A header that claims a huge image: above the decoder's default limit (about 179 MP), or below
    it with payloads too short for the claimed codes. Either must be refused before allocating."""
    levels = unpack(data).header.levels
    if rng.random() < 0.5:  # over the limit, up to the format's 2**30 pixels
        width = rng.randint(14_000, 1 << 15)
        height = rng.randint(-(-180_000_000 // width), (1 << 30) // width)
        return huge_claim(data, width, height, 256, bytes(4 * rng.randint(0, 1)))
    width, height = rng.randint(2_000, 13_000), rng.randint(2_000, 13_000)
    tile, payload = rng.choice([(256, b""), (256, bytes(4)), (128, b""), (64, b"")])
    if tile_count(width, height, levels, tile) > 4096:
        tile, payload = 256, b""
    return huge_claim(data, width, height, tile, payload)


def pack_with_lengths(stream: Bitstream, lengths: list[int]) -> bytes:
    """``pack``, but with a tile-length table of one's choosing (payloads and checksums as they are,
    the header CRC right): a file whose lengths disagree with its payloads."""
    from vqcodec.coding import bitstream as bs

    h = stream.header
    head = bytearray(bs.MAGIC) + bytes((h.version, bs.FLAG_ICC if h.icc_profile is not None else 0))
    head += h.model_fingerprint + bs._varint(h.width) + bs._varint(h.height)
    head += bytes((h.channels, h.bit_depth, h.levels, h.tile_size.bit_length() - 1))
    head += bs._varint(len(stream.tiles)) + b"".join(bs._varint(n) for n in lengths)
    head += b"".join(bs.tile_checksum(t).to_bytes(2, "little") for t in stream.tiles)
    if h.has_code_checksums:
        head += b"".join(c.to_bytes(2, "little") for c in stream.code_checksums)
    if h.icc_profile is not None:
        head += bs._varint(len(h.icc_profile)) + h.icc_profile
    return bytes(head) + zlib.crc32(head).to_bytes(4, "little") + b"".join(stream.tiles)


def lengths_mutation(rng: random.Random, data: bytes) -> bytes:
    """Tile lengths that disagree with the payloads: a boundary between two tiles moved (checksums
    repaired, so the container is consistent but the tiles are misaligned), or one length changed
    with the header CRC repaired (the lengths then disagree with the file's size, by a byte or by
    up to 2**40)."""
    stream = unpack(data)
    tiles = list(stream.tiles)
    if len(tiles) > 1 and rng.random() < 0.5:
        k = rng.randrange(len(tiles) - 1)
        joined = tiles[k] + tiles[k + 1]
        cut = rng.randrange(len(joined) + 1)
        tiles[k], tiles[k + 1] = joined[:cut], joined[cut:]
        return pack(dataclasses.replace(stream, tiles=tuple(tiles)))
    lengths = [len(t) for t in tiles]
    k = rng.randrange(len(tiles))
    lengths[k] = max(0, lengths[k] + rng.choice([-4, -1, 1, 4, 1000, 1 << 20, 1 << 40]))
    return pack_with_lengths(stream, lengths)


def mutate(rng: random.Random, data: bytes, hend: int) -> tuple[str, bytes]:
    """One random mutation; the ones that fix the checksums reach the codec layer and the range decoder."""
    kind = rng.choices(
        ["flip", "byte", "truncate", "insert", "append", "header_crc", "payload_crc", "tiles", "fields", "huge",
         "lengths"],
        weights=[25, 15, 15, 10, 5, 10, 10, 6, 4, 4, 4],
    )[0]
    if kind == "huge":
        return kind, huge_header_mutation(rng, data)
    if kind == "lengths":
        return kind, lengths_mutation(rng, data)
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == "truncate":
        del buf[rng.randrange(len(buf)) :]
    elif kind == "insert":
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "append":
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "header_crc":  # a header byte changes and the header CRC is recomputed
        i = rng.randrange(4, hend)
        buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
        return kind, with_header_crc(buf, hend)
    elif kind == "payload_crc":  # payload bytes change; the tiles' CRC-16s, then the header CRC, are repaired
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(hend + 4, len(buf))
            buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
        stream = unpack(data)
        tiles, pos = [], hend + 4
        for t in stream.tiles:  # same lengths, so pack rewrites only the checksum table and header CRC
            tiles.append(bytes(buf[pos : pos + len(t)]))
            pos += len(t)
        return kind, pack(dataclasses.replace(stream, tiles=tuple(tiles)))
    elif kind == "tiles":  # a consistent container whose tile payloads are damaged
        stream = unpack(data)
        tiles = list(stream.tiles)
        sums = list(stream.code_checksums or (0,) * len(tiles))  # format 5: one code checksum per tile
        k = rng.randrange(len(tiles))
        op = rng.randrange(5)
        if op == 0:
            tiles[k] = tiles[k][: rng.randrange(len(tiles[k]) + 1)]
        elif op == 1:
            tiles[k] = tiles[k] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 4, 8])))
        elif op == 2:
            tiles[k] = bytes(rng.randrange(256) for _ in range(rng.choice([0, 4, 8, 64])))
        elif op == 3 and len(tiles) > 1:
            del tiles[k], sums[k]
        else:
            tiles.append(bytes(4 * rng.randrange(3)))
            sums.append(rng.randrange(1 << 16))
        return kind, pack(Bitstream(stream.header, tuple(tiles), code_checksums=tuple(sums)))
    else:  # valid header values that disagree with the payloads
        stream = unpack(data)
        h = stream.header
        field = rng.choice(["width", "height", "channels", "bit_depth", "levels", "tile_size"])
        value = {
            "width": rng.randint(1, 24), "height": rng.randint(1, 24), "channels": 4 - h.channels,
            "bit_depth": 24 - h.bit_depth, "levels": 5 - h.levels, "tile_size": rng.choice([4, 8, 16, 64]),
        }[field]
        return kind, pack(dataclasses.replace(stream, header=dataclasses.replace(h, **{field: value})))
    return kind, bytes(buf)


class DamagedFile(NamedTuple):
    pixels: np.ndarray
    data: bytes  # the intact file
    bad: bytes  # the same file with one tile's payload damaged
    tile: int  # the tile side the file was written with
    damaged: int  # the index of the damaged tile


def file_with_damaged_tile(model: CodecModel) -> DamagedFile:
    """A 64x96 image coded in six 8x8-code tiles, and the same file with a bit flipped in the middle
    of tile 2's payload (the tile checksums are not repaired: the container sees the damage)."""
    tile, k = 8, 2
    pixels = smooth_image(64, 96, seed=121)  # 16x24 bottom codes: 6 tiles of 8x8
    data = compress(pixels, model, tile=tile)
    lengths = [len(t) for t in unpack(data).tiles]
    assert len(lengths) == 6 and all(lengths)
    at = len(data) - sum(lengths) + sum(lengths[:k]) + lengths[k] // 2  # the middle of tile k's payload
    bad = bytearray(data)
    bad[at] ^= 0x10
    return DamagedFile(pixels, data, bytes(bad), tile, k)


# -- a toy classifier ------------------------------------------------------------------------------------------
class Brightness(torch.nn.Module):
    """Toy classifier for rejection sampling: class 1 logit = mean brightness, class 0 logit = 1 - mean
    brightness (TorchScript-able, so it can be saved as a classifier file)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([1 - m, m], 1)


# -- training runs --------------------------------------------------------------------------------------------
def read_log(run: str | Path) -> tuple[list[dict], list[dict]]:
    """(training-step records, validation records) of a run's log.jsonl."""
    lines = (Path(run) / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if "loss" in r], [r for r in records if "val_psnr" in r]
