"""The package as installed: a light ``import vqcodec``, and a command line that does not take the
name ``cli`` in site-packages."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str, cwd) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_import_vqcodec_is_light_and_compressing_needs_no_training_code(tmp_path) -> None:
    light = run_python("import sys, vqcodec; print(' '.join(sorted(sys.modules)))", tmp_path).split()
    assert "torch" not in light  # the codec functions load on first use
    loaded = run_python("import sys, vqcodec; vqcodec.compress; print(' '.join(sorted(sys.modules)))",
                        tmp_path).split()
    assert "vqcodec.codec" in loaded and "torch" in loaded
    assert [m for m in loaded if m.startswith(("vqcodec.train", "vqcodec.testing", "vqcodec_cli"))] == []


def test_the_cli_is_installed_as_vqcodec_cli_not_cli(tmp_path) -> None:
    out = run_python("import importlib.util as u; print(u.find_spec('cli'), u.find_spec('vqcodec_cli') is not None)",
                     tmp_path)
    assert out.split() == ["None", "True"]
    version = subprocess.run([sys.executable, "-m", "vqcodec", "--version"], cwd=tmp_path, check=True,
                             capture_output=True, text=True).stdout
    assert "version" in version


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["compress", "--help"], ["info", "x.vqc"]])
def test_commands_that_need_no_model_do_not_import_torch(tmp_path, argv) -> None:
    """--help, --version and info (which reads a header) start in a fraction of a second: no torch, no model."""
    if argv[0] == "info":
        import numpy as np

        import vqcodec

        (tmp_path / "x.vqc").write_bytes(vqcodec.compress(np.zeros((8, 8, 3), np.uint8)))
    code = f"import sys; sys.argv = ['vqcodec', *{argv!r}]\nfrom vqcodec_cli.main import main\n"
    code += "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\nprint('torch' in sys.modules)"
    assert run_python(code, tmp_path).strip().endswith("False")
