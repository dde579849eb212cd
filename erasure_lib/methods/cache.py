"""Edits cached on disk: train once, reuse on the next run of a notebook (or a rebuild of the book).

An edit is keyed by its metadata (method, concept, every hyper-parameter, the method's ``IMPLEMENTATION`` number,
and the SHA-256 of the base UNet's weights file when known): any change trains a new edit. Cached files are
ordinary edit files (:func:`~erasure_lib.methods.save_edit`), written atomically, so an interrupted run loses at
most the edit it was training.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

from .edits import Edit, load_edit, save_edit


def edit_key(metadata: Mapping) -> str:
    """A short, stable hash of the metadata (JSON with sorted keys)."""
    text = json.dumps(metadata, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_edit(cache_dir: str | Path | None, metadata: Mapping, train: Callable[[], Edit]) -> Edit:
    """The edit described by ``metadata``: loaded from ``cache_dir`` if it was trained before, else
    ``train()``-ed and saved there. A relative ``cache_dir`` is taken from the repository root (notebooks run
    in ``notebooks/``). ``cache_dir=None`` always trains (nothing is written)."""
    if cache_dir is None:
        return train()
    cache_dir = Path(cache_dir)
    if not cache_dir.is_absolute():
        from ..results import ROOT
        cache_dir = ROOT / cache_dir
    slug = "-".join(str(metadata.get(k, "")).replace(" ", "_").replace("/", "_")[:24]
                    for k in ("method", "variant", "concept")).strip("-")
    path = Path(cache_dir) / f"{slug}-{edit_key(metadata)}.safetensors"
    if path.exists():
        edit, _ = load_edit(path)
        return edit
    edit = train()
    save_edit(edit, path, dict(metadata))
    return edit


def edit_fingerprint(edit: Mapping) -> str:
    """SHA-256 of an edit's names and tensor bytes: equal fingerprints, equal edits (``{}``: the unedited model)."""
    h = hashlib.sha256()
    for name in sorted(edit):
        h.update(name.encode())
        h.update(edit[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["cached_edit", "edit_fingerprint", "edit_key"]
