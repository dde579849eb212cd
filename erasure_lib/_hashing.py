"""SHA-256 of a file, read in 1 MiB chunks: the one hash behind the zoo manifest, the prompt-set manifest and
the judges' provenance."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
