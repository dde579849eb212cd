"""Concept-erasure methods. Each module has one public ``erase(pipe, ...)`` that returns an *edit*: only the
changed UNet weights, ``dict[str, torch.Tensor]`` keyed by diffusers parameter names (see :mod:`.edits`).

* :mod:`.uce`: Unified Concept Editing, closed-form edit of every cross-attention ``to_k``/``to_v``;
* :mod:`.esd`: Erased Stable Diffusion, negative-guidance fine-tuning (ESD-x, ESD-x-strict, ESD-u, ...);
* :mod:`.co_erasing`: Co-Erasing, ESD-u followed by text + refined image-token erasure;
* :mod:`.trce`: TRCE, the [EoT] remap of every cross-attention ``to_k``/``to_v`` (closed form), then denoising
  trajectory steering of ``attn1`` and ``attn2.to_q``.

Usage::

    from erasure_lib.methods import edited, esd, save_edit, uce
    edit = uce.erase(pipe, ["a nude person"], guide="a person")
    save_edit(edit, "uce-nude.safetensors", uce.metadata(["a nude person"], guide="a person"))
    with edited(pipe, edit):        # or: handle = apply_edit(pipe, edit); ...; handle.restore()
        images = generate(pipe, prompts, seeds)
"""
from .edits import (AppliedEdit, Edit, EditError, apply_edit, edit_size_bytes, edited, extract_edit, load_edit,
                    save_edit)

__all__ = ["AppliedEdit", "Edit", "EditError", "apply_edit", "edit_size_bytes", "edited", "extract_edit",
           "load_edit", "save_edit"]
