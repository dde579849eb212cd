"""``load_pipeline(profile)``: the one entry point to a text-to-image model, whatever the profile.

* ``toy``: TinySD from the committed zoo under ``data/tinysd`` (offline, checked against its manifest);
* ``sd14``: Stable Diffusion v1.4 (``CompVis/stable-diffusion-v1-4``) from the Hugging Face hub, fp16 on CUDA;
  or, when the environment variable ``ERASURE_BOOK_SD14`` names a folder, the diffusers pipeline in that
  folder, offline: a local copy of SD v1.4, or the random-weight model of SD v1.4's structure that
  :func:`erasure_lib.testing.build_sd14_test_model` writes (how CI runs the sd14 code path).

Both return a diffusers ``StableDiffusionPipeline`` with the DDIM scheduler, no safety checker (the book
measures unsafe content with its own detectors and censors it itself), and progress bars off (the
library's batched sampling shows its own). SD v1.4 ships a PNDM scheduler config; the DDIM scheduler is
built from it with ``clip_sample=False`` set explicitly, because DDIM's default is ``True`` and the sample
clipping would otherwise depend on whether the config file happens to carry the key (SD v1.4's has
``"clip_sample": false``). The toy's committed scheduler is already DDIM with ``clip_sample: false`` and is
used as it is.

The IP-Adapter of the sd14 profile (:func:`load_ip_adapter`) is ``h94/IP-Adapter``'s
``models/ip-adapter_sd15.safetensors`` with its image encoder ``models/image_encoder``; the environment
variable ``ERASURE_BOOK_SD14_IP_ADAPTER`` names a local folder in that layout instead.

:func:`model_identity` names the base model for cache keys: the sha256 of the UNet's weights file, or the
hub commit.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

PROFILES = ("toy", "sd14")
SD14_REPO = "CompVis/stable-diffusion-v1-4"
SD14_ENV = "ERASURE_BOOK_SD14"
SD14_IP_ADAPTER_ENV = "ERASURE_BOOK_SD14_IP_ADAPTER"
SD15_IP_ADAPTER = ("h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors")
_IP_ADAPTER_WEIGHTS = ("ip-adapter_sd15.safetensors", "ip-adapter_sd15.bin")  # in order of preference

_IDENTITY_ATTR = "_erasure_model_identity"  # set by load_pipeline: ("file", path) or ("hub", "repo@commit")


def _resolve_device(device, dtype, profile):
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.float16 if (profile == "sd14" and device.type == "cuda") else torch.float32
    return device, dtype


def sd14_folder() -> Path | None:
    """The local SD v1.4 pipeline folder named by ``$ERASURE_BOOK_SD14``, checked; None when it is unset."""
    value = os.environ.get(SD14_ENV, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{SD14_ENV}={value!r}: no such folder. It must name a diffusers "
                                "StableDiffusionPipeline folder (model_index.json, unet/, vae/, text_encoder/, "
                                "tokenizer/, scheduler/), e.g. one written by "
                                f"erasure_lib.testing.build_sd14_test_model or a local copy of {SD14_REPO}; "
                                "unset it to use the hub")
    index = folder / "model_index.json"
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / p).is_dir()]
    if not index.is_file() or missing:
        what = "no model_index.json" if not index.is_file() else f"no {', '.join(p + '/' for p in missing)}"
        raise ValueError(f"{SD14_ENV}={value!r} is not a diffusers pipeline folder ({what}); it must hold a "
                         f"StableDiffusionPipeline saved with save_pretrained, e.g. a local copy of {SD14_REPO}")
    return folder


def load_pipeline(profile: str = "toy", device=None, dtype=None):
    """Load the pipeline of ``profile`` (``"toy"`` or ``"sd14"``) onto ``device`` (default: CUDA if present).

    ``sd14`` reads the folder named by ``$ERASURE_BOOK_SD14`` offline when that is set, else the hub."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    device, dtype = _resolve_device(device, dtype, profile)
    if profile == "toy":
        from .toyworld.zoo import verify
        folder = verify("tinysd")
        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype)
        identity = ("file", _unet_weights(Path(folder) / "unet"))
    else:
        folder = sd14_folder()
        if folder is not None:
            pipe = StableDiffusionPipeline.from_pretrained(
                folder, local_files_only=True, dtype=dtype, safety_checker=None, requires_safety_checker=False)
            identity = ("file", _unet_weights(folder / "unet"))
        else:
            try:
                pipe = StableDiffusionPipeline.from_pretrained(
                    SD14_REPO, dtype=dtype, safety_checker=None, requires_safety_checker=False)
            except OSError as err:  # huggingface_hub's offline / connection errors are OSErrors
                raise RuntimeError(
                    f"profile 'sd14' needs {SD14_REPO} from the Hugging Face hub (about 4 GB, downloaded once and "
                    "cached) and the hub could not be reached or the model is not cached. Run on a machine with "
                    f"internet (e.g. Colab), set {SD14_ENV} to a local copy of the pipeline, or use "
                    "profile='toy', which works offline.") from err
            identity = _loaded_from(pipe)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    setattr(pipe, _IDENTITY_ATTR, identity)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _ip_adapter_folder() -> tuple[Path, str] | None:
    """(folder, weight name) of the local IP-Adapter named by ``$ERASURE_BOOK_SD14_IP_ADAPTER``; None if unset."""
    value = os.environ.get(SD14_IP_ADAPTER_ENV, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{SD14_IP_ADAPTER_ENV}={value!r}: no such folder. It must be in h94/IP-Adapter's "
                                "layout (models/ip-adapter_sd15.safetensors or .bin, models/image_encoder/), e.g. one "
                                "written by erasure_lib.testing.build_ip_adapter; unset it to use the hub")
    models = folder / SD15_IP_ADAPTER[1]
    weight = next((w for w in _IP_ADAPTER_WEIGHTS if (models / w).is_file()), None)
    if weight is None or not (models / "image_encoder" / "config.json").is_file():
        what = (f"no {' or '.join('models/' + w for w in _IP_ADAPTER_WEIGHTS)}" if weight is None
                else "no models/image_encoder/config.json")
        raise FileNotFoundError(f"{SD14_IP_ADAPTER_ENV}={value!r} is not an IP-Adapter folder in h94/IP-Adapter's "
                                f"layout ({what})")
    return folder, weight


def load_ip_adapter(pipe, profile: str = "toy", scale: float = 1.0):
    """Load the profile's IP-Adapter into ``pipe`` with diffusers' ``pipe.load_ip_adapter`` (in place; returns
    ``pipe``): toy: the zoo's (``data/ip_adapter``); sd14: ``h94/IP-Adapter`` ``models/ip-adapter_sd15.safetensors``
    with its OpenCLIP ViT-H/14 image encoder ``models/image_encoder`` (the one Co-Erasing uses), downloaded on
    first use, or the local folder in the same layout named by ``$ERASURE_BOOK_SD14_IP_ADAPTER`` (its
    ``.safetensors`` weights preferred over ``.bin``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if profile == "toy":
        from .toyworld.zoo import load_ip_adapter as _toy
        return _toy(pipe, scale=scale)
    repo, subfolder, weight = SD15_IP_ADAPTER
    local = _ip_adapter_folder()
    if local is not None:
        folder, weight = local
        # the image encoder: diffusers reads "<subfolder>/image_encoder" of the same folder
        pipe.load_ip_adapter(str(folder), subfolder=subfolder, weight_name=weight, local_files_only=True)
    else:
        try:
            pipe.load_ip_adapter(repo, subfolder=subfolder, weight_name=weight)
        except OSError as err:
            raise RuntimeError(f"profile 'sd14' needs the IP-Adapter {repo}/{subfolder}/{weight} from the Hugging "
                               "Face hub, which could not be reached; run where the hub is reachable (e.g. Colab) "
                               f"or set {SD14_IP_ADAPTER_ENV} to a local copy") from err
    pipe.set_ip_adapter_scale(scale)
    return pipe


# --- the identity of the base model ----------------------------------------------------------------------------

_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_HUB_SNAPSHOT = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\](?P<commit>[0-9a-f]{40})")
_file_hashes: dict[tuple[str, int, int], str] = {}


def _unet_weights(unet_dir: Path) -> tuple[Path, ...]:
    """The UNet's weight file(s) in ``unet_dir``: the single file (safetensors first), or the shards of a
    sharded checkpoint in index order; empty when there are none."""
    for name in _WEIGHT_NAMES:
        if (unet_dir / name).is_file():
            return (unet_dir / name,)
        index = unet_dir / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return tuple(unet_dir / s for s in shards)
    return ()


def _hash_files(paths: tuple[Path, ...]) -> str:
    """sha256 (first 16 hex digits) of the files' contents, concatenated; memoised per (path, size, mtime)."""
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    if key not in _file_hashes:
        h = hashlib.sha256()
        for p in paths:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        _file_hashes[key] = h.hexdigest()[:16]
    return _file_hashes[key]


def _loaded_from(pipe) -> tuple[str, object] | None:
    """Where ``pipe``'s UNet was read from, as recorded by ``from_pretrained`` (``unet.config._name_or_path``):
    ``("hub", "repo@commit")`` for a hub cache snapshot, ``("file", weights)`` for a local folder."""
    source = getattr(getattr(pipe, "unet", None), "config", {}).get("_name_or_path") or ""
    match = _HUB_SNAPSHOT.search(str(source))
    if match:
        return "hub", f"{match['org']}/{match['name']}@{match['commit']}"
    if source and Path(source).is_dir():
        weights = _unet_weights(Path(source))
        if weights:
            return "file", weights
    if source and not Path(source).exists() and source.count("/") == 1:  # a repo id: ask the local hub cache
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(source, "model_index.json")
        except Exception:  # noqa: BLE001 - no cache entry is as good as no answer
            cached = None
        match = _HUB_SNAPSHOT.search(str(cached)) if isinstance(cached, str) else None
        if match:
            return "hub", f"{source}@{match['commit']}"
    return None


def model_identity(pipe) -> str:
    """A stable name of ``pipe``'s base model, for cache keys (e.g. of edits computed on it).

    * a pipeline loaded from a folder (the toy zoo, ``$ERASURE_BOOK_SD14``, any local ``from_pretrained``):
      the first 16 hex digits of the sha256 of the UNet's weights file (``unet/diffusion_pytorch_model.safetensors``;
      hashed once per file and process, so a 3.4 GB file costs its read once);
    * SD v1.4 from the hub: ``"hub:CompVis/stable-diffusion-v1-4@<commit>"``, the snapshot commit of the cache;
    * any other pipeline (built in memory): ``"state:"`` + the same 16 hex digits of its UNet's state dict.

    It names the weights *as loaded* (what :func:`load_pipeline` records): edits applied to the pipeline
    afterwards, the dtype and the device do not change it."""
    source = getattr(pipe, _IDENTITY_ATTR, None) or _loaded_from(pipe)
    if source is not None:
        kind, what = source
        if kind == "hub":
            return f"hub:{what}"
        if what:
            return _hash_files(tuple(what))
    from ._hashing import state_dict_sha256
    return "state:" + state_dict_sha256(pipe.unet)[:16]
