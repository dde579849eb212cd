"""Loading the committed zoo: profiles, round trips, and clear errors for bad input."""
import shutil

import numpy as np
import pytest
import torch

from erasure_lib import load_pipeline
from erasure_lib.sampling import generate
from erasure_lib.toyworld import zoo


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("toy")


def test_toy_pipeline_is_a_stable_diffusion_pipeline(pipe):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.clip_sample is False
    assert pipe.unet.config.class_embed_type is None and pipe.unet.config.addition_embed_type is None
    names = [n for n, _ in pipe.unet.named_modules() if n.endswith("attn2.to_k")]
    assert names and all(m.in_features == pipe.text_encoder.config.hidden_size
                         for n, m in pipe.unet.named_modules() if n.endswith("attn2.to_k"))


def test_text_encoder_is_the_frozen_toy_clip_text_tower(pipe):
    clip, _ = zoo.load_clip()
    for (k, v), (k2, v2) in zip(pipe.text_encoder.state_dict().items(),
                                clip.text_model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_save_and_reload_round_trip_is_bit_exact(pipe, tmp_path):
    from diffusers import StableDiffusionPipeline
    before = generate(pipe, ["a red gun at the beach", "a nude person"], [1, 2], steps=5, progress=False)
    pipe.save_pretrained(tmp_path / "copy")
    again = StableDiffusionPipeline.from_pretrained(tmp_path / "copy", local_files_only=True)
    after = generate(again, ["a red gun at the beach", "a nude person"], [1, 2], steps=5, progress=False)
    assert np.array_equal(before, after)
    for (k, v), (k2, v2) in zip(pipe.unet.state_dict().items(), again.unet.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_same_seed_same_image_and_different_seed_different_image(pipe):
    a = generate(pipe, ["a blue church"] * 2, [5, 5], steps=5, progress=False)
    b = generate(pipe, ["a blue church"], [6], steps=5, progress=False)
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b[0])


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ValueError, match="toy, sd14"):
        load_pipeline("sdxl")


def test_sd14_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to fall back on
    with pytest.raises(RuntimeError, match="profile='toy'"):
        load_pipeline("sd14", device="cpu")


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    dest = tmp_path / "data"
    shutil.copytree(zoo.data_dir(), dest, ignore=shutil.ignore_patterns("training_logs"))
    monkeypatch.setenv("ERASURE_BOOK_DATA", str(dest))
    return dest


def test_missing_weight_file_is_named(zoo_copy):
    target = zoo_copy / "tinysd" / "unet" / "diffusion_pytorch_model.safetensors"
    target.unlink()
    with pytest.raises(FileNotFoundError, match="unet/diffusion_pytorch_model.safetensors"):
        load_pipeline("toy")


def test_corrupt_weight_file_is_named(zoo_copy):
    target = zoo_copy / "tinysd" / "vae" / "diffusion_pytorch_model.safetensors"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(zoo.CorruptWeightsError, match="vae/diffusion_pytorch_model.safetensors"):
        load_pipeline("toy")


def test_missing_zoo_folder_says_how_to_retrain(tmp_path, monkeypatch):
    monkeypatch.setenv("ERASURE_BOOK_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="erasure_lib.toyworld.train"):
        load_pipeline("toy")


def test_every_part_loads_offline_with_from_pretrained():
    clf = zoo.load_classifier()
    fid = zoo.load_fid_features()
    x = torch.rand(4, 3, 32, 32)
    assert fid(x).shape == (4, fid.num_features)
    assert torch.allclose(fid(x), clf.features(x))
    assert torch.allclose(fid((x * 255).to(torch.uint8)), fid((x * 255).to(torch.uint8).float() / 255))
    with pytest.raises(ValueError, match="NaN"):
        fid(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="3 colour channels"):
        fid(torch.rand(1, 4, 32, 32))


def test_ip_adapter_loads_with_diffusers_load_ip_adapter():
    from erasure_lib.sampling import encode_images
    pipe = zoo.load_ip_adapter(load_pipeline("toy"))
    refs = np.zeros((2, 32, 32, 3), np.uint8)
    emb = encode_images(pipe, refs)
    assert emb.shape == (2, pipe.image_encoder.config.projection_dim)
    out = generate(pipe, ["", ""], [0, 1], steps=3, image_embeds=emb, progress=False)
    assert out.shape == (2, 32, 32, 3)


def test_fid_features_work_as_torchmetrics_feature():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from erasure_lib.toyworld.quality import heldout_images
    _, a = heldout_images(64, seed=3)
    _, b = heldout_images(64, seed=4)
    fid = FrechetInceptionDistance(feature=zoo.load_fid_features(), normalize=False)
    fid.update(torch.from_numpy(a).permute(0, 3, 1, 2), real=True)
    fid.update(torch.from_numpy(a).permute(0, 3, 1, 2), real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(torch.from_numpy(a).permute(0, 3, 1, 2), real=True)
    fid.update(torch.from_numpy(np.clip(b.astype(int) + 60, 0, 255).astype(np.uint8)).permute(0, 3, 1, 2),
               real=False)
    assert abs(same) < 1e-2 and float(fid.compute()) > same + 1.0
