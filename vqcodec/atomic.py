"""Write output files atomically, so an interrupted or failed run never leaves a half-written file."""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path

from vqcodec.errors import VQCodecError


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync and ``os.replace``.

    Without ``force`` an existing target is refused before anything is written. The temp file is
    created with mode 0o666 so the process umask applies, as for a normal ``open``. The
    exists-check and the replace are not one atomic step: a file created in between is overwritten.
    """
    target = Path(path)
    if target.is_dir():
        raise VQCodecError(f"{target} is a directory; give a file name to write to")
    if target.exists() and not force:
        raise VQCodecError(f"{target} exists; use --force to overwrite")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from e
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort, since not every OS/filesystem allows it."""
    with suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
