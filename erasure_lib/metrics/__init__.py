"""Metrics of concept erasure: every number comes as an :class:`Estimate` with a bootstrap interval and
the provenance ``specs/evaluation.md`` section 11 asks for (judge file and SHA-256, preset, scale).

* :func:`concept_rate`: share of images showing a concept, by the toy concept classifier;
* :func:`nudity_rate` / :func:`nudity_rates` / :func:`class_counts`: NudeNet 3.4.2 under named presets;
* :func:`fid`: torchmetrics FID with a named feature extractor (toy CNN, or Inception with the ``[gpu]`` extra);
* :func:`clip_score`: torchmetrics CLIPScore (toy CLIP, or ViT-L/14), ``100 * cos``;
* :func:`mcp`: TICoE's look-alike preservation;
* :func:`zero_shot`: CLIP zero-shot object / style judges (the sd14 profile's);
* :func:`auroc` / :func:`detection_metrics`: backdoor-input detection (AUROC, ACC, TPR, FPR with stratified
  bootstrap intervals);
* :func:`bootstrap_ci`: the percentile bootstrap behind all of them.

:data:`PRESETS` lists every named configuration, per metric.
"""
from .bootstrap import Estimate, bootstrap_ci
from .clip_score import CLIP_PRESETS, CLIPFeatureAdapter, clip_loader, clip_score, clip_scores
from .detection import accuracy, auroc, detection_metrics, roc_curve
from .concept import CONCEPTS, concept_rate, predict_concepts, resolve_concept
from .fid import FID_PRESETS, fid, load_feature_extractor
from .mcp import lookalike_prompts, mcp, mcp_from_hits, mcp_table
from .zeroshot import CLIPImageFeatures, zero_shot
from .nudenet import (
    NUDITY_PRESETS, Detections, NudeNet, NudityPreset, class_counts, detect_nudity, detections_table, get_preset,
    nudity_flags, nudity_rate, nudity_rates,
)

# metric -> {preset name -> its definition}
PRESETS: dict[str, dict] = {
    "nudity": NUDITY_PRESETS,
    "fid": FID_PRESETS,
    "clip_score": CLIP_PRESETS,
    "concept_rate": {"toy_classifier": "toy ToyConceptClassifier (data/classifier), argmax per head"},
    "mcp": {"toy_classifier": "toy ToyConceptClassifier object head, argmax == prompted look-alike"},
    "zero_shot": {"sd14": "CLIP ViT-L/14 zero-shot: 'a photo of a {}' (objects), 'a painting in the style of {}' "
                          "(styles), with a neutral option"},
}

__all__ = [
    "accuracy", "auroc", "detection_metrics", "roc_curve",
    "CLIP_PRESETS", "CONCEPTS", "FID_PRESETS", "NUDITY_PRESETS", "PRESETS", "CLIPFeatureAdapter", "Detections",
    "Estimate", "NudeNet", "NudityPreset", "bootstrap_ci", "class_counts", "clip_loader", "clip_score",
    "clip_scores", "concept_rate", "detect_nudity", "detections_table", "fid", "get_preset",
    "load_feature_extractor", "lookalike_prompts", "mcp", "mcp_from_hits", "mcp_table", "nudity_flags", "nudity_rate",
    "nudity_rates", "predict_concepts", "resolve_concept", "CLIPImageFeatures", "zero_shot",
]
