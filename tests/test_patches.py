"""Patch selection by spectral entropy (erasure_lib.detect.patches) against values worked by hand."""
import math

import numpy as np
import pytest

from erasure_lib.detect.patches import PatchConfig, select_patches, spectral_entropy, split_patches, toy_config


def test_spectral_entropy_of_a_flat_and_a_point_patch():
    flat = np.full((1, 4, 4, 3), 0.5)
    point = np.zeros((1, 4, 4, 3))
    point[0, 1, 2] = 1.0                      # one bright pixel: a flat power spectrum over 16 frequencies
    assert spectral_entropy(flat)[0] == pytest.approx(0.0, abs=1e-12)
    assert spectral_entropy(point)[0] == pytest.approx(math.log2(16))
    assert spectral_entropy(np.zeros((1, 4, 4, 3)))[0] == 0.0          # no power at all: 0, not NaN
    assert spectral_entropy((point * 255).astype(np.uint8))[0] == pytest.approx(math.log2(16))


def test_split_patches_row_major():
    image = np.arange(8 * 8 * 3).reshape(8, 8, 3)
    patches = split_patches(image, 4)
    assert patches.shape == (4, 4, 4, 3)
    assert (patches[1] == image[:4, 4:]).all() and (patches[2] == image[4:, :4]).all()
    with pytest.raises(ValueError, match="no 16-px patch"):
        split_patches(np.zeros((8, 8, 3)), 16)


def test_toy_selection_keeps_the_flattest_and_busiest_patches():
    # a 32-px image of 64 4-px patches: 20 flat (entropy 0), 20 single-pixel (entropy 4), 24 in between
    rng = np.random.default_rng(1)
    patches = rng.uniform(0.2, 0.8, size=(64, 4, 4, 3)).round(1)
    kind = np.array(["mid"] * 64, dtype=object)
    kind[:20], kind[20:40] = "flat", "point"
    patches[:20] = 0.3
    patches[20:40] = 0.0
    patches[20:40, 2, 1] = 1.0
    order = rng.permutation(64)
    patches, kind = patches[order], kind[order]
    image = patches.reshape(8, 8, 4, 4, 3).transpose(0, 2, 1, 3, 4).reshape(32, 32, 3)
    config = toy_config()
    out = select_patches(image, config, np.random.default_rng(0))
    assert out.shape == (32, 32, 3) and (out[:2] == 0).all() and (out[:, 30:] == 0).all()    # 28-px mosaic, padded
    tiles = split_patches(out[2:30, 2:30], 4)
    entropies = spectral_entropy(tiles)
    assert (entropies == 0).sum() == 20 and np.isclose(entropies, 4.0).sum() == 20          # all flat, all points
    assert len(tiles) == 49
    again = select_patches(image, config, np.random.default_rng(0))
    assert (again == out).all()
    assert not (select_patches(image, config, np.random.default_rng(5)) == out).all()         # another shuffle


def test_selection_refuses_too_few_patches_and_non_square_counts():
    with pytest.raises(ValueError, match="fewer than"):
        select_patches(np.zeros((16, 16, 3)), toy_config())
    with pytest.raises(ValueError, match="square"):
        select_patches(np.zeros((32, 32, 3)), PatchConfig(patch=4, n_low=10, n_high=10))
