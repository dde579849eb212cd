"""The toy world's captioner: the toy analog of the BLIP captions NS-Net projects out (``specs/ns-net.md`` 3.1-3.2).

NS-Net captions every image (real or generated) and removes the caption's CLIP text direction from the image's
feature. On SD-sized images the paper uses BLIP; on the toy world the caption is written from what the zoo's concept
classifier sees (its object, colour, style and sensitive heads, :func:`erasure_lib.metrics.concept.
predict_concepts`) through the world's own grammar, deterministically (BLIP's greedy decoding is deterministic too):

* an object: ``"a {colour} {object}"``; a clothed person: ``"a person wearing {colour}"``; a nude person:
  ``"a nude person"`` (the grammar's explicit keyword);
* a style other than none: ``", in {style} style"`` appended (the grammar's first style form).

The classifier has no background head, so the caption names no background (a BLIP caption names what it sees; the
toy's backgrounds are patterns the classifier was not trained to name) [inf].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def caption_from_labels(subject: str, colour: str, style: str, nude: bool) -> str:
    """The caption of one image from its predicted labels (see the module docstring)."""
    from ..toyworld.world import NO_STYLE, PERSON, SENSITIVE_KEYWORD
    if subject == PERSON:
        text = f"a {SENSITIVE_KEYWORD} person" if nude else f"a person wearing {colour}"
    else:
        article = "an" if colour[:1] in "aeiou" else "a"
        text = f"{article} {colour} {subject}"
    if style != NO_STYLE:
        text += f", in {style} style"
    return text


def toy_captions(images: np.ndarray, classifier=None) -> list[str]:
    """One caption per toy image (uint8 ``(N, 32, 32, 3)``), from the zoo's classifier (or ``classifier``)."""
    from ..metrics.concept import predict_concepts
    pred = predict_concepts(images, classifier=classifier)
    return [caption_from_labels(str(o), str(c), str(s), bool(n))
            for o, c, s, n in zip(pred["object"], pred["colour"], pred["style"], pred["nude"])]


def caption_features(pipe, captions: Sequence[str], chunk: int = 256):
    """``(N, d)`` pooled text features of ``captions`` from ``pipe``'s (frozen) CLIP text tower, float32 on the CPU:
    the rows NS-Net's projector removes (:func:`erasure_lib.detect.null_space.project`)."""
    import torch
    captions = list(captions)
    out = []
    with torch.no_grad():
        for i in range(0, len(captions), chunk):
            ids = pipe.tokenizer(captions[i:i + chunk], padding="max_length", truncation=True,
                                 max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
            out.append(pipe.text_encoder(ids.to(pipe.text_encoder.device))[1].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, pipe.text_encoder.config.hidden_size)


__all__ = ["caption_features", "caption_from_labels", "toy_captions"]
