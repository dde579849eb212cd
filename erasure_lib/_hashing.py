"""SHA-256 of a file, read in 1 MiB chunks: the one hash behind the zoo manifest, the prompt-set manifest and
the judges' provenance; and of a module's state dict, the identity of a model that has no weights file."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_sha256(module) -> str:
    """SHA-256 of a module's state dict: every name, dtype, shape and the raw bytes of every tensor (any dtype,
    bfloat16 too), in the state dict's order."""
    import torch
    h = hashlib.sha256()
    with torch.no_grad():
        for name, value in module.state_dict().items():
            h.update(f"{name}:{str(value.dtype).removeprefix('torch.')}:{tuple(value.shape)}".encode())
            h.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
