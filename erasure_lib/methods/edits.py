"""An *edit* is what an erasure method changes, and nothing else: ``dict[str, torch.Tensor]`` keyed by the
UNet's own parameter names (diffusers module names, e.g.
``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight``).

This is the format of the reference code: UCE's ``uce_sd_erase.py`` and ESD's ``esd_sd.py`` both save only the
edited tensors, keyed by diffusers names, as safetensors (rohitgandikota/unified-concept-editing,
rohitgandikota/erasing). An edit of the toy model is a few hundred kilobytes; a whole UNet is 17 MB (toy) or
3.4 GB (SD v1.4).

* :func:`apply_edit` writes an edit into a pipeline's (or a bare UNet's) parameters *in place* after checking
  every name and shape, and returns an :class:`AppliedEdit` that puts the original weights back
  (``.restore()``, or use it as a context manager); :func:`edited` is the ``with`` form.
* :func:`save_edit` / :func:`load_edit`: safetensors, written atomically, with the metadata a result needs to be
  traced (method, concept, hyper-parameters) stored in the file's string header. Tensors go through
  safetensors bit-exactly, so a saved edit re-applied reproduces the edited model's outputs exactly.
  ``save_edit(..., dtype=base_dtype)`` stores the tensors in the base model's dtype (and records it): the
  training methods return fp32 tensors, but an fp16 base applies an edit by casting it to fp16 anyway, so
  the fp16 file makes exactly the same edited model at half the size (an SD v1.4 ESD-u edit: 1.5 GB, not 3).
  Absolute values rather than deltas: the file is self-contained (no base needed to read it), it applies with
  one copy, and the reference code's files are absolute too; a delta would only keep more digits for an fp32
  model, which an edit trained against fp16 weights does not have.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from .._io import atomic_path

Edit = dict[str, torch.Tensor]

FORMAT = "erasure_lib.edit/1"
_JSON_KEYS = "__json_keys__"  # metadata keys whose values were JSON-encoded (safetensors headers hold strings only)


class EditError(ValueError):
    """An edit does not fit the model it is applied to (unknown parameter name, wrong shape)."""


def _unet(target) -> torch.nn.Module:
    """The UNet of a pipeline, or the module itself when a bare UNet (any ``nn.Module``) is given."""
    unet = getattr(target, "unet", target)
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"expected a diffusers pipeline with a .unet or a torch.nn.Module, got {type(target).__name__}")
    return unet


def _check(params: Mapping[str, torch.nn.Parameter], edit: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(edit, Mapping):
        raise TypeError(f"an edit is a dict of parameter name -> tensor, got {type(edit).__name__}")
    problems = []
    for name, value in edit.items():
        if not torch.is_tensor(value):
            problems.append(f"{name!r}: value is a {type(value).__name__}, not a tensor")
        elif name not in params:
            close = difflib.get_close_matches(name, list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if name.startswith("unet."):
                hint = " (edits are keyed by the UNet's own parameter names: drop the 'unet.' prefix)"
            problems.append(f"{name!r}: no such UNet parameter{hint}")
        elif tuple(value.shape) != tuple(params[name].shape):
            problems.append(f"{name!r}: shape {tuple(value.shape)} but the UNet parameter is "
                            f"{tuple(params[name].shape)}")
        elif not (value.is_floating_point() and params[name].is_floating_point()):
            problems.append(f"{name!r}: not a floating-point tensor ({value.dtype})")
    if problems:
        raise EditError(f"the edit does not fit this UNet ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))


class AppliedEdit:
    """Handle of an edit written into a UNet: :meth:`restore` (or leaving a ``with`` block) writes the original
    values back, bit-exactly (from wherever they were kept: see :func:`apply_edit`). Restoring twice is a no-op."""

    def __init__(self, unet: torch.nn.Module, originals: Edit):
        self._unet = unet
        self._originals = originals
        self.names = tuple(originals)

    @property
    def active(self) -> bool:
        return self._originals is not None

    @torch.no_grad()
    def restore(self) -> None:
        if self._originals is None:
            return
        params = dict(self._unet.named_parameters())
        for name, value in self._originals.items():
            params[name].copy_(value)
        self._originals = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def __repr__(self):
        state = "active" if self.active else "restored"
        return f"AppliedEdit({len(self.names)} tensors, {state})"


@torch.no_grad()
def apply_edit(pipe, edit: Mapping[str, torch.Tensor], keep_originals_on=None) -> AppliedEdit:
    """Write ``edit`` into the UNet of ``pipe`` (a pipeline, or a UNet) in place; returns the handle that restores it.

    Every name and shape is checked before anything is written, so a bad edit raises :class:`EditError` and
    leaves the model untouched. Values are cast to each parameter's dtype and device (an edit saved from an fp32
    toy run applies to an fp16 CUDA pipeline). The parameters keep their identity (``copy_``), so optimizers and
    hooks that hold them stay valid. ``keep_originals_on``: the device the original values wait on until
    :meth:`AppliedEdit.restore` (default: the parameters' own; ``"cpu"`` keeps a large edit's originals off the
    GPU, e.g. 1.5 GB for SD v1.4's ESD-u)."""
    unet = _unet(pipe)
    params = dict(unet.named_parameters())
    _check(params, edit)
    originals = {name: params[name].detach().to(keep_originals_on or params[name].device, copy=True)
                 for name in edit}
    for name, value in edit.items():
        params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))
    return AppliedEdit(unet, originals)


@contextmanager
def edited(pipe, edit: Mapping[str, torch.Tensor], keep_originals_on=None):
    """``with edited(pipe, edit): ...`` runs the block with the edit applied, and restores the original weights
    afterwards, also when the block raises (``keep_originals_on``: see :func:`apply_edit`)."""
    handle = apply_edit(pipe, edit, keep_originals_on)
    try:
        yield pipe
    finally:
        handle.restore()


def extract_edit(pipe, names) -> Edit:
    """The current values of the named UNet parameters, as an edit (detached CPU copies)."""
    params = dict(_unet(pipe).named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise EditError(f"no such UNet parameter(s): {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return {n: params[n].detach().to("cpu").clone().contiguous() for n in names}


def edit_size_bytes(edit: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data in the edit (the safetensors file adds a small JSON header)."""
    return int(sum(t.numel() * t.element_size() for t in edit.values()))


def _encode_metadata(metadata: Mapping) -> dict[str, str]:
    out, json_keys = {}, []
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {key!r}")
        if key in (_JSON_KEYS, "format"):
            raise ValueError(f"metadata key {key!r} is reserved")
        if isinstance(value, str):
            out[key] = value
        else:
            try:
                out[key] = json.dumps(value, sort_keys=True)
            except TypeError as err:
                raise TypeError(f"metadata {key!r} is not JSON-serialisable: {err}") from None
            json_keys.append(key)
    out[_JSON_KEYS] = json.dumps(json_keys)
    out["format"] = FORMAT
    return out


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``: how edit metadata names a dtype."""
    return str(dtype).removeprefix("torch.")


def cast_edit(edit: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> Edit:
    """``edit`` with its floating-point tensors in ``dtype`` (None: as they are); tensors already in ``dtype``
    are the same objects, so an fp32 edit of an fp32 base is returned bit-for-bit."""
    if dtype is None:
        return dict(edit)
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in edit.items()}


def save_edit(edit: Mapping[str, torch.Tensor], path, metadata: Mapping | None = None,
              dtype: torch.dtype | None = None) -> Path:
    """Save an edit as safetensors, atomically (a temporary file in the same folder, then ``os.replace``).

    ``metadata`` should name at least ``method`` and ``concept`` and carry ``hyperparameters`` (a dict); string
    values are stored as they are, anything else as JSON (so ``load_edit`` gives back the same dict). A dataclass
    of hyper-parameters may be passed as is. ``dtype``: store the floating-point tensors in this dtype (the base
    model's, e.g. ``pipe.unet.dtype``: an fp32-trained edit of an fp16 base is saved in fp16) and record it as
    ``metadata["dtype"]``; None stores them as they are."""
    from dataclasses import asdict, is_dataclass

    from safetensors.torch import save_file

    metadata = dict(metadata or {})
    missing = [k for k in ("method", "concept") if k not in metadata]
    if missing:
        raise ValueError(f"metadata must name {missing}: an edit file should say what it erases and how")
    if is_dataclass(metadata.get("hyperparameters")):
        metadata["hyperparameters"] = asdict(metadata["hyperparameters"])
    if not edit:
        raise ValueError("refusing to save an empty edit")
    if dtype is not None:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        edit = cast_edit(edit, dtype)
        metadata["dtype"] = dtype_name(dtype)
    tensors = {}
    for name, value in edit.items():
        if not torch.is_tensor(value):
            raise TypeError(f"{name!r}: value is a {type(value).__name__}, not a tensor")
        tensors[name] = value.detach().to("cpu").contiguous().clone()  # clone: safetensors refuses shared storage
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=_encode_metadata(metadata))
    return path


def load_edit(path, device="cpu") -> tuple[Edit, dict]:
    """``(edit, metadata)`` of a file written by :func:`save_edit` (JSON values decoded back).

    A safetensors file from the reference code (only tensors, no metadata) loads too, with ``metadata == {}``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no edit file at {path}")
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        raw = dict(f.metadata() or {})
        edit = {name: f.get_tensor(name) for name in f.keys()}
    json_keys = json.loads(raw.pop(_JSON_KEYS, "[]"))
    raw.pop("format", None)
    metadata = {k: (json.loads(v) if k in json_keys else v) for k, v in raw.items()}
    return edit, metadata


__all__ = ["AppliedEdit", "Edit", "EditError", "apply_edit", "cast_edit", "dtype_name", "edit_size_bytes", "edited",
           "extract_edit", "load_edit", "save_edit"]
