"""Figures shared by every notebook: image grids with row and column labels, censored where they must be; the
interference heat map (:func:`interference_heatmap`).

Every image grid carries a *censoring stamp*: a PNG text chunk (key :data:`STAMP_KEY`) that says which profile drew
it, whether its images are of a sensitive concept, whether the censor ran and how many cells it blurred. In a
notebook the stamp is written into the figure's PNG output (the notebook's inline PNG formatter is wrapped on the
first grid), so it survives into the rendered book, where ``make check-book`` (``scripts/check_book.py``) reads it
and fails on a sensitive grid of a non-toy profile that was not censored.
"""
from __future__ import annotations

import base64
import json
import struct
import zlib

import matplotlib.pyplot as plt
import numpy as np

STAMP_KEY = "erasure-book"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
    fig._erasure_book_stamp = {"kind": "image_grid", "profile": profile, "sensitive": bool(sensitive),
                               "censored": bool(censor), "flagged": int(flags.sum()), "cells": int(len(images))}
    _stamp_notebook_figures()
    return fig


# --- the censoring stamp ------------------------------------------------------------------------------------

def stamp_png(png: bytes, stamp: dict) -> bytes:
    """``png`` with a tEXt chunk ``STAMP_KEY = json(stamp)`` inserted after its header; the pixels are untouched."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    body = STAMP_KEY.encode("latin-1") + b"\0" + json.dumps(stamp, sort_keys=True).encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def read_stamp(png: bytes) -> dict | None:
    """The censoring stamp of a PNG file's bytes (:func:`stamp_png`), ``None`` when it has none."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos = 8
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"tEXt":
            key, _, text = png[pos + 8:pos + 8 + length].partition(b"\0")
            if key == STAMP_KEY.encode("latin-1"):
                return json.loads(text.decode("latin-1"))
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def _stamp_notebook_figures() -> None:
    """In IPython, wrap the PNG formatter of matplotlib figures (once) so that a stamped figure's PNG output carries
    its stamp; outside IPython, nothing to do."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebooks' stack
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure
    formatter = shell.display_formatter.formatters["image/png"]
    try:
        original = formatter.lookup_by_type(Figure)
    except KeyError:
        return
    if getattr(original, "_erasure_book_stamps", False):
        return

    def stamped(fig, *args, **kwargs):
        out = original(fig, *args, **kwargs)
        stamp = getattr(fig, "_erasure_book_stamp", None)
        if out is None or stamp is None:
            return out
        if isinstance(out, str):
            return base64.b64encode(stamp_png(base64.b64decode(out), stamp)).decode("ascii")
        return stamp_png(out, stamp)

    stamped._erasure_book_stamps = True
    formatter.for_type(Figure, stamped)


def interference_heatmap(table, title: str | None = None, annotate: bool = True, cell: float = 0.48):
    """The interference matrix of an :func:`erasure_lib.evaluation.interference_table` (one or more models' rows):
    one row per (method, erased concept), one column per probed concept, colour = rate minus the unedited model's
    rate (blue: lost, red: gained), the value written in each cell. The erased concept's own cell is framed in
    black, its look-alike's in orange (dashed), and look-alike columns of any row get an orange label. Returns
    the figure."""
    import pandas as pd
    from matplotlib.patches import Rectangle
    table = pd.DataFrame(table)
    rows = list(dict.fromkeys(zip(table.method, table.erased)))
    cols = list(dict.fromkeys(table.probed))
    delta = np.full((len(rows), len(cols)), np.nan)
    kind = np.zeros((len(rows), len(cols)), int)  # 1 own, 2 look-alike
    for r in table.itertuples(index=False):
        i, j = rows.index((r.method, r.erased)), cols.index(r.probed)
        delta[i, j] = r.delta
        kind[i, j] = 1 if r.own else 2 if r.lookalike else 0
    fig, ax = plt.subplots(figsize=(cell * len(cols) + 2.6, cell * len(rows) + 1.6))
    im = ax.imshow(delta, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{m}: {e}" if e else m for m, e in rows], fontsize=8)
    for lab, j in zip(ax.get_xticklabels(), range(len(cols))):
        if (kind[:, j] == 2).any():
            lab.set_color("tab:orange")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if annotate and np.isfinite(delta[i, j]):
                ax.text(j, i, f"{delta[i, j]:+.2f}".replace("+0.00", "0").replace("-0.00", "0"), ha="center",
                        va="center", fontsize=6, color="white" if abs(delta[i, j]) > 0.6 else "black")
            if kind[i, j]:
                ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, lw=1.6,
                                       ec="black" if kind[i, j] == 1 else "tab:orange",
                                       ls="-" if kind[i, j] == 1 else "--"))
    ax.set_xlabel("probed concept (its own held-out prompts)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="rate - unedited rate")
    ax.set_title(title or "Interference: each edit's effect on every concept (framed: erased; dashed: look-alike)",
                 fontsize=9)
    fig.tight_layout()
    return fig
