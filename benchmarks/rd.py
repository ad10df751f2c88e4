"""Rate-distortion benchmark: now the command ``vqcodec benchmark`` (library: ``vqcodec/bench/``).

This script only forwards old command lines to it:

    python benchmarks/rd.py --data DIR [--codecs ...] [--model M] [--out FOLDER] [--max-images N]
                            [--threads T] [--quality CODEC=Q1,Q2,...]

runs ``vqcodec benchmark DIR [the same options]``. ``--out`` is now a folder (CompressAI result
files, per-image rows, ``rd.png``, ``summary.md``); see benchmarks/README.md.
"""

from __future__ import annotations

import sys

from vqcodec_cli.main import main


def translate(argv: list[str]) -> list[str]:
    """``--data DIR`` becomes the command's folder argument; everything else passes through."""
    args, folder = [], []
    it = iter(argv)
    for arg in it:
        if arg == "--data":
            folder.append(next(it, ""))
        elif arg.startswith("--data="):
            folder.append(arg.split("=", 1)[1])
        else:
            args.append(arg)
    return ["benchmark", *folder, *args]


if __name__ == "__main__":
    main(translate(sys.argv[1:]), prog_name="vqcodec")
