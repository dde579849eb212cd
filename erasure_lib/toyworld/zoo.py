"""Where the committed toy model zoo lives, and loaders that check it before they trust it.

Layout under ``data/`` (each folder loads offline with ``from_pretrained(folder)``)::

    toy_clip/        CLIPModel (text + vision towers) + CLIPProcessor (tokenizer, image processor)
    tinysd/          StableDiffusionPipeline: vae, unet, text_encoder (= toy_clip's frozen text tower),
                     tokenizer, scheduler (DDIM, SD v1.4's schedule)
    ip_adapter/      ip-adapter_toy.safetensors + image_encoder/ (toy_clip's vision tower with projection)
    classifier/      ToyConceptClassifier (object / style / sensitive / colour heads)
    fid_features/    ToyFIDFeatures (the classifier's pooled features, for torchmetrics FID)
    aigi_unet/       a second, smaller TinySD UNet (another size and seed): one of NS-Net's generators (chapter 40)
    aigi_gan/        a small text-conditional GAN on the toy renders, the ProGAN analog of chapter 40
    training_logs/   loss curves and timings of the committed training run
    MANIFEST.json    sha256 of every weight file, checked at load time

A missing file raises ``FileNotFoundError`` naming it; a file whose hash differs from the manifest raises
:class:`CorruptWeightsError` naming it, instead of a shape error deep inside ``from_pretrained``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .._hashing import sha256_file as _sha256
from .._io import atomic_write_text

PARTS = ("toy_clip", "tinysd", "ip_adapter", "classifier", "fid_features", "aigi_unet", "aigi_gan")
MANIFEST = "MANIFEST.json"


class CorruptWeightsError(RuntimeError):
    """A weight file of the zoo does not match the manifest (truncated, overwritten, or a git-lfs pointer)."""


def data_dir() -> Path:
    """The zoo's folder: ``$ERASURE_BOOK_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("ERASURE_BOOK_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def write_manifest(root: Path | None = None) -> dict:
    """Record the sha256 of every ``.safetensors`` and ``.json`` file of the zoo parts (after training)."""
    root = root or data_dir()
    entries = {}
    for part in PARTS:
        for p in sorted((root / part).rglob("*")):
            if p.is_file() and p.suffix in (".safetensors", ".json"):
                entries[p.relative_to(root).as_posix()] = _sha256(p)
    atomic_write_text(root / MANIFEST, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return entries


def verify(part: str, root: Path | None = None) -> Path:
    """Check that every manifest file of ``part`` exists and has its recorded hash; return the part's folder."""
    if part not in PARTS:
        raise ValueError(f"unknown zoo part {part!r}; valid: {', '.join(PARTS)}")
    root = root or data_dir()
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"the toy zoo manifest {manifest_path} is missing: is {root} the zoo folder? "
                                "(retrain with `python -m erasure_lib.toyworld.train --out data`)")
    manifest = json.loads(manifest_path.read_text())
    files = {k: v for k, v in manifest.items() if k.split("/", 1)[0] == part}
    if not files:
        raise FileNotFoundError(f"no files of zoo part {part!r} in {manifest_path}")
    for rel, digest in files.items():
        path = root / rel
        if not path.exists():
            raise FileNotFoundError(f"toy zoo weight file missing: {path}")
        if _sha256(path) != digest:
            raise CorruptWeightsError(f"toy zoo file is corrupt (sha256 differs from {MANIFEST}): {path}")
    return root / part


def load_clip(root: Path | None = None):
    """The toy CLIP as ``(CLIPModel, CLIPProcessor)``, on the CPU, in eval mode."""
    from transformers import CLIPModel, CLIPProcessor
    folder = verify("toy_clip", root)
    return (CLIPModel.from_pretrained(folder, local_files_only=True).eval(),
            CLIPProcessor.from_pretrained(folder, local_files_only=True))


def load_classifier(root: Path | None = None):
    from .models import ToyConceptClassifier
    return ToyConceptClassifier.from_pretrained(verify("classifier", root), local_files_only=True).eval()


def load_fid_features(root: Path | None = None):
    from .models import ToyFIDFeatures
    return ToyFIDFeatures.from_pretrained(verify("fid_features", root), local_files_only=True).eval()


def load_ip_adapter(pipe, scale: float = 1.0, root: Path | None = None):
    """Load the toy IP-Adapter into a TinySD pipeline with diffusers' own ``pipe.load_ip_adapter``."""
    folder = verify("ip_adapter", root)
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter_toy.safetensors",
                         image_encoder_folder="image_encoder", local_files_only=True)
    pipe.set_ip_adapter_scale(scale)
    return pipe
