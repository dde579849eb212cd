"""Edits cached on disk: train once, reuse on the next run of a notebook (or a rebuild of the book).

An edit is keyed by its metadata: method, concept, every hyper-parameter, the method's ``IMPLEMENTATION``
number, and the base model it is trained on -- ``base_model`` (:func:`model_identity`: a stable hash of the base
UNet) and ``dtype`` (the base UNet's dtype) -- when :func:`cached_edit` is given the pipeline (``pipe=``) or the
metadata already carries them (the methods' ``metadata(..., pipe=pipe)``). So a toy and an SD v1.4 edit with the
same hyper-parameters never share a key. Any change trains a new edit. Cached files are ordinary edit files
(:func:`~erasure_lib.methods.save_edit`), stored in the base model's dtype and written atomically, so an
interrupted run loses at most the edit it was training.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .edits import Edit, _unet, cast_edit, dtype_name, load_edit, save_edit


def edit_key(metadata: Mapping) -> str:
    """A short, stable hash of the metadata (JSON with sorted keys)."""
    text = json.dumps(metadata, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(pipe) -> str:
    """A stable identity of the base model of ``pipe``: :func:`erasure_lib.loading.model_identity` for a pipeline
    (its weights file's hash, its hub revision, or the hash of its UNet's state dict), :func:`_state_identity`
    for a bare UNet."""
    if hasattr(pipe, "unet"):
        from ..loading import model_identity as identity
        return str(identity(pipe))
    return _state_identity(pipe)


def _state_identity(unet: torch.nn.Module) -> str:
    """SHA-256 of a UNet's state dict (every name, dtype, shape and the bytes of every tensor), first 16 hex digits."""
    from .._hashing import state_dict_sha256
    return state_dict_sha256(unet)[:16]


def _bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor, any dtype (bfloat16 too, which numpy has not)."""
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def base_model(pipe) -> dict:
    """The metadata that names the base model of ``pipe``: ``{"base_model": model_identity, "dtype": "float16"}``."""
    return {"base_model": model_identity(pipe), "dtype": dtype_name(_unet(pipe).dtype)}


def cache_folder(cache_dir: str | Path) -> Path:
    """``cache_dir`` as a path; a relative one is taken from the repository root (notebooks run in ``notebooks/``)."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_absolute():
        from ..results import ROOT
        cache_dir = ROOT / cache_dir
    return cache_dir


def cached_edit(cache_dir: str | Path | None, metadata: Mapping, train: Callable[[], Edit], pipe=None) -> Edit:
    """The edit described by ``metadata``: loaded from ``cache_dir`` if it was trained before, else
    ``train()``-ed and saved there. A relative ``cache_dir`` is taken from the repository root (notebooks run
    in ``notebooks/``). ``cache_dir=None`` always trains (nothing is written).

    ``pipe`` (the pipeline ``train`` trains on): its base model (:func:`base_model`) joins the key, and the edit is
    returned and stored in the base UNet's dtype (fp32 on the toy: unchanged), so a cached and a fresh edit are
    the same tensors. Without it the key is the metadata alone (what it was before base models were keyed)."""
    metadata = dict(metadata)
    dtype = None
    if pipe is not None:
        for key, value in base_model(pipe).items():
            if metadata.setdefault(key, value) != value:
                raise ValueError(f"metadata[{key!r}] = {metadata[key]!r}, but the pipeline's is {value!r}")
        dtype = _unet(pipe).dtype
    if cache_dir is None:
        return cast_edit(train(), dtype)
    cache_dir = cache_folder(cache_dir)
    slug = "-".join(str(metadata.get(k, "")).replace(" ", "_").replace("/", "_")[:24]
                    for k in ("method", "variant", "concept")).strip("-")
    path = Path(cache_dir) / f"{slug}-{edit_key(metadata)}.safetensors"
    if path.exists():
        edit, _ = load_edit(path)
        return edit
    edit = cast_edit(train(), dtype)
    save_edit(edit, path, metadata, dtype=dtype)
    return edit


def edit_fingerprint(edit: Mapping) -> str:
    """SHA-256 of an edit's names and tensor bytes: equal fingerprints, equal edits (``{}``: the unedited model)."""
    h = hashlib.sha256()
    for name in sorted(edit):
        h.update(name.encode())
        h.update(_bytes(edit[name]))
    return h.hexdigest()


__all__ = ["base_model", "cache_folder", "cached_edit", "edit_fingerprint", "edit_key", "model_identity"]
