"""``load_pipeline(profile)``: the one entry point to a text-to-image model, whatever the profile.

* ``toy``: TinySD from the committed zoo under ``data/tinysd`` (offline, checked against its manifest);
* ``sd14``: Stable Diffusion v1.4 (``CompVis/stable-diffusion-v1-4``) from the Hugging Face hub, fp16 on CUDA.

Both return a diffusers ``StableDiffusionPipeline`` with the DDIM scheduler, no safety checker (the book
measures unsafe content with its own detectors and censors it itself), and progress bars off (the
library's batched sampling shows its own).
"""
from __future__ import annotations

import torch

PROFILES = ("toy", "sd14")
SD14_REPO = "CompVis/stable-diffusion-v1-4"


def _resolve_device(device, dtype, profile):
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.float16 if (profile == "sd14" and device.type == "cuda") else torch.float32
    return device, dtype


def load_pipeline(profile: str = "toy", device=None, dtype=None):
    """Load the pipeline of ``profile`` (``"toy"`` or ``"sd14"``) onto ``device`` (default: CUDA if present)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    device, dtype = _resolve_device(device, dtype, profile)
    if profile == "toy":
        from .toyworld.zoo import verify
        folder = verify("tinysd")
        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype)
    else:
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                SD14_REPO, dtype=dtype, safety_checker=None, requires_safety_checker=False)
        except OSError as err:  # huggingface_hub's offline / connection errors are OSErrors
            raise RuntimeError(
                f"profile 'sd14' needs {SD14_REPO} from the Hugging Face hub (about 4 GB, downloaded once and "
                "cached) and the hub could not be reached or the model is not cached. Run on a machine with "
                "internet (e.g. Colab), or use profile='toy', which works offline.") from err
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


SD15_IP_ADAPTER = ("h94/IP-Adapter", "models", "ip-adapter_sd15.bin")


def load_ip_adapter(pipe, profile: str = "toy", scale: float = 1.0):
    """Load the profile's IP-Adapter into ``pipe`` with diffusers' ``pipe.load_ip_adapter`` (in place; returns
    ``pipe``): toy: the zoo's (``data/ip_adapter``); sd14: ``h94/IP-Adapter`` ``models/ip-adapter_sd15.bin``
    with its OpenCLIP ViT-H/14 image encoder (the one Co-Erasing uses), downloaded on first use."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if profile == "toy":
        from .toyworld.zoo import load_ip_adapter as _toy
        return _toy(pipe, scale=scale)
    repo, subfolder, weight = SD15_IP_ADAPTER
    try:
        pipe.load_ip_adapter(repo, subfolder=subfolder, weight_name=weight)
    except OSError as err:
        raise RuntimeError(f"profile 'sd14' needs the IP-Adapter {repo}/{subfolder}/{weight} from the Hugging Face "
                           "hub, which could not be reached; run where the hub is reachable (e.g. Colab)") from err
    pipe.set_ip_adapter_scale(scale)
    return pipe
