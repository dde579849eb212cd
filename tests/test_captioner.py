"""The toy captioner (NS-Net's BLIP analog): captions of rendered scenes whose content is known."""
import numpy as np
import pytest

from erasure_lib.detect.captioner import caption_features, caption_from_labels, toy_captions


def test_captions_of_rendered_scenes_say_what_the_scene_holds():
    from erasure_lib.toyworld.render import render_batch
    from erasure_lib.toyworld.world import Scene
    scenes = [Scene("tench", "red", "grey"), Scene("person", "blue", "beach", "sketch"),
              Scene("person", "blue", "black", nude=True), Scene("church", "purple", "striped", "neon")]
    images = (render_batch(scenes, range(4)) * 255).round().astype(np.uint8)
    assert toy_captions(images) == ["a red tench", "a person wearing blue, in sketch style", "a nude person",
                                    "a purple church, in neon style"]


def test_caption_from_labels_and_features():
    from erasure_lib import load_pipeline
    assert caption_from_labels("gun", "yellow", "none", False) == "a yellow gun"
    pipe = load_pipeline("toy")
    feats = caption_features(pipe, ["a red tench", "a red tench", "a nude person"])
    assert feats.shape == (3, pipe.text_encoder.config.hidden_size)
    assert np.allclose(feats[0], feats[1]) and not np.allclose(feats[0], feats[2])
    direct = pipe.text_encoder(pipe.tokenizer(["a nude person"], padding="max_length", max_length=77,
                                              return_tensors="pt").input_ids)[1]
    assert np.allclose(feats[2], direct[0].detach().numpy(), atol=1e-6)
    assert caption_features(pipe, []).shape == (0, pipe.text_encoder.config.hidden_size)
