"""The renderer: deterministic, valid images, every concept visibly distinct."""
import numpy as np
import pytest

from erasure_lib.toyworld.captions import sample_scene
from erasure_lib.toyworld.render import render, render_batch
from erasure_lib.toyworld.world import BACKGROUNDS, OBJECTS, STYLES, SUBJECTS, Scene


def test_render_is_deterministic_per_scene_and_seed():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(50)]
    a = render_batch(scenes, seeds=range(50))
    b = render_batch(scenes, seeds=range(50))
    assert a.dtype == np.float32 and a.shape == (50, 32, 32, 3)
    assert np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_seed_only_matters_for_stochastic_styles():
    plain = Scene("gun", "red", "grey")
    assert np.array_equal(render(plain, 1), render(plain, 2))
    mosaic = Scene("gun", "red", "grey", style="mosaic")
    assert not np.array_equal(render(mosaic, 1), render(mosaic, 2))


def test_every_subject_style_and_background_renders_differently():
    subjects = np.stack([render(Scene(s, "red", "grey")) for s in SUBJECTS])
    styles = np.stack([render(Scene("house", "red", "grey", style=s)) for s in ("none",) + STYLES])
    backgrounds = np.stack([render(Scene("house", "red", b)) for b in BACKGROUNDS])
    for group in (subjects, styles, backgrounds):
        diffs = np.abs(group[:, None] - group[None]).mean(axis=(2, 3, 4))
        off_diagonal = diffs[~np.eye(len(group), dtype=bool)]
        assert off_diagonal.min() > 0.005, "two concepts render (almost) the same image"


def test_lookalikes_are_closer_than_unrelated_objects():
    img = {o: render(Scene(o, "blue", "black")) for o in OBJECTS}
    dist = lambda a, b: np.abs(img[a] - img[b]).mean()  # noqa: E731
    assert dist("tench", "goldfish") < dist("tench", "church")
    assert dist("parachute", "umbrella") < dist("parachute", "gun")


def test_nude_person_differs_from_clothed_person_in_every_style():
    for style in ("none",) + STYLES:
        nude = render(Scene("person", "blue", "beach", style=style, nude=True), 3)
        clothed = render(Scene("person", "blue", "beach", style=style), 3)
        assert np.abs(nude - clothed).mean() > 0.01, style


@pytest.mark.parametrize("kwargs, message", [
    (dict(subject="dragon", colour="red", background="grey"), "unknown subject"),
    (dict(subject="gun", colour="teal", background="grey"), "unknown colour"),
    (dict(subject="gun", colour="red", background="space"), "unknown background"),
    (dict(subject="gun", colour="red", background="grey", style="cubist"), "unknown style"),
    (dict(subject="gun", colour="red", background="grey", nude=True), "only a person"),
])
def test_invalid_scenes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Scene(**kwargs)
