"""Attention probes: diffusers attention processors that scale the attention logits and record what a detector
reads, installed on chosen layers of a UNet for the duration of a ``with`` block.

Who needs what
    * SET (:mod:`.set`, arXiv 2604.12446) runs the UNet with a temperature ``lambda`` on the attention logits,
      ``softmax(lambda * Q K^T / sqrt(d_h)) V``, and reads the attention output before the output projection (``A V``,
      ``(B, H, Q, d_h)``) of a few cross-attention layers, conditional branch only (``specs/set.md`` 2, 3, 9.1).
    * T2IShield (:mod:`.t2ishield`) reads the cross-attention maps ``A`` themselves, ``(B, H, Q, K)``.

How
    :class:`ProbeAttnProcessor` is a drop-in replacement of diffusers' ``AttnProcessor2_0`` (same call signature,
    same computation: spatial norm, group norm, cross-attention norm, q/k norms, attention mask, residual connection,
    output rescaling), with a ``scale`` on the logits and optional recording. SET's official code monkey-patches every
    ``Attention.forward``; a processor does the same job through diffusers' own extension point, touches only the
    layers it is installed on, and comes off cleanly. :func:`probe_attention` installs processors (one per layer,
    sharing one :class:`AttentionRecorder`) with each module's ``set_processor`` and puts the original processors
    back when the block ends, also when it raises.

    With ``scale == 1`` and nothing recorded the processor runs exactly the default computation (the same
    ``scaled_dot_product_attention`` call), so a UNet with probes installed gives the same outputs
    (``tests/test_set.py``). Recording the maps needs the explicit ``softmax(Q K^T)`` (SDPA never forms it); that
    path computes the logits and the softmax in float32, so an fp16 model at ``lambda = 20`` does not overflow.

Layers and their resolution
    :func:`attention_layers` names the ``Attention`` modules of a UNet by kind (``"cross"``: ``attn2``, reading the
    text; ``"self"``: ``attn1``), block (down / mid / up) and query resolution. The resolution comes from the module
    structure, not from a forward pass: a down block ``i`` works at ``sample_size / 2^(downsamplers before it)``, the
    mid block after all of them, an up block ``j`` at the mid resolution times ``2^(upsamplers before it)``. On
    SD v1.4 at 512 px (``sample_size`` 64) the query length 256 of SET's layers is ``resolution=16``:
    ``down_blocks.2.attentions.{0,1}`` and ``up_blocks.1.attentions.{0,1,2}``. On the toy UNet (``sample_size`` 8)
    cross-attention sits at 8x8 (``down_blocks.0``, ``up_blocks.1``) and 4x4 (``down_blocks.1``, ``up_blocks.0``, the
    mid block).

Limits
    * Recording with ``cond_only=True`` keeps the second half of the batch: the UNet batch must be exactly
      ``[uncond; cond]`` (diffusers' pipelines and :mod:`erasure_lib.sampling` order it so), without padding rows.
    * A layer with another processor already installed (an IP-Adapter's, a LoRA's custom processor) is refused:
      the probe would silently drop what that processor adds. A probe inside another probe is allowed.
    * The recorder is not thread-safe: run probed forward passes on one thread (not through
      :func:`erasure_lib.sampling.generate`'s worker threads, which share the UNet).
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("cross", "self")
BLOCKS = ("down", "mid", "up")
# processors a probe may replace: they compute plain softmax attention, which the probe reproduces
_REPLACEABLE = ("AttnProcessor2_0", "AttnProcessor", "ProbeAttnProcessor")


# --- which layers -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionLayer:
    """One ``Attention`` module of a UNet: its module name, ``kind`` (``"cross"`` / ``"self"``), ``block``
    (``"down"`` / ``"mid"`` / ``"up"``), ``block_index`` (None for the mid block), query ``resolution`` ``(h, w)`` in
    latent pixels and ``query_length = h * w``, ``heads`` and ``head_dim``."""

    name: str
    kind: str
    block: str
    block_index: int | None
    resolution: tuple[int, int]
    query_length: int
    heads: int
    head_dim: int


def _unet(target) -> torch.nn.Module:
    unet = getattr(target, "unet", target)
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"expected a diffusers pipeline with a .unet or a UNet module, got {type(target).__name__}")
    return unet


def _attention_modules(unet) -> dict[str, torch.nn.Module]:
    from diffusers.models.attention_processor import Attention
    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}


def _sides(sample_size) -> tuple[int, int]:
    if isinstance(sample_size, (tuple, list)):
        return int(sample_size[0]), int(sample_size[1])
    return int(sample_size), int(sample_size)


def _block_resolutions(unet) -> dict[tuple[str, int | None], tuple[int, int]]:
    """``(block, index) -> (h, w)`` of every down / mid / up block, from where the down- and upsamplers are."""
    h, w = _sides(unet.config.sample_size)
    out = {}
    for i, block in enumerate(unet.down_blocks):
        out[("down", i)] = (h, w)
        if getattr(block, "downsamplers", None):
            h, w = -(-h // 2), -(-w // 2)  # a stride-2 conv with padding 1 rounds up
    out[("mid", None)] = (h, w)
    for j, block in enumerate(unet.up_blocks):
        out[("up", j)] = (h, w)
        if getattr(block, "upsamplers", None):
            h, w = 2 * h, 2 * w
    return out


_NAME = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")


def attention_layer_info(target) -> list[AttentionLayer]:
    """Every ``Attention`` module in the down, mid and up blocks of a UNet (or a pipeline's), in module order, with
    its kind, block and query resolution (see the module docstring; no forward pass)."""
    unet = _unet(target)
    resolutions = _block_resolutions(unet)
    layers = []
    for name, module in _attention_modules(unet).items():
        match = _NAME.match(name)
        if match is None:  # e.g. attention outside the three block groups: not addressed by the probes
            continue
        if match.group(3):
            block, index = "mid", None
        else:
            block, index = ("down" if match.group(1) == "down_blocks" else "up"), int(match.group(2))
        kind = "cross" if getattr(module, "is_cross_attention", name.endswith("attn2")) else "self"
        h, w = resolutions[(block, index)]
        inner = module.to_q.out_features
        layers.append(AttentionLayer(name=name, kind=kind, block=block, block_index=index, resolution=(h, w),
                                     query_length=h * w, heads=module.heads, head_dim=inner // module.heads))
    return layers


def attention_layers(target, kind: str = "cross", resolution: int | tuple[int, int] | None = None,
                     blocks: Sequence[str] = BLOCKS, query_length: int | None = None) -> list[str]:
    """Module names of the UNet's ``Attention`` layers of one ``kind`` (``"cross"``: ``attn2``; ``"self"``:
    ``attn1``; ``"all"``: both) in ``blocks`` (any of ``"down"``, ``"mid"``, ``"up"``), optionally only those whose
    queries are at ``resolution`` (a side, or ``(h, w)``) or have ``query_length`` positions.

    ``attention_layers(sd_unet, "cross", resolution=16, blocks=("down", "up"))`` gives SET's five layers of query
    length 256 on SD v1.4 at 512 px."""
    if kind not in (*KINDS, "all"):
        raise ValueError(f"kind must be one of {KINDS + ('all',)}, got {kind!r}")
    blocks = (blocks,) if isinstance(blocks, str) else tuple(blocks)
    bad = [b for b in blocks if b not in BLOCKS]
    if bad:
        raise ValueError(f"blocks must be among {BLOCKS}, got {bad}")
    want = None if resolution is None else _sides(resolution)
    return [layer.name for layer in attention_layer_info(target)
            if (kind == "all" or layer.kind == kind) and layer.block in blocks
            and (want is None or layer.resolution == want)
            and (query_length is None or layer.query_length == int(query_length))]


def check_layers(target, names: Iterable[str]) -> list[str]:
    """``names`` as a list, after checking that each is an ``Attention`` module of the UNet; a ValueError lists the
    valid names (and the closest match) otherwise."""
    names = list(names)
    valid = [layer.name for layer in attention_layer_info(target)]
    unknown = [n for n in names if n not in valid]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, valid, n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"not an attention layer of this UNet: {', '.join(hints)}. Valid layers:\n  "
                         + "\n  ".join(valid))
    return names


# --- the processor ------------------------------------------------------------------------------------------

class AttentionRecorder:
    """What the probes of one :func:`probe_attention` block recorded, and the knob of their scales.

    ``outputs[name]``: one tensor ``(B, H, Q, d_h)`` per forward call of layer ``name`` (``A V`` before the output
    projection); ``probs[name]``: one ``(B, H, Q, K)`` per call (the attention maps, float32). ``B`` is the
    conditional half of the batch when the probes were installed with ``cond_only=True``. Tensors stay on the
    model's device, detached; :meth:`clear` drops them (call it between steps to bound memory)."""

    def __init__(self):
        self.processors: dict[str, ProbeAttnProcessor] = {}
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.probs: dict[str, list[torch.Tensor]] = {}

    @property
    def layers(self) -> list[str]:
        return list(self.processors)

    def set_scale(self, scale: float | Mapping[str, float], layers: Iterable[str] | None = None) -> None:
        """Set the logit temperature of the probes on ``layers`` (default: all installed) to ``scale``, or give a
        ``{layer: scale}`` mapping."""
        if isinstance(scale, Mapping):
            items = dict(scale)
        else:
            items = {name: scale for name in (self.processors if layers is None else layers)}
        unknown = [n for n in items if n not in self.processors]
        if unknown:
            raise ValueError(f"no probe installed on {unknown}; installed: {self.layers}")
        for name, value in items.items():
            self.processors[name].scale = _check_scale(value)

    def scales(self) -> dict[str, float]:
        return {name: p.scale for name, p in self.processors.items()}

    def clear(self) -> None:
        for store in (self.outputs, self.probs):
            for calls in store.values():
                calls.clear()

    def _keep(self, store: dict, name: str, value: torch.Tensor) -> None:
        store.setdefault(name, []).append(value.detach())

    def __repr__(self):
        n_out = sum(len(v) for v in self.outputs.values())
        n_probs = sum(len(v) for v in self.probs.values())
        return f"AttentionRecorder({len(self.processors)} layers, {n_out} outputs, {n_probs} maps recorded)"


def _check_scale(scale) -> float:
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"an attention scale must be a finite positive number, got {scale}")
    return scale


class ProbeAttnProcessor:
    """``AttnProcessor2_0`` with a temperature on the logits, ``softmax(scale * Q K^T / sqrt(d_h)) V``, that can
    record ``A V`` (``record_output``) and the maps ``A`` (``record_probs``) of its layer into ``recorder`` under
    ``name``; ``cond_only`` keeps the second half of the batch (the conditional branch of ``[uncond; cond]``)."""

    def __init__(self, name: str = "", scale: float = 1.0, record_output: bool = False, record_probs: bool = False,
                 cond_only: bool = False, recorder: AttentionRecorder | None = None):
        if (record_output or record_probs) and recorder is None:
            raise ValueError("recording needs a recorder")
        self.name = name
        self.scale = _check_scale(scale)
        self.record_output = record_output
        self.record_probs = record_probs
        self.cond_only = cond_only
        self.recorder = recorder

    def __repr__(self):
        return (f"ProbeAttnProcessor({self.name!r}, scale={self.scale}, record_output={self.record_output}, "
                f"record_probs={self.record_probs}, cond_only={self.cond_only})")

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cond_only:
            return x
        if len(x) % 2:
            raise ValueError(f"cond_only: layer {self.name!r} got an odd batch of {len(x)} rows; the UNet batch must "
                             "be exactly [uncond; cond]")
        return x[len(x) // 2:]

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        # the lines below follow AttnProcessor2_0.__call__ (diffusers 0.42) step for step, so that scale 1 is the
        # default processor; only the attention itself differs
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.record_probs:
            probs = self._probs(query, key, attention_mask, head_dim)
            hidden_states = torch.matmul(probs.to(value.dtype), value)
            self.recorder._keep(self.recorder.probs, self.name, self._rows(probs))
        else:
            # AttnProcessor2_0 lets SDPA apply its default 1/sqrt(d_h) (it ignores attn.scale): so does scale 1 here
            sdpa_scale = None if self.scale == 1.0 else self.scale / math.sqrt(head_dim)
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=0.0, is_causal=False, scale=sdpa_scale)
        if self.record_output:
            self.recorder._keep(self.recorder.outputs, self.name, self._rows(hidden_states))

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)  # output projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _probs(self, query, key, attention_mask, head_dim) -> torch.Tensor:
        """``softmax(scale * Q K^T / sqrt(d_h) + mask)`` in float32 ``(B, H, Q, K)``, with SDPA's mask semantics
        (a boolean mask keeps the True positions; a float mask is added to the logits)."""
        logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * (self.scale / math.sqrt(head_dim))
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                logits = logits.masked_fill(~attention_mask, float("-inf"))
            else:
                logits = logits + attention_mask.float()
        return logits.softmax(dim=-1)


# --- installing probes for a block of code ------------------------------------------------------------------

def _selection(spec, layers: list[str], what: str) -> set[str]:
    """``True`` -> every probed layer; ``False`` / None / () -> none; else the given names (each must be probed)."""
    if spec is True:
        return set(layers)
    if not spec:
        return set()
    names = [spec] if isinstance(spec, str) else list(spec)
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"{what} names layers without a probe: {missing}; probed layers: {layers}")
    return set(names)


@contextmanager
def probe_attention(target, layers: Iterable[str], scale: float | Mapping[str, float] = 1.0,
                    record_output: bool | Iterable[str] = False, record_probs: bool | Iterable[str] = False,
                    cond_only: bool = True) -> Iterator[AttentionRecorder]:
    """``with probe_attention(pipe, layers, ...) as rec:`` installs a :class:`ProbeAttnProcessor` on each named
    attention layer of the UNet of ``target`` (a pipeline or a UNet) and yields their :class:`AttentionRecorder`;
    the original processors are put back when the block ends, also when it raises.

    ``scale``: the initial logit temperature, one for all or ``{layer: scale}`` (layers left out: 1); change it
    inside the block with ``rec.set_scale``. ``record_output`` / ``record_probs``: ``True`` for every probed layer,
    or the names of some. ``cond_only``: record the conditional half of each ``[uncond; cond]`` batch."""
    unet = _unet(target)
    layers = check_layers(unet, dict.fromkeys(layers))  # dict: unique, in the given order
    modules = _attention_modules(unet)
    refused = {n: type(modules[n].processor).__name__ for n in layers
               if type(modules[n].processor).__name__ not in _REPLACEABLE}
    if refused:
        raise ValueError("these layers have a non-default attention processor, which a probe would silently "
                         f"replace: {refused}. Unload the adapter (e.g. pipe.unload_ip_adapter()) first")
    scales = dict(scale) if isinstance(scale, Mapping) else {n: scale for n in layers}
    extra = [n for n in scales if n not in layers]
    if extra:
        raise ValueError(f"scale given for layers without a probe: {extra}")
    outputs = _selection(record_output, layers, "record_output")
    probs = _selection(record_probs, layers, "record_probs")

    recorder = AttentionRecorder()
    for name in layers:
        recorder.processors[name] = ProbeAttnProcessor(name, scales.get(name, 1.0), name in outputs, name in probs,
                                                       cond_only, recorder)
    originals = {name: modules[name].processor for name in layers}
    try:
        for name in layers:
            modules[name].set_processor(recorder.processors[name])
        yield recorder
    finally:
        for name, processor in originals.items():
            modules[name].set_processor(processor)


__all__ = ["AttentionLayer", "AttentionRecorder", "BLOCKS", "KINDS", "ProbeAttnProcessor", "attention_layer_info",
           "attention_layers", "check_layers", "probe_attention"]
