"""``load_pipeline`` and ``model_identity`` on the toy profile (the sd14 profile: tests/test_sd14_model.py)."""
import hashlib

from erasure_lib.loading import load_pipeline, model_identity
from erasure_lib.toyworld.zoo import data_dir


def test_toy_identity_is_the_hash_of_the_committed_unet_and_the_scheduler_is_the_committed_one():
    pipe = load_pipeline("toy", device="cpu")
    weights = data_dir() / "tinysd" / "unet" / "diffusion_pytorch_model.safetensors"
    assert model_identity(pipe) == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert model_identity(pipe) == model_identity(load_pipeline("toy", device="cpu"))
    # the toy's committed DDIM config is used as it is (it already has clip_sample false)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler.config.clip_sample is False


def test_identity_of_a_hub_pipeline_is_the_snapshot_commit():
    from types import SimpleNamespace
    commit = "133a221b8aa7292a167afc5127cb63fb5005638b"
    cache = "/root/.cache/huggingface/hub/models--CompVis--stable-diffusion-v1-4"
    unet = SimpleNamespace(config={"_name_or_path": f"{cache}/snapshots/{commit}/unet"})
    assert model_identity(SimpleNamespace(unet=unet)) == f"hub:CompVis/stable-diffusion-v1-4@{commit}"
