"""Write output files so that an interrupted or failed run never leaves a half-written file and
never destroys something the user did not ask to replace.

What a write does depends on what the output path is (``output_kind`` tells it before any work):

- a new name: the bytes go to a temporary file in the same folder, which is fsynced and then
  hard-linked to the name; the link fails if a file of that name appeared meanwhile, so two
  concurrent writers can never both "create" the same file (the loser gets "exists"). Where the
  file system has no hard links, the name is first reserved with an exclusive create and then
  atomically replaced by the temporary file.
- an existing regular file: refused unless ``force``; with ``force`` replaced atomically
  (temporary file, fsync, ``os.replace``).
- a symbolic link: followed. A link to a regular file is that file (``force`` replaces the
  target, the link stays a link); a link to a device or FIFO is written through; a dangling link
  is refused.
- a character device or FIFO (``/dev/null``, a named pipe, ``/dev/stdout``, ``>(cmd)``) and a
  name of an open stream (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``):
  written through, i.e. opened for writing and written as a shell redirection would; nothing is
  replaced, so no ``force`` is needed.
- a directory, block device or socket: refused.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path

from vqcodec.errors import VQCodecError

_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


def _names_open_stream(path: Path) -> bool:
    """``/dev/stdout``-like names: they name a stream this process already has open."""
    text = os.path.abspath(path)
    return text in ("/dev/stdout", "/dev/stderr") or text.startswith(
        ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/")
    )


def output_kind(path: str | os.PathLike, *, force: bool = False) -> str:
    """What writing ``path`` would do: "new" (create), "replace" (existing regular file, only with
    ``force``) or "through" (a device, FIFO or open stream, written in place). Raises
    VQCodecError, without touching anything, for an output that must not be written."""
    target = Path(path)
    try:
        st = os.stat(target)  # follows symbolic links
    except FileNotFoundError:
        if target.is_symlink():
            raise VQCodecError(f"{target} is a dangling symbolic link; not writing through it") from None
        parent = target.parent
        if not parent.is_dir():
            raise VQCodecError(f"cannot write {target}: folder {parent} does not exist") from None
        return "new"
    except OSError as e:
        raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise VQCodecError(f"{target} is a directory; give a file name to write to")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or _names_open_stream(target):
        return "through"
    if not stat.S_ISREG(st.st_mode):
        raise VQCodecError(f"{target} is not a regular file, a character device or a FIFO; not writing to it")
    if not force:
        raise VQCodecError(f"{target} exists; use --force to overwrite")
    return "replace"


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` following the rules of the module docstring: a regular file is
    created or (with ``force``) replaced atomically, never half-written and never replaced without
    ``force`` even by a concurrent writer; devices and FIFOs are written through.

    The temporary file is created with mode 0o666 so the process umask applies, as for a normal
    ``open``."""
    target = Path(path)
    kind = output_kind(target, force=force)
    if kind == "through":
        _write_through(target, data)
        return
    if target.is_symlink():  # a link to a regular file: replace its target, keep the link
        target = Path(os.path.realpath(target))
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from e
    try:
        _write_fd(fd, data, sync=True)
        if kind == "replace":
            os.replace(tmp, target)
        else:
            _link_no_replace(tmp, target)
    except BaseException as e:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, VQCodecError):
            raise
        if isinstance(e, OSError):
            raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from e
        raise
    _fsync_dir(target.parent)


def _link_no_replace(tmp: Path, target: Path) -> None:
    """Give the finished temporary file the name ``target`` unless that name exists (atomically),
    then drop the temporary name."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise VQCodecError(f"{target} exists; use --force to overwrite") from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        # no hard links here (e.g. FAT, some network file systems): reserve the name exclusively,
        # then replace the empty placeholder with the finished file in one rename
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise VQCodecError(f"{target} exists; use --force to overwrite") from None
        try:
            os.replace(tmp, target)
        except BaseException:
            with suppress(OSError):
                os.unlink(target)
            raise
        return
    os.unlink(tmp)


def _write_through(target: Path, data: bytes) -> None:
    """Open an existing device, FIFO or stream for writing and write to it, as ``>`` would."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from e
    try:
        _write_fd(fd, data, sync=False)
    except OSError as e:
        raise VQCodecError(f"cannot write {target}: {e.strerror or e}") from e


def _write_fd(fd: int, data: bytes, sync: bool) -> None:
    """Write all of ``data`` to the open descriptor and close it (``sync``: to the disk first)."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort, since not every OS/filesystem allows it."""
    with suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
