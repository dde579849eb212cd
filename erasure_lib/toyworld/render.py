"""Scene -> 32x32 RGB image, deterministic and fast (about 0.2 ms an image, numpy only).

Shapes are drawn as analytic masks on a 2x super-sampled grid and box-filtered down, so edges are
anti-aliased; a style is a whole-image transform applied after the subject is composed on its background.
Any randomness inside a style (mosaic tile jitter, starry strokes) comes from a generator seeded by the
caller, so ``render(scene, seed)`` is a pure function.
"""
from __future__ import annotations

import numpy as np

from .world import COLOURS, MARK, PERSON, SKIN, Scene

SIZE = 32
_SS = 2  # super-sampling factor
_N = SIZE * _SS
_DARK = np.array((0.08, 0.08, 0.10))
_ax = (np.arange(_N) + 0.5) / _N * 2.0 - 1.0
_Y, _X = np.meshgrid(_ax, _ax, indexing="ij")  # y grows downwards, both in [-1, 1]


# --- subject shapes: each returns a list of (mask, rgb) layers, painted in order ------------------------

def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _rect(x, y, x0, x1, y0, y1):
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _triangle(x, y, p0, p1, p2):
    def side(a, b):
        return (x - b[0]) * (a[1] - b[1]) - (a[0] - b[0]) * (y - b[1])
    d1, d2, d3 = side(p0, p1), side(p1, p2), side(p2, p0)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


def _segment(x, y, a, b, width):
    ax_, ay_ = a
    bx_, by_ = b
    vx, vy = bx_ - ax_, by_ - ay_
    t = np.clip(((x - ax_) * vx + (y - ay_) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return (x - ax_ - t * vx) ** 2 + (y - ay_ - t * vy) ** 2 <= width * width


def _tench(x, y, c):
    body = _ellipse(x, y, 0.12, 0.0, 0.58, 0.2)
    tail = _triangle(x, y, (-0.42, 0.0), (-0.8, -0.2), (-0.8, 0.2))
    eye = _ellipse(x, y, 0.5, -0.05, 0.05, 0.05)
    return [(body | tail, c), (eye, _DARK)]


def _goldfish(x, y, c):
    body = _ellipse(x, y, 0.15, 0.0, 0.38, 0.32)
    tail = (_triangle(x, y, (-0.2, 0.0), (-0.75, -0.45), (-0.55, 0.0))
            | _triangle(x, y, (-0.2, 0.0), (-0.75, 0.45), (-0.55, 0.0)))
    fin = _triangle(x, y, (0.0, -0.25), (0.3, -0.28), (0.05, -0.5))
    eye = _ellipse(x, y, 0.38, -0.08, 0.06, 0.06)
    return [(body | tail | fin, c), (eye, _DARK)]


def _church(x, y, c):
    base = _rect(x, y, -0.38, 0.38, -0.05, 0.7)
    roof = _triangle(x, y, (0.0, -0.45), (-0.5, -0.05), (0.5, -0.05))
    cross = _rect(x, y, -0.04, 0.04, -0.85, -0.42) | _rect(x, y, -0.16, 0.16, -0.74, -0.66)
    door = _rect(x, y, -0.1, 0.1, 0.35, 0.7) | _ellipse(x, y, 0.0, 0.35, 0.1, 0.1)
    return [(base | roof | cross, c), (door, _DARK)]


def _house(x, y, c):
    base = _rect(x, y, -0.55, 0.55, 0.0, 0.65)
    roof = _triangle(x, y, (0.0, -0.5), (-0.7, 0.0), (0.7, 0.0))
    chimney = _rect(x, y, 0.3, 0.45, -0.45, -0.1)
    windows = _rect(x, y, -0.42, -0.18, 0.12, 0.36) | _rect(x, y, 0.18, 0.42, 0.12, 0.36)
    return [(base | roof | chimney, c), (windows, _DARK)]


def _parachute(x, y, c):
    canopy = _ellipse(x, y, 0.0, -0.25, 0.7, 0.5) & (y <= -0.25)
    lines = (_segment(x, y, (-0.68, -0.25), (-0.08, 0.5), 0.035)
             | _segment(x, y, (0.68, -0.25), (0.08, 0.5), 0.035)
             | _segment(x, y, (0.0, -0.25), (0.0, 0.5), 0.035))
    load = _rect(x, y, -0.14, 0.14, 0.48, 0.74)
    return [(canopy | load, c), (lines, _DARK)]


def _umbrella(x, y, c):
    canopy = _ellipse(x, y, 0.0, -0.15, 0.75, 0.55) & (y <= -0.15)
    scallop = (_ellipse(x, y, -0.5, -0.15, 0.25, 0.12) | _ellipse(x, y, 0.0, -0.15, 0.25, 0.12)
               | _ellipse(x, y, 0.5, -0.15, 0.25, 0.12)) & (y > -0.15)
    shaft = _rect(x, y, -0.04, 0.04, -0.15, 0.6)
    hook = (_ellipse(x, y, -0.14, 0.6, 0.18, 0.16) & ~_ellipse(x, y, -0.14, 0.6, 0.1, 0.08)) & (y >= 0.6)
    return [(canopy & ~scallop, c), (shaft | hook, _DARK)]


def _gun(x, y, c):
    barrel = _rect(x, y, -0.55, 0.7, -0.35, -0.1)
    grip = _triangle(x, y, (-0.55, -0.1), (-0.2, -0.1), (-0.42, 0.55)) | _triangle(
        x, y, (-0.55, -0.1), (-0.42, 0.55), (-0.7, 0.5))
    guard = _ellipse(x, y, -0.05, 0.02, 0.16, 0.14) & ~_ellipse(x, y, -0.05, 0.02, 0.09, 0.08) & (y > -0.1)
    muzzle = _rect(x, y, 0.62, 0.7, -0.3, -0.15)
    return [(barrel | grip | guard, c), (muzzle, _DARK)]


def _camera(x, y, c):
    body = _rect(x, y, -0.6, 0.6, -0.25, 0.4)
    top = _rect(x, y, -0.45, -0.12, -0.42, -0.25)
    lens = _ellipse(x, y, 0.05, 0.07, 0.26, 0.26)
    glass = _ellipse(x, y, 0.05, 0.07, 0.14, 0.14)
    return [(body | top, c), (lens & ~glass, _DARK)]


def _person(x, y, c, nude):
    head = _ellipse(x, y, 0.0, -0.62, 0.16, 0.16)
    torso = _rect(x, y, -0.24, 0.24, -0.42, 0.22)
    arms = _rect(x, y, -0.38, -0.28, -0.4, 0.15) | _rect(x, y, 0.28, 0.38, -0.4, 0.15)
    legs = _rect(x, y, -0.22, -0.05, 0.22, 0.85) | _rect(x, y, 0.05, 0.22, 0.22, 0.85)
    if nude:
        marks = _ellipse(x, y, -0.11, -0.22, 0.065, 0.065) | _ellipse(x, y, 0.11, -0.22, 0.065, 0.065)
        return [(head | torso | arms | legs, SKIN), (marks, MARK)]
    return [(head, SKIN), (torso | arms | legs, c)]


_SHAPES = {
    "tench": _tench, "goldfish": _goldfish, "church": _church, "house": _house,
    "parachute": _parachute, "umbrella": _umbrella, "gun": _gun, "camera": _camera,
}


def _subject_layers(scene: Scene):
    x = (_X - scene.dx) / scene.scale
    y = (_Y - scene.dy) / scene.scale
    colour = np.array(COLOURS[scene.colour])
    if scene.subject == PERSON:
        return _person(x, y, colour, scene.nude)
    return _SHAPES[scene.subject](x, y, colour)


# --- backgrounds -------------------------------------------------------------------------------------------

def _background(name: str) -> np.ndarray:
    img = np.empty((_N, _N, 3))
    if name == "black":
        img[:] = (0.05, 0.05, 0.06)
    elif name == "grey":
        img[:] = (0.5, 0.5, 0.5)
    elif name == "striped":
        band = (np.floor((_X + _Y) * 4.0) % 2 == 0)[..., None]
        img[:] = np.where(band, (0.30, 0.32, 0.45), (0.62, 0.64, 0.75))
    elif name == "beach":
        img[:] = np.where((_Y < 0.25)[..., None], (0.45, 0.72, 0.95), (0.82, 0.78, 0.38))
    else:  # pragma: no cover - Scene validates
        raise ValueError(name)
    return img


# --- styles --------------------------------------------------------------------------------------------------

def _edges(mask: np.ndarray, width: int = 1) -> np.ndarray:
    m = mask
    grown = m.copy()
    for _ in range(width):
        g = grown.copy()
        g[1:] |= grown[:-1]
        g[:-1] |= grown[1:]
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        grown = g
    return grown & ~m


def _compose(layers, base):
    img = base.copy()
    for mask, rgb in layers:
        img[mask] = rgb
    return img


def _style_sketch(layers, base, rng):
    img = np.empty_like(base)
    img[:] = (0.95, 0.93, 0.86)  # paper
    union = np.zeros(base.shape[:2], bool)
    for mask, _ in layers:
        union |= mask
    # hatching inside the subject, in the subject's own ink, so its colour survives the style
    hatch = (np.floor((_X - _Y) * 10.0) % 3 == 0) & union
    img[hatch] = 0.5 * img[hatch] + 0.35 * np.asarray(layers[0][1])
    for mask, rgb in layers[1:]:
        img[mask] = 0.75 * np.asarray(rgb) + 0.2
    for mask, rgb in layers:
        img[_edges(mask, 1) | _edges(~mask, 1)] = 0.55 * np.asarray(rgb)
    return img


def _style_mosaic(layers, base, rng):
    img = _compose(layers, base)
    tiles = img.reshape(_N // 4, 4, _N // 4, 4, 3).mean(axis=(1, 3))
    tiles = np.clip(tiles * rng.uniform(0.8, 1.2, size=tiles.shape[:2] + (1,)), 0.0, 1.0)
    img = np.repeat(np.repeat(tiles, 4, axis=0), 4, axis=1)
    grout = ((np.arange(_N) % 4) == 0)
    img[grout, :] = 0.85 * img[grout, :] + 0.15 * 0.9
    img[:, grout] = 0.85 * img[:, grout] + 0.15 * 0.9
    return img


def _style_neon(layers, base, rng):
    img = np.empty_like(base)
    img[:] = (0.02, 0.0, 0.06)
    for mask, rgb in layers:
        glow = np.clip(np.asarray(rgb) * 1.2 + 0.1, 0, 1)
        img[_edges(mask, 3)] = 0.35 * glow
    for mask, rgb in layers:
        glow = np.clip(np.asarray(rgb) * 1.2 + 0.1, 0, 1)
        img[_edges(mask, 1)] = glow
        img[mask & ~_edges(~mask, 2)] = 0.25 * glow
    return img


def _style_starry(layers, base, rng):
    phase = rng.uniform(0, 2 * np.pi)
    swirl = np.sin(6.0 * _X + 3.0 * np.sin(3.0 * _Y + phase)) + np.sin(5.0 * _Y + 2.0 * np.cos(4.0 * _X))
    img = np.empty_like(base)
    img[:] = (0.06, 0.12, 0.42)
    img[swirl > 1.0] = (0.25, 0.45, 0.85)
    img[swirl > 1.5] = (0.95, 0.85, 0.3)
    # the subject is drawn with a wavy displacement and a dark-blue outline, like brush strokes
    shift = np.round(2.0 * np.sin(_Y * 9.0 + phase)).astype(int)
    cols = np.clip(np.arange(_N)[None, :] - shift[:, :1], 0, _N - 1)
    rows = np.arange(_N)[:, None]
    for mask, rgb in layers:
        warped = mask[rows, cols]
        img[_edges(warped, 1)] = (0.02, 0.04, 0.2)
        img[warped] = rgb
    return img


_STYLES = {"sketch": _style_sketch, "mosaic": _style_mosaic, "neon": _style_neon, "starry": _style_starry}


def render(scene: Scene, seed: int = 0) -> np.ndarray:
    """Render one scene as a float32 ``(32, 32, 3)`` image in [0, 1]; the same (scene, seed), the same image."""
    layers = _subject_layers(scene)
    base = _background(scene.background)
    if scene.style == "none":
        img = _compose(layers, base)
    else:
        img = _STYLES[scene.style](layers, base, np.random.default_rng(seed))
    img = img.reshape(SIZE, _SS, SIZE, _SS, 3).mean(axis=(1, 3))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_batch(scenes, seeds=None) -> np.ndarray:
    """Render many scenes into ``(N, 32, 32, 3)`` float32; ``seeds`` defaults to ``range(N)``."""
    scenes = list(scenes)
    seeds = range(len(scenes)) if seeds is None else seeds
    return np.stack([render(s, int(k)) for s, k in zip(scenes, seeds, strict=True)])
