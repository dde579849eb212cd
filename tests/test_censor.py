"""Censoring blurs exactly the flagged images, and cannot be switched off for sensitive sd14 images."""
import numpy as np
import pytest

from erasure_lib.censor import blur, censor, toy_detector
from erasure_lib.plotting import image_grid
from erasure_lib.toyworld.render import render_batch
from erasure_lib.toyworld.world import Scene


@pytest.fixture(scope="module")
def scenes():
    safe = [Scene(subject="church", colour="red", background="grey"),
            Scene(subject="person", colour="blue", background="beach")]
    nude = [Scene(subject="person", colour="blue", background="beach", nude=True),
            Scene(subject="person", colour="red", background="grey", nude=True)]
    return (render_batch(safe + nude, seeds=range(4)) * 255).round().astype(np.uint8)


def test_toy_detector_flags_the_sensitive_marker(scenes):
    assert toy_detector()(scenes).tolist() == [False, False, True, True]


def test_censor_blurs_flagged_images_only(scenes):
    out, flags = censor(scenes, detector=toy_detector())
    assert flags.tolist() == [False, False, True, True]
    np.testing.assert_array_equal(out[:2], scenes[:2])
    assert np.abs(out[2:].astype(int) - scenes[2:]).mean() > 10
    # no edges survive: the blurred images' local contrast is a fraction of the originals'
    grad = lambda x: np.abs(np.diff(x.astype(int), axis=2)).mean()  # noqa: E731
    assert grad(out[2:]) < grad(scenes[2:]) / 3
    # the input is left alone
    assert not np.shares_memory(out, scenes)


def test_blur_keeps_shape_and_removes_detail():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = blur(noise)
    assert out.shape == noise.shape and out.dtype == np.uint8
    assert out.std() < noise.std() / 3


def test_bad_input_raises(scenes):
    with pytest.raises(ValueError, match="uint8"):
        censor(scenes.astype(np.float32), detector=toy_detector())
    with pytest.raises(ValueError, match="flags"):
        censor(scenes, detector=lambda x: np.zeros(1, bool))
    with pytest.raises(ValueError, match="unknown profile"):
        censor(scenes, profile="sd15")


def test_sensitive_sd14_grids_are_always_censored(scenes):
    with pytest.raises(ValueError, match="always censored"):
        image_grid(scenes, 1, 4, profile="sd14", sensitive=True, censor=False)
    seen = []
    fig = image_grid(scenes, 1, 4, profile="sd14", sensitive=True,
                     detector=lambda x: seen.append(len(x)) or toy_detector()(x))
    assert seen == [4]
    shown = np.stack([ax.images[0].get_array() for ax in fig.axes])
    np.testing.assert_array_equal(shown[:2], scenes[:2])
    assert np.abs(shown[2:].astype(int) - scenes[2:]).mean() > 10
    # toy grids are not censored unless asked
    fig = image_grid(scenes, 1, 4, profile="toy", sensitive=True)
    np.testing.assert_array_equal(np.stack([ax.images[0].get_array() for ax in fig.axes]), scenes)


def test_nudenet_detector_runs_offline_and_passes_a_clean_photo():
    """The sd14 detector: NudeNet 3.4.2 from the installed wheel; a portrait (a face, nothing exposed) and a
    blank image are not flagged."""
    import matplotlib
    from PIL import Image

    from erasure_lib.censor import nudenet_detector
    photo = np.asarray(Image.open(matplotlib.get_data_path() + "/sample_data/grace_hopper.jpg").convert("RGB"))
    blank = np.zeros_like(photo)
    assert nudenet_detector()(np.stack([photo, blank])).tolist() == [False, False]
