"""Atomic file writes: nothing half-written ever sits at a final path.

Every writer of the package (checkpoints, histories, figures, feature and cid_mask caches, thumbnails) writes
into a temporary file in the destination folder and renames it over the target (``os.replace`` is atomic on
one file system). ``tempfile.mkstemp`` creates files readable by the owner only; the result gets the
permissions a plain ``open()`` would have given it (0o666 minus the umask), so figures and caches stay
readable by others as usual.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# read once at import: os.umask can only be read by setting it, which is not thread-safe
_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, prefix: str | None = None, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``: on success it replaces ``path``; on an exception, removed.

    ``prefix`` defaults to ``".<name>.tmp-"`` (a hidden file; a run killed mid-write leaves only such a file,
    which callers may clean up by that pattern).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=prefix if prefix is not None else f".{path.name}.tmp-", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, **kw: str) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk first when ``fsync``)."""
    with atomic_path(path, **kw) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as fh:
        fh.write(data)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: run records, histories, JSON results."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync, suffix="")
