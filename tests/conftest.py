"""Shared fixtures and options.

``pytest --regen-golden`` rewrites the golden files (tests/data/golden.png, golden.vqc, golden.sha256)
instead of comparing against them; see ``test_codec.test_golden_file``. ``pytest -m "not slow"``
leaves out the tests marked slow (each several seconds on a 2-core machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vqcodec.testing import shapes_image, tiny_codec_model
from vqcodec.zoo.codec_model import CodecModel, load_codec_model


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden", action="store_true", default=False,
        help="rewrite tests/data/golden.png/.vqc/.sha256 with the default model instead of comparing "
             "(then review and commit them)",
    )


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was started with --regen-golden."""
    return bool(request.config.getoption("--regen-golden"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run small models: one thread is faster on a shared 2-core machine (the decoder's
    tiny GEMMs most of all). Tests that need more threads set them in their own subprocess."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model() -> CodecModel:
    """The shipped default codec model (loaded once per process by the library's own cache)."""
    return load_codec_model()


@pytest.fixture(scope="session")
def model3() -> CodecModel:
    """A tiny random-init 3-level codec model with 16-code tiles."""
    return tiny_codec_model(levels=3, tile=16)


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    """A folder of 8 small RGB PNGs (gradients plus shapes), for quick training runs."""
    folder = tmp_path / "tiny_images"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(shapes_image(i)).save(folder / f"img{i}.png")
    return folder
