"""Batched sampling: determinism per (prompt, seed) whatever the batch, and the partial-trajectory
primitives agree with the pipeline's own sampling."""
import numpy as np
import pytest
import torch

from erasure_lib import load_pipeline
from erasure_lib.sampling import decode, denoise, generate, initial_latents, latents_at, set_steps

PROMPTS = ["a red church on a beach", "a tench", "a nude person", "a camera, neon style",
           "a gun", "a house, sketch style", "a goldfish", "an umbrella", "a parachute", "a person"]


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def reference(pipe):
    return generate(pipe, PROMPTS, range(len(PROMPTS)), steps=6, batch_size=16, progress=False)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_generate_is_bit_identical_for_every_batch_size(pipe, reference, batch_size):
    images = generate(pipe, PROMPTS, range(len(PROMPTS)), steps=6, batch_size=batch_size, progress=False)
    assert images.dtype == np.uint8 and images.shape == (len(PROMPTS), 32, 32, 3)
    np.testing.assert_array_equal(images, reference)


def test_generate_does_not_depend_on_the_neighbours(pipe, reference):
    perm = np.random.default_rng(0).permutation(len(PROMPTS))
    images = generate(pipe, [PROMPTS[i] for i in perm], perm, steps=6, progress=False)
    np.testing.assert_array_equal(images[np.argsort(perm)], reference)


def test_seed_and_prompt_matter(pipe, reference):
    other = generate(pipe, PROMPTS[:2], [100, 101], steps=6, progress=False)
    assert np.abs(other.astype(int) - reference[:2]).mean() > 5


def test_bad_input_raises(pipe):
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(pipe, ["a tench"], [0, 1])
    with pytest.raises(ValueError, match="start <= stop"):
        denoise(pipe, ["a tench"], initial_latents(pipe, [0]), steps=5, start=3, stop=2)
    with pytest.raises(ValueError, match="index"):
        latents_at(pipe, ["a tench"], [0], index=5, steps=5)


def test_full_denoise_then_decode_reproduces_generate(pipe, reference):
    z = denoise(pipe, PROMPTS, initial_latents(pipe, range(len(PROMPTS))), steps=6, guidance=5.0)
    images = decode(pipe, z)
    assert np.abs(images.astype(int) - reference).max() <= 1


def test_partial_trajectories_compose(pipe):
    z0 = initial_latents(pipe, [3, 4])
    head, t = latents_at(pipe, ["a tench", "a gun"], [3, 4], index=4, steps=10, guidance=3.0)
    assert t == int(set_steps(pipe, 10)[4])
    tail = denoise(pipe, ["a tench", "a gun"], head, steps=10, guidance=3.0, start=4)
    full = denoise(pipe, ["a tench", "a gun"], z0, steps=10, guidance=3.0)
    torch.testing.assert_close(tail, full)


def test_trajectory_records_every_step(pipe):
    traj = denoise(pipe, ["a tench", "a gun", "a house"], initial_latents(pipe, [0, 0, 2]), steps=5,
                   guidance=4.0, record=True)
    assert traj.latents.shape == (3, 6, 4, 8, 8) and traj.noise_cond.shape == (3, 5, 4, 8, 8)
    assert traj.noise_uncond.shape == (3, 5, 4, 8, 8) and len(traj.timesteps) == 5
    # the unconditional prediction does not depend on the prompt; the conditional one does
    torch.testing.assert_close(traj.noise_uncond[0, 0], traj.noise_uncond[1, 0])
    assert (traj.noise_cond[0, 0] - traj.noise_cond[1, 0]).abs().mean() > 1e-3
    # replaying the recorded guided predictions through DDIM gives the recorded latents
    sched = pipe.scheduler
    set_steps(pipe, 5)
    z = traj.latents[:, 0]
    for k, t in enumerate(traj.timesteps):
        z = sched.step(traj.guided(4.0)[:, k], t, z).prev_sample
        torch.testing.assert_close(z, traj.latents[:, k + 1])
    no_cfg = denoise(pipe, ["a tench"], initial_latents(pipe, [0]), steps=5, guidance=1.0, record=True)
    assert no_cfg.noise_uncond is None


def test_row_block_pads_only_on_the_cpu(monkeypatch):
    from erasure_lib.sampling import ROW_BLOCK_ENV, row_block
    monkeypatch.delenv(ROW_BLOCK_ENV, raising=False)
    assert row_block("cpu") == 8
    assert row_block(torch.device("cuda", 0)) == 1  # a device object; no GPU needed to ask
    monkeypatch.setenv(ROW_BLOCK_ENV, "4")
    assert row_block("cuda") == 4 and row_block("cpu") == 4
    monkeypatch.setenv(ROW_BLOCK_ENV, "0")
    with pytest.raises(ValueError, match=ROW_BLOCK_ENV):
        row_block("cpu")


def test_unpadded_generation_gives_the_same_images_up_to_rounding(pipe, reference, monkeypatch):
    """Block 1 (the GPU default) changes only the BLAS rounding on the CPU, not the images."""
    from erasure_lib.sampling import ROW_BLOCK_ENV
    monkeypatch.setenv(ROW_BLOCK_ENV, "1")
    images = generate(pipe, PROMPTS, range(len(PROMPTS)), steps=6, batch_size=3, progress=False)
    assert images.shape == reference.shape
    assert np.abs(images.astype(int) - reference.astype(int)).max() <= 2


def test_sample_workers_follow_the_cores(monkeypatch):
    from erasure_lib import sampling
    monkeypatch.delenv(sampling.SAMPLE_WORKERS_ENV, raising=False)
    monkeypatch.setattr(sampling.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert sampling.sample_workers("cpu") == 2 and sampling.sample_workers() == 2
    assert sampling.sample_workers("cuda") == 1            # one accelerator: one stream of batches
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert sampling.sample_workers("cpu") == 2             # the threads run one torch thread each (one_torch_thread)
    monkeypatch.setattr(sampling.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert sampling.sample_workers("cpu") == sampling.MAX_SAMPLE_WORKERS
    monkeypatch.setenv(sampling.SAMPLE_WORKERS_ENV, "3")
    assert sampling.sample_workers("cuda") == 3
    monkeypatch.setenv(sampling.SAMPLE_WORKERS_ENV, "none")
    with pytest.raises(ValueError, match="SAMPLE_WORKERS"):
        sampling.sample_workers()


def test_batches_in_threads_give_the_same_bits_as_one_thread(pipe, monkeypatch):
    """generate and denoise with 3 batches in 3 threads equal the same calls on the caller's thread; the pipeline
    keeps its own scheduler state, and a caller's no_grad reaches the threads."""
    from erasure_lib import sampling
    prompts, seeds = ["a nude person", "a red car", "a church in the snow", "a person in the sauna"] * 5, range(20)
    monkeypatch.setenv(sampling.SAMPLE_WORKERS_ENV, "1")
    one = generate(pipe, prompts, seeds, steps=4, batch_size=8, progress=False)
    traj_one = denoise(pipe, prompts, initial_latents(pipe, seeds), steps=6, guidance=3.0, record=True, batch_size=8)
    monkeypatch.setenv(sampling.SAMPLE_WORKERS_ENV, "3")
    threads = []
    real = sampling._shell
    monkeypatch.setattr(sampling, "_shell", lambda p: threads.append(1) or real(p))
    np.testing.assert_array_equal(generate(pipe, prompts, seeds, steps=4, batch_size=8, progress=False), one)
    assert len(threads) == 3
    traj = denoise(pipe, prompts, initial_latents(pipe, seeds), steps=6, guidance=3.0, record=True, batch_size=8)
    assert torch.equal(traj.latents, traj_one.latents) and torch.equal(traj.noise_uncond, traj_one.noise_uncond)
    assert torch.equal(traj.timesteps, traj_one.timesteps) and not traj.latents.requires_grad
    assert len(pipe.scheduler.timesteps) == 6                # the caller's scheduler as denoise set it


def test_a_process_on_torchs_threads_samples_in_threads_of_one(pipe, monkeypatch):
    """With torch's default of a thread per core (Jupyter without OMP_NUM_THREADS), generate still splits its work
    across the cores: one batch of 16 images becomes two of 8, one per thread, each thread on one torch thread; the
    same bits as one batch on the caller's thread; torch's setting restored after."""
    from erasure_lib import sampling
    monkeypatch.setattr(sampling.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    prompts, seeds = ["a nude person", "a red car", "a church in the snow", "a person in the sauna"] * 4, range(16)
    monkeypatch.setenv(sampling.SAMPLE_WORKERS_ENV, "1")
    one = generate(pipe, prompts, seeds, steps=4, batch_size=64, progress=False)
    monkeypatch.delenv(sampling.SAMPLE_WORKERS_ENV)
    batches, threads = [], []
    real = sampling._in_parallel

    def spy(p, starts, run):
        batches.append(len(starts))
        return real(p, starts, lambda q, chunk: (threads.append(torch.get_num_threads()), run(q, chunk))[1])
    monkeypatch.setattr(sampling, "_in_parallel", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = generate(pipe, prompts, seeds, steps=4, batch_size=64, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert batches == [2] and threads == [1, 1]
    np.testing.assert_array_equal(one, two)
    # a batch never shrinks below one block; enough batches, or one accelerator, are left alone
    assert sampling._batch_size(8, 64, "cpu") == 8 and sampling._batch_size(128, 64, "cpu") == 64
    assert sampling._batch_size(100, 64, "cuda") == 64
