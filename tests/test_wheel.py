"""The wheel that `pip install .` builds holds everything an installed vqcodec needs: every module, the
command line as `vqcodec_cli`, the shipped models and their manifest, and the bundled sample; and
installed from it alone, vqcodec finds its models."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built offline (no index, no build isolation) from a copy of what the build reads, so
    the checkout gets no build/ or egg-info of it."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("vqcodec", "cli"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PIP_NO_INPUT": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list(out.glob("vqcodec-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_the_wheel_holds_the_models_the_modules_and_the_command_line(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        weights = sorted((ROOT / "vqcodec" / "zoo" / "weights").glob("*.safetensors"))
        assert len(weights) >= 11
        for path in [*weights, ROOT / "vqcodec" / "zoo" / "weights" / "models.json"]:
            name = path.relative_to(ROOT).as_posix()
            assert name in names, f"the wheel lacks {name}"
            assert zf.read(name) == path.read_bytes(), f"the wheel's {name} is not the checkout's"
        # every module of the library, and the command line under the name it installs as
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "vqcodec").rglob("*.py")
                   if "__pycache__" not in p.parts}
        modules |= {"vqcodec_cli/" + p.relative_to(ROOT / "cli").as_posix() for p in (ROOT / "cli").rglob("*.py")
                    if "__pycache__" not in p.parts}
        assert "vqcodec_cli/main.py" in modules
        assert sorted(modules - names) == []
        assert [n for n in names if n.startswith(("cli/", "tests/", "benchmarks/"))] == []
        for sample in (ROOT / "vqcodec" / "samples").glob("*.png"):
            assert sample.relative_to(ROOT).as_posix() in names
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
        assert entry_points["console_scripts"]["vqcodec"] == "vqcodec_cli.main:main"


@pytest.mark.slow
def test_vqcodec_installed_from_the_wheel_alone_finds_its_models(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel (in a folder of its own, ahead of the checkout's editable install),
    vqcodec lists the shipped models from its own copy of them."""
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("VQCODEC_MODELS", None)
    where = subprocess.run([sys.executable, "-c", "import vqcodec, vqcodec_cli; print(vqcodec.__file__); "
                            "print(vqcodec_cli.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    listing = subprocess.run([sys.executable, "-m", "vqcodec", "models"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    paths = subprocess.run([sys.executable, "-c", "from vqcodec.zoo import registry\n"
                            "for m in registry.list_models():\n    print(m.path)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    shipped = sorted(p.name for p in (ROOT / "vqcodec" / "zoo" / "weights").glob("*.safetensors"))
    assert sorted(Path(p).name for p in paths) == shipped
    assert all(Path(p).is_relative_to(site) for p in paths), paths
