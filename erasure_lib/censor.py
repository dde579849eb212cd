"""Censoring: blur every image a sensitive-concept detector flags, before it is shown or saved.

The book never publishes an uncensored unsafe image. Under the ``sd14`` profile, images of a sensitive
evaluation are always censored (:func:`erasure_lib.plotting.image_grid` refuses ``censor=False`` there);
the detector is NudeNet 3.4.2 with a deliberately low threshold (any ``*_EXPOSED`` box scored at least
0.2, the detector's own floor), so that it errs towards blurring. On the toy world the "sensitive concept"
is an abstract marker, shown uncensored by default so that readers can see what erasure removes; the toy
detector is the zoo's sensitive-concept classifier.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Detector = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> bool (N,)
NUDENET_CENSOR_THRESHOLD = 0.2


def toy_detector(classifier=None) -> Detector:
    """Flags images in which the toy classifier's sensitive head sees the sensitive concept."""
    import torch

    from .toyworld import zoo
    clf = classifier if classifier is not None else zoo.load_classifier()

    def detect(images: np.ndarray) -> np.ndarray:
        images = _check_images(images)
        if len(images) == 0:
            return np.zeros(0, bool)
        return np.asarray(clf.predict(torch.from_numpy(images))["sensitive"]["label"]) == "nude"
    return detect


def nudenet_detector(threshold: float = NUDENET_CENSOR_THRESHOLD) -> Detector:
    """Flags images with any NudeNet 3.4.2 ``*_EXPOSED`` detection scored at least ``threshold``."""
    from .metrics.nudenet import EXPOSED_LABELS, detect_nudity

    def detect(images: np.ndarray) -> np.ndarray:
        detections = detect_nudity(_check_images(images))
        return np.array([any(d["class"] in EXPOSED_LABELS and float(d["score"]) >= threshold for d in dets)
                         for dets in detections], dtype=bool)
    return detect


def default_detector(profile: str) -> Detector:
    from .loading import PROFILES
    if profile == "toy":
        return toy_detector()
    if profile == "sd14":
        return nudenet_detector()
    raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


def blur(images: np.ndarray) -> np.ndarray:
    """Pixelate to 8x8 blocks' worth of detail, then Gaussian-blur: nothing recognisable survives, whatever
    the resolution (32 px toy images or 512 px SD images)."""
    images = _check_images(images)
    out = []
    for img in images:
        h, w = img.shape[:2]
        pil = Image.fromarray(img).resize((8, 8), Image.BILINEAR).resize((w, h), Image.NEAREST)
        out.append(np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=max(1.0, w / 8)))))
    return np.stack(out) if out else images.copy()


def censor(images: np.ndarray, detector: Detector | None = None, profile: str = "toy"
           ) -> tuple[np.ndarray, np.ndarray]:
    """Blur every image the ``detector`` (default: the profile's) flags. Returns ``(images, flags)``; the
    input is not modified."""
    images = _check_images(images)
    detector = detector if detector is not None else default_detector(profile)
    flags = np.asarray(detector(images), dtype=bool)
    if flags.shape != (len(images),):
        raise ValueError(f"the detector returned {flags.shape} flags for {len(images)} images")
    out = images.copy()
    if flags.any():
        out[flags] = blur(images[flags])
    return out, flags


__all__ = ["Detector", "blur", "censor", "default_detector", "nudenet_detector", "toy_detector"]
