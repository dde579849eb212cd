"""Atomic file writes: the one way this project writes a file that a reader (or an interrupted run) must never
see half-written: result tables, edits, the zoo manifest, training checkpoints, cached prompt sets."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """``with atomic_path(dest) as tmp: write(tmp)``: ``tmp`` is a fresh file beside ``dest`` (same folder, so
    the final ``os.replace`` is atomic). When the block finishes, ``tmp`` replaces ``dest``; when it raises,
    ``tmp`` is removed and ``dest`` is left as it was. ``suffix`` ends the temporary name, for writers that
    insist on an extension (``np.savez`` appends ``.npz`` otherwise). The folder is created if missing. The file
    gets the permissions of an ordinary new file (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
