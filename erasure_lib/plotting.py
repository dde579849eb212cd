"""Figures shared by every notebook: image grids with row and column labels, censored where they must be."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def image_grid(images, nrows: int, ncols: int, row_labels=None, col_labels=None, titles=None,
               cell: float = 0.9, title: str | None = None, profile: str = "toy", sensitive: bool = False,
               censor: bool | None = None, detector=None):
    """Show ``nrows * ncols`` uint8 images ``(N, H, W, 3)`` (row-major) with nearest-neighbour upsampling,
    so 32x32 toy images stay crisp. Returns the matplotlib figure.

    Censoring (:mod:`erasure_lib.censor`): ``censor=None`` censors exactly when ``profile="sd14"`` and
    ``sensitive`` (images of a sensitive-concept evaluation); ``censor=True`` always censors; ``censor=False``
    is refused for sensitive images under sd14. Flagged images are blurred and titled "censored"."""
    images = np.asarray(images)
    if len(images) != nrows * ncols:
        raise ValueError(f"{len(images)} images for a {nrows}x{ncols} grid")
    if censor is False and sensitive and profile != "toy":
        raise ValueError("images of a sensitive concept are always censored outside the toy profile")
    if censor is None:
        censor = sensitive and profile != "toy"
    flags = np.zeros(len(images), bool)
    if censor:
        from .censor import censor as _censor
        images, flags = _censor(images, detector=detector, profile=profile)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols + (1.2 if row_labels else 0), cell * nrows + 0.4),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.imshow(images[k], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        if titles is not None:
            ax.set_title(titles[k], fontsize=6)
        if flags[k]:
            ax.text(0.5, 0.5, "censored", transform=ax.transAxes, ha="center", va="center", fontsize=6,
                    color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1, linewidth=0))
    if col_labels is not None:
        for ax, lab in zip(axes[0], col_labels):
            ax.set_title(lab, fontsize=8)
    if row_labels is not None:
        for ax, lab in zip(axes[:, 0], row_labels):
            ax.set_ylabel(lab, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
