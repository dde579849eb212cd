"""Figures shared by every notebook: image grids with row and column labels."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def image_grid(images, nrows: int, ncols: int, row_labels=None, col_labels=None, titles=None,
               cell: float = 0.9, title: str | None = None):
    """Show ``nrows * ncols`` uint8 images ``(N, H, W, 3)`` (row-major) with nearest-neighbour upsampling,
    so 32x32 toy images stay crisp. Returns the matplotlib figure."""
    images = np.asarray(images)
    if len(images) != nrows * ncols:
        raise ValueError(f"{len(images)} images for a {nrows}x{ncols} grid")
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
