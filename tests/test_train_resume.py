"""Training is seeded and resumable: an interrupted run resumes to the same weights."""
import torch

from erasure_lib.toyworld.train import train_loop


def _run(tmp_path, crash_at=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    cfg = dict(steps=20, lr=1e-2, warmup=2)
    target = torch.randn(4, 1)

    def step(k, gen):
        if crash_at is not None and k == crash_at:
            raise KeyboardInterrupt
        x = torch.randn(8, 4, generator=gen)
        return {"loss": ((model(x) - x @ target) ** 2).mean()}

    train_loop("toy", tmp_path, {"m": model}, model.parameters(), cfg, step, seed=3, ckpt_every=5)
    return model


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    straight = _run(tmp_path / "a")
    try:
        _run(tmp_path / "b", crash_at=13)
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "b" / "toy" / "ckpt.pt").exists()
    resumed = _run(tmp_path / "b")
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    log = (tmp_path / "b" / "toy" / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,seconds"


def test_nan_loss_stops_training(tmp_path):
    model = torch.nn.Linear(2, 1)

    def step(k, gen):
        return {"loss": model(torch.full((1, 2), float("nan"))).sum()}

    import pytest
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_loop("nan", tmp_path, {"m": model}, model.parameters(), dict(steps=3, lr=1e-3, warmup=1), step, 0)
