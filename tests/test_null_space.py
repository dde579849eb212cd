"""NS-Net's null-space projections and loss (erasure_lib.detect.null_space) against values worked by hand."""
import math

import pytest
import torch

from erasure_lib.detect.null_space import (batch_projector, global_svd_projector, ns_net_loss, project,
                                           supervised_contrastive)


def test_batch_projection_removes_the_captions_span():
    v = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])
    u = torch.tensor([[1.0, 2, 3, 4], [5.0, 6, 7, 8]])
    out = project(u, v, "batch", eps=1e-9)
    assert torch.allclose(out, torch.tensor([[0.0, 0, 3, 4], [0.0, 0, 7, 8]]), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 16, generator=g)
    p = batch_projector(v, eps=1e-8)
    assert torch.allclose(p @ p, p, atol=1e-4) and torch.allclose(p, p.T, atol=1e-5)   # an orthogonal projector
    assert torch.allclose(v @ p, torch.zeros(5, 16), atol=1e-4)                         # of rank 16 - 5
    assert abs(torch.trace(p).item() - 11) < 1e-3


def test_per_image_projection_removes_only_its_own_caption():
    out = project(torch.tensor([[1.0, 1.0], [3.0, 4.0]]), torch.tensor([[2.0, 0.0], [0.0, 5.0]]), "per_image")
    assert torch.allclose(out, torch.tensor([[0.0, 1.0], [3.0, 0.0]]))


def test_global_svd_projector_and_its_degenerate_case():
    v = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert torch.allclose(project(torch.tensor([[1.0, 2, 3], [4.0, 5, 6]]), v, "global_svd"),
                          torch.tensor([[0.0, 0, 3], [0.0, 0, 6]]), atol=1e-6)
    full = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    assert torch.allclose(global_svd_projector(full), torch.zeros(3, 3))          # full rank: an empty null space
    with pytest.warns(UserWarning, match="empty"):
        forced = global_svd_projector(full, min_dim=1)                            # the replication's 1-D space
    assert torch.allclose(forced, torch.diag(torch.tensor([0.0, 0.0, 1.0])), atol=1e-6)


def test_projection_refuses_bad_input():
    with pytest.raises(ValueError, match="mode"):
        project(torch.ones(2, 3), torch.ones(2, 3), "svd")
    with pytest.raises(ValueError, match="same shape"):
        project(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        project(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2))


def test_supervised_contrastive_known_values():
    # two identical features of one class: the positive is the only other sample, log-probability 0
    assert supervised_contrastive(torch.ones(2, 3), torch.tensor([1, 1])).item() == pytest.approx(0.0, abs=1e-6)
    # anchors 1, 2 (class 0, both e1) against sample 3 (class 1, e2) at T = 1: -log(e / (e + 1)) each;
    # anchor 3 has no positive and is left out
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    value = supervised_contrastive(z, torch.tensor([0, 0, 1]), temperature=1.0).item()
    assert value == pytest.approx(math.log(1 + math.e) - 1, abs=1e-6)
    assert ns_net_loss(z, torch.zeros(3), torch.tensor([1, 1, 0]), lam=1.0).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="lam"):
        ns_net_loss(z, torch.zeros(3), torch.tensor([1, 1, 0]), lam=1.5)
