"""Shared helpers of the metrics: one image convention, file hashes, devices."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._hashing import sha256_file as _sha256_uncached

ImageBatch = Any  # np.ndarray | torch.Tensor | Sequence of arrays / PIL images; see to_uint8_nhwc


def _one_to_uint8_hwc(image: Any) -> np.ndarray:
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        image = np.asarray(image.convert("RGB"))
    x = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if x.ndim != 3:
        raise ValueError(f"expected an image with 3 dimensions, got shape {x.shape}")
    if x.shape[-1] != 3 and x.shape[0] == 3:
        x = np.moveaxis(x, 0, -1)
    if x.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels (RGB), got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    return _float_to_uint8(x)


def _float_to_uint8(x: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected uint8 or float images in [0, 1], got dtype {x.dtype}")
    if np.isnan(x).any():
        raise ValueError("images contain NaN")
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def to_uint8_nhwc(images: ImageBatch) -> np.ndarray:
    """Any batch of RGB images -> contiguous uint8 ``(N, H, W, 3)``.

    Accepts uint8 (0..255) or float ([0, 1], rounded as ``round(x * 255)``) data, NHWC or NCHW, as a numpy
    array, a torch tensor, or a sequence of arrays / tensors / PIL images of one size."""
    if isinstance(images, np.ndarray) or torch.is_tensor(images):
        x = images.detach().cpu().numpy() if torch.is_tensor(images) else images
        if x.ndim == 3:
            raise ValueError(f"expected a batch of images (4-D), got shape {x.shape}; add a batch axis")
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images (4-D), got shape {x.shape}")
        if x.shape[0] == 0:
            return np.zeros((0, 0, 0, 3), np.uint8)
        if x.shape[-1] != 3 and x.shape[1] == 3:
            x = np.moveaxis(x, 1, -1)
        if x.shape[-1] != 3:
            raise ValueError(f"expected 3 colour channels (RGB), got shape {tuple(images.shape)}")
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x)
        return _float_to_uint8(x)
    images = list(images)
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8)
    arrays = [_one_to_uint8_hwc(im) for im in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)}; resize them to one size first")
    return np.stack(arrays)


def to_uint8_list(images: ImageBatch) -> list[np.ndarray]:
    """Like :func:`to_uint8_nhwc`, but a sequence may hold images of different sizes (NudeNet takes any)."""
    if isinstance(images, np.ndarray) or torch.is_tensor(images):
        return list(to_uint8_nhwc(images))
    return [_one_to_uint8_hwc(im) for im in images]


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return _sha256_uncached(path)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_cached(str(p), st.st_size, st.st_mtime_ns)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_groups(groups: Sequence[Any] | None, n: int) -> Sequence[Any] | None:
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups must have one entry per image ({n}), got {len(groups)}")
    return groups
