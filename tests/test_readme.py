"""README.md tells the truth: its Kodak table is docs/kodak-summary.md's, and its examples run.

The Kodak table (with the line above it) is generated from docs/kodak-summary.md, the summary that
`vqcodec benchmark` writes: after a new benchmark run, copy its summary.md to docs/ and run
``python tests/test_readme.py`` to rewrite the README's table. No figure is edited by hand in two
places.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SUMMARY = ROOT / "docs" / "kodak-summary.md"

BEGIN = "<!-- kodak-table: generated from docs/kodak-summary.md by `python tests/test_readme.py`; do not edit -->"
END = "<!-- end kodak-table -->"
# The columns of the summary's "Rate-distortion summary" table that the README shows, in this order.
COLUMNS = ["codec", "points", "bpp range", "BD-rate", "BD-PSNR", "PSNR @0.25", "PSNR @0.5", "PSNR @0.75", "PSNR @1",
           "encode ms", "decode ms"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_table(lines: list[str], start: int) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the Markdown table whose header is lines[start]."""
    header = cells(lines[start])
    assert set(lines[start + 1].replace("|", "").strip()) <= set("-: "), lines[start + 1]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
        assert len(rows[-1]) == len(header), line
    return header, rows


def summary_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The "Rate-distortion summary" table of a `vqcodec benchmark` summary."""
    lines = text.splitlines()
    section = lines.index("## Rate-distortion summary")
    start = next(i for i in range(section, len(lines)) if lines[i].startswith("| codec |"))
    return markdown_table(lines, start)


def kodak_block(text: str) -> str:
    """What the README holds between BEGIN and END, made from a summary's text."""
    lines = text.splitlines()
    title = lines[0].removeprefix("# Benchmark: ").strip()
    run = next(line for line in lines if line.startswith("Run "))
    run = run.split(" Libraries:")[0]
    header, rows = summary_table(text)
    missing = [c for c in COLUMNS if c not in header]
    assert not missing, f"docs/kodak-summary.md's table has no column {missing}: change COLUMNS in {__file__}"
    pick = [header.index(c) for c in COLUMNS]
    out = [f"Benchmark: {title}. {run}", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(row[i] for i in pick) + " |" for row in rows]
    return "\n".join(out)


def readme_block(readme: str) -> tuple[int, int]:
    """The span of the generated block's content in the README's text."""
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1, "the README must hold one generated Kodak table"
    start = readme.index(BEGIN) + len(BEGIN)
    end = readme.index(END)
    assert start < end
    return start, end


def write_readme_table() -> bool:
    """Rewrite the README's Kodak table from docs/kodak-summary.md; True if it changed."""
    readme = README.read_text(encoding="utf-8")
    start, end = readme_block(readme)
    new = readme[:start] + "\n" + kodak_block(SUMMARY.read_text(encoding="utf-8")) + "\n" + readme[end:]
    if new != readme:
        README.write_text(new, encoding="utf-8")
    return new != readme


def section(readme: str, title: str) -> str:
    """The text of the README's "## title" section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def test_the_readme_kodak_table_is_the_summarys() -> None:
    readme = README.read_text(encoding="utf-8")
    start, end = readme_block(readme)
    got = readme[start:end].strip()
    summary = SUMMARY.read_text(encoding="utf-8")
    want = kodak_block(summary)
    # cell by cell first, for a message that names what differs
    g_lines, w_lines = got.splitlines(), want.splitlines()
    g_start = next(i for i, line in enumerate(g_lines) if line.startswith("| codec |"))
    g_header, g_rows = markdown_table(g_lines, g_start)
    s_header, s_rows = summary_table(summary)
    assert g_header == COLUMNS
    assert [r[0] for r in g_rows] == [r[0] for r in s_rows], "the README's codecs are not the summary's"
    diffs = [f"{row[0]} / {col}: README {row[j]!r}, summary {s_row[s_header.index(col)]!r}"
             for row, s_row in zip(g_rows, s_rows) for j, col in enumerate(g_header)
             if row[j] != s_row[s_header.index(col)]]
    assert not diffs, "README.md's Kodak table differs from docs/kodak-summary.md (run `python " \
        "tests/test_readme.py`):\n" + "\n".join(diffs)
    assert got == want, f"README.md's Kodak block is not the generated one (run `python tests/test_readme.py`):\n" \
        f"{want}\n-- got --\n{got}\n" + "\n".join(set(g_lines) ^ set(w_lines))


def test_the_readme_holds_no_other_rate_or_quality_figures() -> None:
    """Figures in bpp, dB or % live in the generated table only, so there is nothing else to keep in sync."""
    readme = README.read_text(encoding="utf-8")
    start, end = readme_block(readme)
    rest = readme[:start] + readme[end:]
    figures = re.findall(r"[-+~]?\d+(?:\.\d+)?\s?(?:dB|bpp|%)", rest)
    assert not figures, f"figures outside the generated Kodak table: {figures}"


def test_the_readme_ladder_is_the_shipped_one() -> None:
    from vqcodec.zoo import registry

    text = section(README.read_text(encoding="utf-8"), "Using it")
    match = re.search(r"quality 1 \(smallest files\) to (\d+) \(best pictures\); default (\d+)", text)
    assert match, "the 'Using it' section no longer names the ladder's qualities"
    assert (int(match.group(1)), int(match.group(2))) == (len(registry.ladder()), registry.default_quality())


def test_the_paths_the_readme_names_exist() -> None:
    readme = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:vqcodec|cli|docs|benchmarks|tests)/[\w./-]*)`", readme))
    named |= set(re.findall(r"\]\(((?:docs|benchmarks)/[\w./-]+)\)", readme))
    assert "docs/kodak-summary.md" in named and "docs/kodak-rd.png" in named
    assert [p for p in sorted(named) if not (ROOT / p).exists()] == []
    modules = {p.name for p in (ROOT / "vqcodec").rglob("*.py")}
    bare = set(re.findall(r"`(\w+\.py)`", section(readme, "How it works")))
    assert sorted(bare - modules) == []


def example_lines(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, blank and comment lines left out."""
    commands, pending = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line)
    return commands


@pytest.mark.slow
def test_the_using_it_examples_run_in_order(tmp_path: Path) -> None:
    """Every command of "Using it", then its Python, in order in a fresh folder, as a user would run them."""
    text = section(README.read_text(encoding="utf-8"), "Using it")
    shell = [line for block in code_blocks(text, "sh") for line in example_lines(block)]
    python = code_blocks(text, "python")
    assert len(shell) >= 5 and len(python) == 1
    assert "photo.png" in text and "photos/" in text

    # the inputs the section names: a small photo and a folder of images
    sample = Image.open(ROOT / "vqcodec" / "samples" / "endeavour.png").convert("RGB")
    sample.crop((200, 150, 328, 246)).save(tmp_path / "photo.png")
    (tmp_path / "photos").mkdir()
    sample.crop((0, 0, 48, 40)).save(tmp_path / "photos" / "a.png")
    Image.fromarray(np.asarray(sample.crop((100, 100, 140, 124)).convert("L"))).save(tmp_path / "photos" / "b.png")

    # `vqcodec` is this interpreter's module, whatever is on PATH
    bin_dir = tmp_path.parent / f"{tmp_path.name}-bin"
    bin_dir.mkdir()
    shim = bin_dir / "vqcodec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vqcodec "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    for line in shell:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README example failed ({done.returncode}): {line}\n{done.stderr}"
    done = subprocess.run([sys.executable, "-c", python[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"README's Python example failed:\n{done.stderr}"

    # what the examples say they make
    with Image.open(tmp_path / "decoded.png") as im:
        assert im.size == (128, 96)
    with Image.open(tmp_path / "crop.png") as im:
        assert im.size == (64, 48)
    assert sorted(p.name for p in (tmp_path / "compressed").iterdir()) == ["a.vqc", "b.vqc"]
    assert len(list((tmp_path / "restored").iterdir())) == 2
    assert (tmp_path / "piped.vqc").read_bytes() == (tmp_path / "photo.vqc").read_bytes()
    assert (tmp_path / "small.vqc").stat().st_size < (tmp_path / "photo.vqc").stat().st_size


if __name__ == "__main__":
    print("README.md's Kodak table " + ("rewritten" if write_readme_table() else "already up to date")
          + " from docs/kodak-summary.md")
