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


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str]) -> Path:
    """Save ``tensors`` (CPU copies, contiguous: safetensors refuses shared storage) with the string ``metadata`` in
    the file's header, atomically (:func:`atomic_path`)."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_safetensors(path: str | Path, what: str, fmt: str | None = None) -> tuple[dict, dict[str, str]]:
    """``(tensors, header metadata)`` of a safetensors file; a clear error when it is missing (``what`` names the
    kind of file) or when ``fmt`` is given and the header's ``format`` differs."""
    from safetensors import safe_open
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} file at {path}")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if fmt is not None and meta.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} file of this library (format {meta.get('format')!r}, "
                         f"expected {fmt!r})")
    return tensors, meta
