"""The options the scripts that time the codec on a folder of images share."""

from __future__ import annotations

import argparse
from pathlib import Path


def image_folder_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line, with --data, --model, --scale, --threads and
    --max-images (the folder, the codec model, the rung's scale, the thread budget, how many images)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-images", type=int, default=None)
    return ap
