"""NS-Net's null-space projection and its loss: the parts of the detector that do not depend on the backbone.

Paper: "NS-Net: Decoupling CLIP Semantic Information through NULL-Space for Generalizable AI-Generated Image
Detection", arXiv 2508.01248. No official code exists (``specs/ns-net.md`` section 4); the form here is the spec's
section 3.2 (the implementable projector) and 3.3 (the loss), each marked as inferred where the paper is silent.

The idea: a real photo and a generated image of the same caption share their CLIP *semantics*; what tells them
apart lives in the directions of the image feature that the caption's text feature does not explain. So the image
feature ``u`` is projected onto the orthogonal complement of the caption features ``V`` before classification.

Three modes (:data:`MODES`), reported with every result:

* ``"batch"`` (the spec's recommended form [inf]): ``P_B = I - V_B^T (V_B V_B^T + eps I)^{-1} V_B`` from the batch's
  ``B << d`` caption features, applied to every image of the batch;
* ``"per_image"`` [inf]: ``P_i = I - v_i v_i^T / |v_i|^2``, each image with its own caption only;
* ``"global_svd"`` (the figure, as a third-party replication read it): the right singular vectors of the stacked
  caption features whose singular values are (relatively) below ``tol``. With many generic captions that null
  space is empty; the replication then kept ``min_dim`` = 1 direction (the smallest singular value's), which is
  degenerate, and this function does the same only when asked (``min_dim``), warning about it.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

MODES = ("batch", "per_image", "global_svd")


def _check(u: torch.Tensor, v: torch.Tensor) -> None:
    if u.ndim != 2 or v.ndim != 2 or u.shape != v.shape:
        raise ValueError(f"need image and caption features of the same shape (N, d), got {tuple(u.shape)} and "
                         f"{tuple(v.shape)}")
    if not (torch.isfinite(u).all() and torch.isfinite(v).all()):
        raise ValueError("the features contain NaN or inf")


def batch_projector(v: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(d, d)`` projector onto the orthogonal complement of the rows of ``v`` (``(B, d)``), ridge ``eps`` [inf]."""
    v = v.float()
    gram = v @ v.T + eps * torch.eye(len(v), dtype=v.dtype, device=v.device)
    return torch.eye(v.shape[1], dtype=v.dtype, device=v.device) - v.T @ torch.linalg.solve(gram, v)


def global_svd_projector(v: torch.Tensor, tol: float = 1e-6, min_dim: int = 0) -> torch.Tensor:
    """``(d, d)`` projector onto the right singular vectors of ``v`` (``(n, d)``) whose singular value is at most
    ``tol`` times the largest (and those beyond the rank when ``n < d``); at least ``min_dim`` of them, the smallest
    singular values' (the replication's ``max(1, d - rank)``), with a warning when that forces a direction in."""
    v = v.float()
    _, s, wh = torch.linalg.svd(v, full_matrices=True)
    d = v.shape[1]
    sigma = torch.zeros(d, dtype=v.dtype, device=v.device)
    sigma[: len(s)] = s
    null = sigma <= tol * sigma.max().clamp_min(torch.finfo(v.dtype).tiny)
    if int(null.sum()) < min_dim:
        warnings.warn(f"the caption features span all {d} dimensions: their null space is empty; keeping the "
                      f"{min_dim} direction(s) of the smallest singular values (degenerate, spec ns-net.md 3.2)",
                      stacklevel=2)
        null = torch.zeros(d, dtype=torch.bool, device=v.device)
        null[torch.argsort(sigma)[:min_dim]] = True
    basis = wh[null].T                                       # (d, k)
    return basis @ basis.T


def project(u: torch.Tensor, v: torch.Tensor, mode: str = "batch", eps: float = 1e-4, tol: float = 1e-6,
            min_dim: int = 0) -> torch.Tensor:
    """The image features ``u`` (``(N, d)``) with their captions' features ``v`` (``(N, d)``, row ``i`` the caption
    of image ``i``) projected out, in ``mode`` (:data:`MODES`); differentiable in ``u``."""
    if mode not in MODES:
        raise ValueError(f"unknown projection mode {mode!r}; valid: {', '.join(MODES)}")
    _check(u, v)
    if mode == "per_image":
        unit = F.normalize(v.float(), dim=1, eps=1e-12)
        return u - (u * unit).sum(dim=1, keepdim=True) * unit
    proj = batch_projector(v, eps) if mode == "batch" else global_svd_projector(v, tol, min_dim)
    return u @ proj.to(u.dtype)


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SupCon (Khosla et al., NeurIPS 2020) over L2-normalised ``features`` (``(N, k)``) with integer ``labels``: for
    each anchor, minus the mean log-probability of its positives (same label, not itself) among all the others;
    anchors without a positive are left out (``0`` when none has one)."""
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"need (N, k) features and N labels, got {tuple(features.shape)} and {len(labels)} labels")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(features.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    has = counts > 0
    if not has.any():
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0)).sum(dim=1)[has] / counts[has]
    return per_anchor.mean()


def ns_net_loss(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, lam: float = 0.2,
                temperature: float = 0.07) -> torch.Tensor:
    """``(1 - lam) * SupCon(features) + lam * BCE(logits, labels)`` (spec 3.3; ``lam`` and ``temperature`` unknown
    in the paper: the replication's 0.2 and 0.07 by default [inf]); ``labels`` 1 for generated, 0 for real."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    bce = F.binary_cross_entropy_with_logits(logits.float().reshape(-1), labels.float().reshape(-1))
    return (1 - lam) * supervised_contrastive(features, labels.long().reshape(-1), temperature) + lam * bce


__all__ = ["MODES", "batch_projector", "global_svd_projector", "ns_net_loss", "project", "supervised_contrastive"]
