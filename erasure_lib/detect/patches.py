"""Patch selection by spectral entropy, the input transform of NS-Net's group (``specs/ns-net.md`` section 3.4).

Source: ``HorizonTEL/DGS-Net`` ``data/PatchSelectionTransform.py`` (the same group's sister detector; that NS-Net uses
the same transform is inferred [inf]). The image is cut into square patches; each patch's spectral entropy is the
Shannon entropy (bits) of its normalised power spectrum ``|fftshift(FFT2(gray))|^2`` (gray = 0.299 R + 0.587 G +
0.114 B in [0, 1]); the ``n_low`` lowest- and ``n_high`` highest-entropy patches are kept, shuffled and tiled into a
square mosaic. The code's values: 32-px patches of a 256-px image (64 patches), 24 + 25 kept, a 7 x 7 mosaic of
224 px.

*Toy* scaling (:func:`toy_config`): the toy's 32-px images give 4-px patches, 64 of them as in the code, 24 + 25 kept,
a 7 x 7 mosaic of 28 px, centred on a 32-px zero canvas (the toy CLIP's input; padding rather than resizing keeps
the patches' pixels, whose high frequencies the detector is after). With fewer patches than ``n_low + n_high`` the
code's two index sets overlap and patches repeat; this function refuses that instead (pad or resize first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchConfig:
    """The code's values by default (``DGS-Net``: 32-px patches, 24 lowest + 25 highest entropy, 224-px mosaic)."""
    patch: int = 32
    n_low: int = 24
    n_high: int = 25
    canvas: int | None = None      # pad the mosaic to this side (None: the mosaic's own)


def toy_config() -> PatchConfig:
    """*toy*: 4-px patches of the 32-px toy images, the code's 24 + 25, padded to the toy CLIP's 32 px."""
    return PatchConfig(patch=4, n_low=24, n_high=25, canvas=32)


def _gray(patches: np.ndarray) -> np.ndarray:
    x = np.asarray(patches, dtype=np.float64)
    if np.issubdtype(np.asarray(patches).dtype, np.integer):
        x = x / 255.0
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def spectral_entropy(patches: np.ndarray) -> np.ndarray:
    """Entropy in bits of each patch's normalised power spectrum; ``patches``: ``(n, p, p, 3)`` (uint8, or float in
    [0, 1]). A flat patch has entropy 0 (all power at DC); a single bright pixel, ``log2(p * p)`` (flat spectrum)."""
    gray = _gray(patches)
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray), axes=(-2, -1))) ** 2
    total = power.sum(axis=(-2, -1), keepdims=True)
    p = np.divide(power, total, out=np.zeros_like(power), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    return terms.sum(axis=(-2, -1))


def split_patches(image: np.ndarray, patch: int) -> np.ndarray:
    """``(n, patch, patch, 3)`` patches of ``image`` (``(H, W, 3)``) in row-major order, the image cropped to a
    multiple of ``patch`` first (as the code crops)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need one (H, W, 3) image, got shape {image.shape}")
    rows, cols = image.shape[0] // patch, image.shape[1] // patch
    if rows == 0 or cols == 0:
        raise ValueError(f"an image of {image.shape[:2]} px has no {patch}-px patch")
    crop = image[: rows * patch, : cols * patch]
    return crop.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4).reshape(-1, patch, patch, 3)


def select_patches(image: np.ndarray, config: PatchConfig | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """The mosaic of ``image``'s ``n_low`` lowest- and ``n_high`` highest-entropy patches, in an order shuffled by
    ``rng`` (``default_rng(0)`` if None), same dtype as the image; padded with zeros to ``config.canvas``."""
    config = config or PatchConfig()
    keep = config.n_low + config.n_high
    side = math.isqrt(keep)
    if side * side != keep:
        raise ValueError(f"n_low + n_high = {keep} is not a square number of tiles")
    patches = split_patches(image, config.patch)
    if len(patches) < keep:
        raise ValueError(f"{len(patches)} patches of {config.patch} px, fewer than the {keep} kept: the code would "
                         f"repeat patches; pad or resize the image first")
    order = np.argsort(spectral_entropy(patches), kind="stable")
    chosen = np.concatenate([order[: config.n_low], order[len(order) - config.n_high:]])
    chosen = (rng or np.random.default_rng(0)).permutation(chosen)
    tiles = patches[chosen].reshape(side, side, config.patch, config.patch, 3)
    mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(side * config.patch, side * config.patch, 3)
    if config.canvas is None:
        return mosaic
    if config.canvas < mosaic.shape[0]:
        raise ValueError(f"canvas {config.canvas} px is smaller than the {mosaic.shape[0]}-px mosaic")
    out = np.zeros((config.canvas, config.canvas, 3), dtype=mosaic.dtype)
    off = (config.canvas - mosaic.shape[0]) // 2
    out[off: off + mosaic.shape[0], off: off + mosaic.shape[1]] = mosaic
    return out


__all__ = ["PatchConfig", "select_patches", "spectral_entropy", "split_patches", "toy_config"]
