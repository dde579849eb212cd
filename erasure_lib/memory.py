"""How much GPU memory ESD and Co-Erasing training need on Stable Diffusion v1.4: *computed*, not measured.

Issue 10 asks whether ESD-u and Co-Erasing fit a free-Colab 16 GB T4. This module answers with a budget computed
from the models' exact shapes. Every number is a byte count; nothing here runs on, or needs, a GPU.

What is counted (:func:`training_memory`)
    * **Weights kept on the GPU.** The frozen UNet, in the base dtype: fp16 with autocast, fp32 without. Training
      swaps the trained tensors inside it (:class:`erasure_lib.methods.esd.TrainedTensors`), so the frozen model
      is this same module and there is no second UNet. The text encoder and VAE of every pipeline. For
      Co-Erasing, also the IP-Adapter (its ``to_k_ip``/``to_v_ip`` and image projection) and its OpenCLIP
      ViT-H/14 image encoder. Two pipelines (``pipelines="two"``, how chapter 10 loads them) hold two UNets,
      two text encoders and two VAEs. ``"one"`` is ``ip_pipe = pipe`` with the IP-Adapter loaded into it.
    * **Trained tensors.** fp32 master copies, their fp32 gradients, and the optimizer states:
      - Adam: 2 fp32 per parameter.
      - Adafactor (no first moment): the second moment factored over the last two dimensions. A matrix keeps
        a row and a column vector; a 3x3 conv kernel keeps 2/3 of a full moment; a vector keeps a full one.
      - Adam8bit: 2 bytes per parameter plus fp32 block scales, for tensors of at least 4096 elements
        (bitsandbytes' rule). Smaller tensors keep fp32 states.
    * **Activations of one training iteration**, at SD's size: batch per the config, latent 4x64x64, text states
      77x768, plus the IP-Adapter's 4 image tokens for Co-Erasing's stage 2. They are counted, not guessed. The
      real SD v1.4 UNet is built on the ``meta`` device, which gives shapes and dtypes but no data, so it is
      cheap. One forward and backward of it run under a dispatch mode that records every tensor it creates and
      follows each storage with a weak reference. *Activations* are the bytes alive when the forward ends: what
      autograd saved for the backward, plus the inputs that gradient checkpointing keeps. Without
      checkpointing this equals what ``torch.autograd.graph.saved_tensors_hooks`` see (deduplicated by
      storage; ``tests/test_memory.py``). The *training-step peak* is the maximum alive during the forward and
      backward: activations, their gradients, parameter gradients, and the recomputed blocks under
      checkpointing.
    * **Sampling and frozen-model calls** (no grad). Examples: ESD's pool of ``x_t`` from the trained model,
      Co-Erasing's concept images with their VAE decode, and the batched targets. Each is one phase, counted
      the same way. The peak is the largest phase.

Two things a meta-device forward does not do as CUDA does are emulated, and say so:
    * ``scaled_dot_product_attention`` runs as PyTorch's memory-efficient kernel. That is what a T4 gets; flash
      attention needs sm80. The kernel saves ``q, k, v``, the output and the log-sum-exp, not the 4096x4096
      attention matrix.
    * With autocast, CUDA autocast's casts are applied by hand, for the ops the UNet uses:
      - fp16 for ``linear``, ``conv`` and attention;
      - fp32 for ``group_norm``, ``layer_norm`` and ``mse_loss``;
      - the widest input dtype for ``cat``.
      There is no weight cache, as in training (:func:`erasure_lib.methods.esd.autocast` turns it off).

Not counted: the CUDA context (about 0.3 to 0.5 GB, outside PyTorch's allocator), allocator fragmentation,
cuDNN/cuBLAS workspaces, and everything that stays on the CPU (the recorded ``x_t`` pool, the targets). Hence
the margin :data:`RESERVE`: a method *fits* a card of :data:`GPUS` when its total leaves that much free.

:func:`validate_on_toy` compares the same estimator with a *measured* peak on the CPU. The toy zoo trains in
fp32 there, and the peak comes from torch's profiler allocation timeline.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

# CompVis/stable-diffusion-v1-4, unet/config.json (the keys that differ from diffusers' defaults)
SD14_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD14_UNET_PARAMETERS = 859_520_964
# text_encoder/config.json (openai/clip-vit-large-patch14's text tower): 123,060,480 parameters
SD14_TEXT_ENCODER_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
                            "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
                            "hidden_act": "quick_gelu", "projection_dim": 768}
# vae/config.json: 83,653,863 parameters
SD14_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
                   "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
                   "layers_per_block": 2, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
                   "sample_size": 512}
# h94/IP-Adapter models/image_encoder/config.json (OpenCLIP ViT-H/14, what Co-Erasing uses): 632,076,800 parameters
IP_ADAPTER_IMAGE_ENCODER_CONFIG = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16,
                                   "num_hidden_layers": 32, "patch_size": 14, "image_size": 224,
                                   "projection_dim": 1024, "hidden_act": "gelu", "layer_norm_eps": 1e-05}
IP_ADAPTER_TOKENS = 4  # ip-adapter_sd15: 4 image tokens from a Linear(1024 -> 4 x 768) + LayerNorm(768)

GIB = 1024 ** 3
# What torch.cuda.get_device_properties(0).total_memory reports (approximately) on the two Colab cards
GPUS = {"T4 16 GB": 15_835_660_288, "A100 40 GB": 42_481_811_456}
RESERVE = 1 * GIB  # CUDA context, cuDNN/cuBLAS workspaces, allocator fragmentation (not counted above)

METHODS = ("ESD-x", "ESD-u", "Co-Erasing")
_FP16, _FP32 = torch.float16, torch.float32


def _bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# --- the models, on the meta device --------------------------------------------------------------------------------

def _module_to(module, dtype):
    """``nn.Module.to(dtype)`` itself: diffusers' override warns about fp32-kept modules on every cast (it has none here)."""
    return torch.nn.Module.to(module, dtype)


def meta_unet(unet_config: Mapping = SD14_UNET_CONFIG, ip_tokens: int = 0):
    """The UNet of ``unet_config`` on the meta device (shapes, no data); with ``ip_tokens`` > 0, with IP-Adapter
    processors on every ``attn2`` and the image tokens passed ready-made (as Co-Erasing's stage 2 passes them)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**{k: v for k, v in dict(unet_config).items() if not k.startswith("_")})
        if ip_tokens:
            from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

            from .methods.co_erasing import _GivenTokens
            processors = {}
            for name, proc in unet.attn_processors.items():
                if ".attn2." in f".{name}":
                    attn = unet.get_submodule(name.removesuffix(".processor"))
                    proc = IPAdapterAttnProcessor2_0(attn.to_k.out_features, attn.to_k.in_features,
                                                     num_tokens=(ip_tokens,), scale=1.0)
                processors[name] = proc
            unet.set_attn_processor(processors)
            unet.encoder_hid_proj = _GivenTokens()
            unet.register_to_config(encoder_hid_dim_type="ip_image_proj")
    return unet


def meta_vae(vae_config: Mapping = SD14_VAE_CONFIG):
    """The VAE of ``vae_config`` on the meta device (shapes, no data)."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL(**{k: v for k, v in dict(vae_config).items() if not k.startswith("_")})


@functools.lru_cache(maxsize=None)
def _component_parameters() -> dict[str, int]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        models = {"text_encoder": CLIPTextModel(CLIPTextConfig(**SD14_TEXT_ENCODER_CONFIG)),
                  "vae": meta_vae(),
                  "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**IP_ADAPTER_IMAGE_ENCODER_CONFIG))}
    return {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}


def sd14_component_parameters() -> dict[str, int]:
    """Parameter counts of SD v1.4's text encoder and VAE and of the IP-Adapter's image encoder, exact (built on
    the meta device from their configs)."""
    return dict(_component_parameters())


def ip_adapter_parameters(unet_config: Mapping = SD14_UNET_CONFIG, tokens: int = IP_ADAPTER_TOKENS,
                          image_embed_dim: int = 1024) -> int:
    """Parameters of an ``ip-adapter_sd15``-style adapter: ``to_k_ip``/``to_v_ip`` (no bias) on every ``attn2``
    plus the image projection ``Linear(image_embed_dim -> tokens x d) + LayerNorm(d)``."""
    unet = meta_unet(unet_config)
    d = unet.config.cross_attention_dim
    kv = sum(2 * m.to_k.in_features * m.to_k.out_features for n, m in unet.named_modules() if n.endswith("attn2"))
    return kv + image_embed_dim * tokens * d + tokens * d + 2 * d


def _trained_names(unet, parameter_set: str) -> list[str]:
    """The UNet parameters a run trains: an ESD parameter set (:func:`erasure_lib.methods.esd.
    trainable_parameter_names`) or ``"trce-stage2"`` (:func:`erasure_lib.methods.trce.stage2_parameter_names`)."""
    if parameter_set == "trce-stage2":
        from .methods.trce import stage2_parameter_names
        return stage2_parameter_names(unet)
    from .methods.esd import trainable_parameter_names
    return trainable_parameter_names(unet, parameter_set)


def parameter_counts(parameter_set: str, unet_config: Mapping = SD14_UNET_CONFIG) -> dict:
    """``{"unet": all, "trained": the set's, "shapes": [shape of every trained tensor]}`` of the UNet of
    ``unet_config``, the trained set chosen by :func:`erasure_lib.methods.esd.trainable_parameter_names` (or
    ``"trce-stage2"``: TRCE's stage 2, :func:`_trained_names`)."""
    unet = meta_unet(unet_config)
    params = dict(unet.named_parameters())
    names = _trained_names(unet, parameter_set)
    return {"unet": sum(p.numel() for p in params.values()), "trained": sum(params[n].numel() for n in names),
            "shapes": [tuple(params[n].shape) for n in names]}


def optimizer_state_bytes(optimizer: str, shapes) -> int:
    """Bytes of the optimizer states of fp32 parameters of these shapes (see the module docstring)."""
    total = 0
    for shape in shapes:
        n = math.prod(shape)
        if optimizer == "adam":
            total += 8 * n                                   # exp_avg, exp_avg_sq
        elif optimizer == "adafactor":                       # exp_avg_sq_row / _col (beta1=None: no exp_avg)
            total += 4 * (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]) if len(shape) >= 2 else 4 * n
        elif optimizer == "adam8bit":                        # uint8 states + fp32 absmax per 256-element block
            total += 2 * n + 8 * math.ceil(n / 256) if n >= 4096 else 8 * n
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
    return total


# --- counting tensors on the meta device ---------------------------------------------------------------------

class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages created inside the mode: alive now (``live``) and at most (``peak``). ``existing``:
    tensors made before (the model's weights, the inputs), whose storages views inside must not count."""

    def __init__(self, existing=()):
        super().__init__()
        self._refs: dict[int, tuple] = {}
        self._existing = {t.untyped_storage()._cdata: t for t in existing}  # held: their keys stay theirs
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self._refs.items() if ref.expired()]:
            self.live -= self._refs.pop(key)[1]
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self._refs and key not in self._existing:
                    from torch.multiprocessing.reductions import StorageWeakRef
                    self._refs[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        return out


def _cast(dtype, args, kwargs):
    cast = lambda x: x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
    return tree_map(cast, args), tree_map(cast, kwargs)


@contextlib.contextmanager
def _as_on_cuda(autocast: bool):
    """What the UNet's ops do on a CUDA GPU, on the meta device, inside the block: attention by the
    memory-efficient SDPA kernel and (``autocast``) CUDA autocast's fp16 / fp32 casts (module docstring).

    The functions are replaced in ``torch.nn.functional`` (and ``torch.cat``) for the duration of the block,
    not intercepted by a ``TorchFunctionMode``: gradient checkpointing recomputes blocks inside the backward,
    where a mode's handler would have popped the mode. Single-threaded use only."""
    originals = {name: getattr(F, name) for name in ("linear", "conv1d", "conv2d", "group_norm", "layer_norm",
                                                       "mse_loss", "scaled_dot_product_attention")}
    cat = torch.cat

    def cast_to(dtype, fn):
        def wrapped(*args, **kwargs):
            return fn(*_cast(dtype, args, kwargs)[0], **_cast(dtype, args, kwargs)[1])
        return wrapped

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is not None or dropout_p or is_causal or kwargs:
            return originals["scaled_dot_product_attention"](query, key, value, attn_mask, dropout_p, is_causal,
                                                             scale=scale, **kwargs)
        if autocast:
            query, key, value = (x.to(_FP16) for x in (query, key, value))
        grad = torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))
        return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, grad, scale=scale)[0]

    def promoted_cat(tensors, *args, **kwargs):
        dtypes = {x.dtype for x in tensors if isinstance(x, torch.Tensor) and x.is_floating_point()}
        if len(dtypes) > 1:
            tensors = [x.to(_FP32) if x.is_floating_point() else x for x in tensors]
        return cat(tensors, *args, **kwargs)

    patches = {"scaled_dot_product_attention": sdpa}
    if autocast:
        patches.update({name: cast_to(_FP16, originals[name]) for name in ("linear", "conv1d", "conv2d")})
        patches.update({name: cast_to(_FP32, originals[name]) for name in ("group_norm", "layer_norm", "mse_loss")})
    try:
        for name, fn in patches.items():
            setattr(F, name, fn)
        if autocast:
            torch.cat = promoted_cat
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)
        torch.cat = cat


def _inputs(unet, batch: int, text_tokens: int, ip_tokens: int):
    cfg = unet.config
    size = cfg.sample_size
    x = torch.empty(batch, cfg.in_channels, size, size, device="meta")
    t = torch.full((batch,), 500, dtype=torch.long, device="meta")
    c = torch.empty(batch, text_tokens, cfg.cross_attention_dim, device="meta")
    extra = {}
    if ip_tokens:
        extra["added_cond_kwargs"] = {"image_embeds": [torch.empty(batch, ip_tokens, cfg.cross_attention_dim,
                                                                   device="meta")]}
    return x, t, c, extra


@functools.lru_cache(maxsize=None)
def _training_step(config_json: str, parameter_set: str, batch: int, autocast: bool, checkpointing: bool,
                   ip_tokens: int, text_tokens: int) -> dict:
    """Activations (alive when the forward ends), the step's peak (forward + backward) and, without
    checkpointing, the bytes saved by autograd (saved-tensor hooks, deduplicated by storage) of one training
    iteration of the trained set, as :func:`erasure_lib.methods.esd.erase` runs it."""
    from .methods.esd import TrainedTensors

    unet_config = json.loads(config_json)
    names = _trained_names(meta_unet(unet_config), parameter_set)
    unet = _module_to(meta_unet(unet_config, ip_tokens), _FP16 if autocast else _FP32)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    saved: dict[int, int] = {}

    def pack(x):  # storages autograd saves that the forward made (not the weights it also saves)
        s = x.untyped_storage()
        if s._cdata not in live._existing:
            saved[s._cdata] = s.nbytes()
        return x

    with TrainedTensors(unet, names):
        x, t, c, extra = _inputs(unet, batch, text_tokens, ip_tokens)
        target = torch.empty(batch, unet.config.out_channels, *x.shape[2:], device="meta")
        live = _LiveBytes([*unet.parameters(), *unet.buffers(), x, t, c, target, *tree_leaves(extra)])
        with _as_on_cuda(autocast), live:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
                pred = unet(x, t, encoder_hidden_states=c, **extra).sample
                loss = F.mse_loss(pred.float(), target)
            activations = live.live
            loss.backward()
    return {"activations": activations, "step_peak": live.peak,
            "saved_by_autograd": None if checkpointing else sum(saved.values())}


@functools.lru_cache(maxsize=None)
def _unet_inference(config_json: str, rows: int, fp16: bool, ip_tokens: int, text_tokens: int) -> int:
    """Peak bytes of one no-grad UNet call on ``rows`` rows (sampling, frozen-model targets)."""
    unet = _module_to(meta_unet(json.loads(config_json), ip_tokens), _FP16 if fp16 else _FP32).eval()
    dtype = _FP16 if fp16 else _FP32
    x, t, c, extra = _inputs(unet, rows, text_tokens, ip_tokens)
    extra = tree_map(lambda v: v.to(dtype) if isinstance(v, torch.Tensor) else v, extra)
    x, c = x.to(dtype), c.to(dtype)
    live = _LiveBytes([*unet.parameters(), *unet.buffers(), x, t, c, *tree_leaves(extra)])
    with torch.no_grad(), _as_on_cuda(False), live:
        unet(x, t, encoder_hidden_states=c, **extra)
    return live.peak


@functools.lru_cache(maxsize=None)
def _vae_decode(vae_json: str, latent: int, images: int, fp16: bool) -> int:
    """Peak bytes of decoding ``images`` latents of ``latent`` x ``latent`` with the VAE, no grad."""
    dtype = _FP16 if fp16 else _FP32
    vae = _module_to(meta_vae(json.loads(vae_json)), dtype).eval()
    z = torch.empty(images, vae.config.latent_channels, latent, latent, device="meta", dtype=dtype)
    live = _LiveBytes([*vae.parameters(), *vae.buffers(), z])
    with torch.no_grad(), _as_on_cuda(False), live:
        vae.decode(z)
    return live.peak


# --- the budget ----------------------------------------------------------------------------------------------------

def _config(method: str, config):
    from .methods import co_erasing, esd

    defaults = {"ESD-x": lambda: esd.ESDConfig.sd14("esd-x"), "ESD-u": lambda: esd.ESDConfig.sd14("esd-u"),
                "Co-Erasing": co_erasing.CoErasingConfig.sd14}
    if method not in defaults:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    config = defaults[method]() if config is None else config
    kind = co_erasing.CoErasingConfig if method == "Co-Erasing" else esd.ESDConfig
    if not isinstance(config, kind):
        raise TypeError(f"{method} takes a {kind.__name__}, got {type(config).__name__}")
    return config


def training_memory(method: str, config=None, unet_config: Mapping = SD14_UNET_CONFIG, *, autocast: bool = True,
                    gradient_checkpointing: bool | None = None, optimizer: str | None = None,
                    pipelines: str = "two", components: Mapping[str, int] | None = None,
                    vae_config: Mapping | None = SD14_VAE_CONFIG, text_tokens: int = 77) -> dict:
    """The computed (not measured) peak GPU memory of training ``method`` (``"ESD-x"``, ``"ESD-u"``,
    ``"Co-Erasing"``) with ``config`` (default: the method's ``.sd14()`` preset) on the UNet of ``unet_config``
    (default: SD v1.4's), as byte counts (module docstring).

    ``autocast``: an fp16 base trained under autocast with fp32 masters of the trained tensors (the sd14
    profile on CUDA). False means an fp32 pipeline, where everything is fp32. ``gradient_checkpointing`` and
    ``optimizer`` override the config's values. ``pipelines`` applies to Co-Erasing only: ``"two"``
    (``pipe`` and ``ip_pipe`` loaded separately) or ``"one"`` (``ip_pipe is pipe``). ``components``: parameter
    counts of ``text_encoder``, ``vae`` and ``image_encoder`` (default: SD v1.4's and the IP-Adapter's);
    ``vae_config``: the VAE whose decoding of Co-Erasing's concept images is a phase (None: not counted).

    Returns ``computed: True``, the settings, ``unet_parameters``, ``trained_parameters`` and these byte counts:
    ``frozen_weights``, ``trained_master_weights``, ``gradients``, ``optimizer_states``, ``activations`` (at the
    setting) and ``activations_with_checkpointing`` / ``activations_without_checkpointing``,
    ``training_step_peak`` (activations + gradients + transients of one iteration, at the setting),
    ``text_encoder``, ``vae``, ``image_encoder``, ``ip_adapter``, ``phases`` (the total of each phase) and
    ``total`` (the largest phase)."""
    from .methods import co_erasing

    config = _config(method, config)
    co = isinstance(config, co_erasing.CoErasingConfig)
    if pipelines not in ("one", "two"):
        raise ValueError("pipelines must be 'one' or 'two'")
    stage = config.text_stage if co else config      # the ESD run (Co-Erasing: its text stage)
    ckpt = config.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    opt = config.optimizer if optimizer is None else optimizer
    stage_ckpt = stage.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    stage_opt = stage.optimizer if optimizer is None else optimizer
    w = 2 if autocast else 4                           # bytes per frozen weight
    cfg_json = json.dumps(dict(unet_config), sort_keys=True)
    comp = sd14_component_parameters() if components is None else dict(components)
    unet_config = json.loads(cfg_json)

    def run(parameter_set, batch, opt_, ip_tokens=0):  # parameter counts, one step (checkpointing off / on), states
        counts = parameter_counts(parameter_set, unet_config)
        steps = {c: _training_step(cfg_json, parameter_set, batch, autocast, c, ip_tokens, text_tokens)
                 for c in (False, True)}
        return counts, steps, optimizer_state_bytes(opt_, counts["shapes"])

    counts, steps, states = run(stage.parameter_set, stage.batch_size, stage_opt)
    n_unet, n_trained = counts["unet"], counts["trained"]
    masters = 4 * n_trained
    text_encoder, vae = w * comp.get("text_encoder", 0), w * comp.get("vae", 0)
    image_encoder = w * comp.get("image_encoder", 0) if co else 0
    ip_adapter = w * ip_adapter_parameters(unet_config) if co else 0
    copies = 2 if co and pipelines == "two" else 1     # UNets, text encoders, VAEs on the GPU
    residents = copies * (w * n_unet + text_encoder + vae) + image_encoder + ip_adapter
    phases = {}

    # an ESD run: training iterations, the pool of x_t, the frozen model's per-iteration calls
    recorded = stage.timestep == "grid" and stage.sample_from == "frozen" and stage.start_guidance != 1.0
    persistent = residents + masters + states - (w * n_trained if recorded else 0)  # recorded: originals offloaded
    rows = min(stage.pool_size, stage.sample_batch_size) * (1 if stage.start_guidance == 1.0 else 2)
    sampling_copy = w * n_trained if (stage.sample_from == "trained" and autocast) else 0
    prefix = "text stage: " if co else ""
    phases[prefix + "training iteration"] = persistent + steps[stage_ckpt]["step_peak"]
    phases[prefix + "x_t pool"] = residents + masters + states + sampling_copy + _unet_inference(
        cfg_json, rows, autocast, 0, text_tokens)
    if not recorded:
        phases[prefix + "frozen-model call"] = persistent + _unet_inference(cfg_json, 2 * stage.batch_size, autocast,
                                                                            0, text_tokens)
    out_steps, out_states = steps, states
    if co:
        # stage 0: the concept images (generate: batches of 32 with CFG, VAE-decoded 8 at a time)
        gen_rows = 32 * (2 if config.image_guidance > 1 else 1)
        decode = 0 if vae_config is None else _vae_decode(json.dumps(dict(vae_config), sort_keys=True, default=str),
                                                          unet_config["sample_size"], 8, autocast)
        phases["concept images"] = residents + max(_unet_inference(cfg_json, gen_rows, autocast, 0, text_tokens),
                                                   decode)
        # stage 2: theta_ESD in place (originals on the CPU); targets in batches of 32; then training, with the
        # frozen model's copies of the trained tensors on the CPU
        counts2, steps2, states2 = run(config.parameter_set, 1, opt, IP_ADAPTER_TOKENS)  # batch 1 (the code's)
        n2 = counts2["trained"]
        phases["stage 2 x_t pool and targets"] = residents + max(
            _unet_inference(cfg_json, config.pool_size * (1 if config.start_guidance == 1.0 else 2), autocast, 0,
                            text_tokens),
            _unet_inference(cfg_json, 32, autocast, IP_ADAPTER_TOKENS, text_tokens))
        phases["stage 2 training iteration"] = residents - w * n2 + 4 * n2 + states2 + steps2[ckpt]["step_peak"]
        n_trained, masters, out_steps, out_states = n2, 4 * n2, steps2, states2
    setting = ckpt if co else stage_ckpt
    return {
        "computed": True, "method": method, "optimizer": opt if co else stage_opt,
        "gradient_checkpointing": setting, "autocast": autocast, "pipelines": pipelines if co else "one",
        "unet_parameters": n_unet, "trained_parameters": n_trained,
        "frozen_weights": copies * w * n_unet + ip_adapter, "trained_master_weights": masters,
        "gradients": 4 * n_trained, "optimizer_states": out_states,
        "activations": out_steps[setting]["activations"],
        "activations_without_checkpointing": out_steps[False]["activations"],
        "activations_with_checkpointing": out_steps[True]["activations"],
        "training_step_peak": out_steps[setting]["step_peak"],
        "text_encoder": copies * text_encoder, "vae": copies * vae, "image_encoder": image_encoder,
        "ip_adapter": ip_adapter, "phases": phases, "total": max(phases.values()),
    }


def fits(total: int, gpu: str, reserve: int = RESERVE) -> bool:
    """Whether ``total`` bytes leave ``reserve`` free on ``gpu`` (a key of :data:`GPUS`)."""
    return total + reserve <= GPUS[gpu]


def memory_table(optimizers=("adam", "adafactor", "adam8bit"), pipelines=("two", "one"),
                 unet_config: Mapping = SD14_UNET_CONFIG):
    """One row per method (ESD-x, ESD-u, Co-Erasing at their ``.sd14()`` configs; Co-Erasing once per
    ``pipelines`` value), optimizer, gradient checkpointing (on / off) and autocast (fp16 + autocast / all fp32):
    the computed peak in GiB, its main parts, and whether it fits a T4 16 GB and an A100 40 GB
    (:func:`fits`). Computed, not measured (module docstring); the first call takes about a minute."""
    import pandas as pd

    rows = []
    for method in METHODS:
        for pipes in (pipelines if method == "Co-Erasing" else ("one",)):
            for opt in optimizers:
                for autocast in (True, False):
                    for ckpt in (True, False):
                        m = training_memory(method, unet_config=unet_config, autocast=autocast,
                                            gradient_checkpointing=ckpt, optimizer=opt, pipelines=pipes)
                        rows.append({
                            "method": method + (f" ({pipes} pipeline{'s' if pipes == 'two' else ''})"
                                                if method == "Co-Erasing" else ""),
                            "optimizer": opt, "gradient checkpointing": ckpt,
                            "precision": "fp16 + autocast" if autocast else "fp32",
                            "total GiB": m["total"] / GIB,
                            "weights GiB": (m["frozen_weights"] + m["text_encoder"] + m["vae"]
                                            + m["image_encoder"]) / GIB,
                            "trained (master + grad + states) GiB": (m["trained_master_weights"] + m["gradients"]
                                                                    + m["optimizer_states"]) / GIB,
                            "activations GiB": m["activations"] / GIB,
                            **{f"{gpu} fits?": fits(m["total"], gpu) for gpu in GPUS}})
    table = pd.DataFrame(rows)
    table.attrs["note"] = ("computed, not measured: erasure_lib.memory (exact parameter counts, activations counted "
                           f"on the meta device); fits = total + {RESERVE / GIB:.0f} GiB reserve <= the card")
    return table


# --- the estimator against a measurement (toy, CPU) ------------------------------------------------------------

def _profiled_peak(fn) -> int:
    """Peak bytes allocated on the CPU while ``fn()`` runs, above what was allocated before (torch's profiler
    allocation timeline: each op's own allocations, then every free, in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def validate_on_toy(pipe=None, parameter_set: str = "esd-u", batch_size: int = 1, iterations: int = 3) -> dict:
    """The estimator against a measurement, on the toy zoo (fp32, CPU): the peak that ``esd.erase`` allocates
    above the loaded pipeline, measured with torch's profiler, against what :func:`training_memory` computes
    for the same run on the toy UNet without the weights already loaded (masters, optimizer states, the
    largest phase above them). Returns both and ``ratio = computed / measured``."""
    from .loading import load_pipeline
    from .methods import esd

    pipe = load_pipeline("toy", device="cpu") if pipe is None else pipe
    config = esd.ESDConfig(parameter_set=parameter_set, iterations=iterations, batch_size=batch_size, pool_size=8,
                           ddim_steps=10, timestep="bin", sample_from="trained", refresh_every=iterations)
    measured = _profiled_peak(lambda: esd.erase(pipe, "a nude person", config, progress=False))
    m = training_memory("ESD-u" if parameter_set.startswith("esd-u") else "ESD-x", config,
                        unet_config=dict(pipe.unet.config), autocast=False, components={},
                        text_tokens=pipe.tokenizer.model_max_length)
    computed = m["total"] - m["frozen_weights"]
    return {"parameter_set": parameter_set, "batch_size": batch_size, "computed": computed, "measured": measured,
            "ratio": computed / measured, "estimate": m}


# --- sampling, probing and text-encoder training (chapters 01, 11, 20, 30) ----------------------------------------

def pipeline_weights(fp16: bool = True, components: Mapping[str, int] | None = None) -> int:
    """Bytes of SD v1.4's UNet, text encoder and VAE on the GPU (fp16 by default, the sd14 profile on CUDA)."""
    comp = sd14_component_parameters() if components is None else dict(components)
    return (2 if fp16 else 4) * (SD14_UNET_PARAMETERS + comp["text_encoder"] + comp["vae"])


def inference_memory(rows: int, decode_images: int = 8, fp16: bool = True, text_tokens: int = 77) -> dict:
    """The computed peak GPU memory of no-grad UNet calls on ``rows`` rows (a sampling batch with CFG, a detector's
    probe) and of the VAE decoding ``decode_images`` images (0: no decode, as SET's and T2IShield's probes), with
    the pipeline's weights resident: ``{"weights", "unet_call", "decode", "total"}`` in bytes. Hooks that keep a
    layer's output or attention map (SET, T2IShield) hold one call's, small beside the call's own peak."""
    if rows < 1 or decode_images < 0:
        raise ValueError("rows must be >= 1 and decode_images >= 0")
    cfg_json = json.dumps(SD14_UNET_CONFIG, sort_keys=True)
    call = _unet_inference(cfg_json, rows, fp16, 0, text_tokens)
    decode = _vae_decode(json.dumps(SD14_VAE_CONFIG, sort_keys=True), SD14_UNET_CONFIG["sample_size"],
                         decode_images, fp16) if decode_images else 0
    weights = pipeline_weights(fp16)
    return {"weights": weights, "unet_call": call, "decode": decode, "total": weights + max(call, decode)}


@functools.lru_cache(maxsize=None)
def _text_encoder_step(batch: int, text_tokens: int, config_json: str) -> dict:
    """Activations and the step's peak (activations, their gradients and the parameters' gradients) of one fp32
    training step of the text encoder of ``config_json`` on ``batch`` prompts."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = json.loads(config_json)
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**config)).train()
    ids = torch.zeros(batch, text_tokens, dtype=torch.long, device="meta")
    target = torch.empty(batch, text_tokens, config["hidden_size"], device="meta")
    live = _LiveBytes([*model.parameters(), *model.buffers(), ids, target])
    with _as_on_cuda(False), live:
        loss = F.mse_loss(model(ids)[0], target)
        activations = live.live
        loss.backward()
    return {"activations": activations, "step_peak": live.peak}


def text_encoder_training_memory(batch: int, text_tokens: int = 77, fp16_pipeline: bool = True,
                                 config: Mapping = SD14_TEXT_ENCODER_CONFIG) -> dict:
    """The computed peak GPU memory of the text-encoder backdoors' teacher-student training
    (:func:`erasure_lib.backdoors.text_encoder.plant`: an fp32 student copy of the encoder of ``config`` trained with
    AdamW on ``batch`` prompts per step, the clean and the poisoned batch together, beside an fp32 copy of its
    starting values; the teacher is the pipeline's own encoder), with SD v1.4's pipeline resident: ``{"weights",
    "student", "activations", "step_peak", "total"}`` in bytes. ``student``: its weights, the starting copy and
    AdamW's two moments; the gradients are in ``step_peak``."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        n = sum(p.numel() for p in CLIPTextModel(CLIPTextConfig(**dict(config))).parameters())
    student = 16 * n                                   # fp32 weights, the fp32 starting copy, AdamW's two moments
    step = _text_encoder_step(batch, text_tokens, json.dumps(dict(config), sort_keys=True))
    weights = pipeline_weights(fp16_pipeline)
    return {"weights": weights, "student": student, "activations": step["activations"],
            "step_peak": step["step_peak"], "total": weights + student + step["step_peak"]}


def trce_memory(config=None, unet_config: Mapping = SD14_UNET_CONFIG, autocast: bool = True) -> dict:
    """The computed peak GPU memory of TRCE's stage 2 (:func:`erasure_lib.methods.trce.erase`, ``config`` default
    ``TRCEConfig.sd14()``): the pipeline resident, fp32 masters, gradients and AdamW's moments of the trained
    ``attn1`` / ``attn2.to_q`` tensors, and one training step on ``2 + regularisation_batch`` rows (the safe and
    the malicious prompt and the preservation batch, as the code stacks them), with the config's gradient
    checkpointing. Stage 1 is a closed form on the text states (no UNet memory beyond the weights). Byte counts:
    ``{"weights", "trained_parameters", "trained", "step_peak", "total"}``: ``trained``, the masters and the
    moments; the gradients are in ``step_peak`` (as in :func:`training_memory`)."""
    from .methods.trce import TRCEConfig

    config = TRCEConfig.sd14() if config is None else config
    cfg_json = json.dumps(dict(unet_config), sort_keys=True)
    n = parameter_counts("trce-stage2", unet_config)["trained"]
    step = _training_step(cfg_json, "trce-stage2", 2 + config.regularisation_batch, autocast,
                          config.gradient_checkpointing, 0, 77)
    weights = pipeline_weights(autocast)
    trained = 12 * n                                   # fp32 masters, AdamW's two moments (gradients: step_peak)
    return {"weights": weights, "trained_parameters": n, "trained": trained, "step_peak": step["step_peak"],
            "total": weights + trained + step["step_peak"]}


@functools.lru_cache(maxsize=None)
def _input_gradient_step(config_json: str, rows: int, autocast: bool, text_tokens: int) -> int:
    """Peak bytes of one UNet forward and backward on ``rows`` rows with the gradient taken with respect to the
    text states only (frozen weights), as the white-box attacks optimise their prompt."""
    unet = _module_to(meta_unet(json.loads(config_json)), _FP16 if autocast else _FP32).eval()
    for param in unet.parameters():
        param.requires_grad_(False)
    x, t, c, _ = _inputs(unet, rows, text_tokens, 0)
    c.requires_grad_(True)
    target = torch.empty(rows, unet.config.out_channels, *x.shape[2:], device="meta")
    live = _LiveBytes([*unet.parameters(), *unet.buffers(), x, t, c, target])
    with _as_on_cuda(autocast), live:
        loss = F.mse_loss(unet(x, t, encoder_hidden_states=c).sample.float(), target)
        loss.backward()
    return live.peak


def attack_memory(rows: int = 1, autocast: bool = True) -> dict:
    """The computed peak GPU memory of a white-box attack's step (UnlearnDiffAtk, P4D: the loss through the UNet on
    ``rows`` rows, the gradient to the prompt's embeddings; the text encoder's part is small beside it), with the
    pipeline resident: ``{"weights", "step_peak", "total"}`` in bytes."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    peak = _input_gradient_step(json.dumps(SD14_UNET_CONFIG, sort_keys=True), rows, autocast, 77)
    weights = pipeline_weights(autocast)
    return {"weights": weights, "step_peak": peak, "total": weights + peak}


# --- chapter 40 (NS-Net): CLIP ViT-L/14 + LoRA, BLIP captions, SD v1.4's fakes ---------------------------------------

# Salesforce/blip-image-captioning-base config.json, the keys it sets besides transformers' BlipConfig defaults (a
# ViT-B/16 at 384 px, a 12-layer BERT-base decoder with cross-attention): 12 text heads; "torch_dtype": "float32"
BLIP_BASE_CONFIG = {"text_config": {"num_attention_heads": 12}, "vision_config": {}}


def meta_clip(config: Mapping | None = None):
    """A ``CLIPModel`` of ``config`` (default: ``openai/clip-vit-large-patch14``'s,
    :data:`erasure_lib.testing.sd14_model.CLIP_VIT_L14_CONFIG`: ViT-L/14 at 224 px and the 12-layer text tower,
    427,616,513 parameters) on the meta device (shapes, no data), in eval mode."""
    from transformers import CLIPConfig, CLIPModel

    if config is None:
        from .testing.sd14_model import CLIP_VIT_L14_CONFIG as config
    with torch.device("meta"):
        return CLIPModel(CLIPConfig(**json.loads(json.dumps(dict(config))))).eval()


def meta_blip(config: Mapping | None = None):
    """A ``BlipForConditionalGeneration`` of ``config`` (default: :data:`BLIP_BASE_CONFIG`, the captioner of
    chapter 40) on the meta device, in eval mode."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = BLIP_BASE_CONFIG if config is None else config
    with torch.device("meta"):
        return BlipForConditionalGeneration(BlipConfig(**json.loads(json.dumps(dict(config))))).eval()


def _parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())   # tied weights once, as they are stored on the GPU


def _clip_vision(clip_json: str, nsnet_json: str | None):
    """NS-Net's tower on the meta device: CLIP's vision tower + projection (:class:`erasure_lib.detect.ns_net._Vision`)
    with the config's LoRA injected by :func:`erasure_lib.detect.ns_net._lora` (``None``: none), and the linear
    head."""
    from .detect.ns_net import NSNetConfig, _lora, _Vision

    clip = meta_clip(json.loads(clip_json))
    with torch.device("meta"):
        vision = _Vision(clip.vision_model, clip.visual_projection)
        if nsnet_json is not None:
            vision = _lora(vision, NSNetConfig.from_json(nsnet_json))
        head = torch.nn.Linear(clip.config.projection_dim, 1)
    return vision, head


@functools.lru_cache(maxsize=None)
def _clip_training_step(clip_json: str, nsnet_json: str, autocast: bool) -> dict:
    """Activations (alive when the forward ends) and the peak of one training step of NS-Net (or CLIP + LoRA) as
    :meth:`erasure_lib.detect.ns_net.NSNet.fit` runs it, ``batch_size`` images of the tower's size, in train mode
    (LoRA dropout on). The projection onto the captions' null space and SupCon act on ``(batch, 768)`` features (a
    few MB): they are stood in for by ops of the same shapes (``u @ P``, SupCon's ``B x B`` similarities), without the
    code's data-dependent checks, which a meta tensor cannot take."""
    from .detect.ns_net import NSNetConfig

    cfg = NSNetConfig.from_json(nsnet_json)
    vision, head = _clip_vision(clip_json, nsnet_json)
    vision.train()
    size = vision.vision_model.config.image_size
    b, d = cfg.batch_size, head.in_features
    pixels = torch.empty(b, 3, size, size, device="meta")
    proj = torch.empty(d, d, device="meta")
    y = torch.empty(b, device="meta")
    live = _LiveBytes([*vision.parameters(), *vision.buffers(), *head.parameters(), pixels, proj, y])
    with _as_on_cuda(autocast), live:
        u = vision(pixels).float()
        f = u if cfg.projection is None else u @ proj
        logits = head(f).squeeze(1)
        z = F.normalize(f, dim=1)
        sim = (z @ z.T / cfg.temperature).masked_fill(torch.eye(b, dtype=torch.bool, device="meta"), float("-inf"))
        log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
        positives = y[:, None] == y[None, :]
        supcon = (-(log_prob.masked_fill(~positives, 0.0)).sum(dim=1) / positives.sum(dim=1).clamp_min(1)).mean()
        loss = (1 - cfg.lam) * supcon + cfg.lam * F.binary_cross_entropy_with_logits(logits, y)
        activations = live.live
        loss.backward()
    trained = sum(p.numel() for p in vision.parameters() if p.requires_grad) + _parameters(head)
    return {"activations": activations, "step_peak": live.peak, "trained_parameters": trained,
            "tower_parameters": _parameters(vision) + _parameters(head)}


@functools.lru_cache(maxsize=None)
def _clip_inference(clip_json: str, images: int, texts: int) -> int:
    """Peak bytes of one no-grad fp32 call of the frozen CLIP: ``images`` images through the vision tower and
    projection (:meth:`erasure_lib.detect.ns_net.Backbone.image_features`), or ``texts`` captions of 77 tokens
    through the text tower and projection (:meth:`~erasure_lib.detect.ns_net.Backbone.text_features`)."""
    clip = meta_clip(json.loads(clip_json))
    live = _LiveBytes([*clip.parameters(), *clip.buffers()])
    with torch.no_grad(), _as_on_cuda(False), live:
        if images:
            size = clip.config.vision_config.image_size
            clip.visual_projection(clip.vision_model(
                pixel_values=torch.empty(images, 3, size, size, device="meta")).pooler_output)
        if texts:
            ids = torch.zeros(texts, clip.config.text_config.max_position_embeddings, dtype=torch.long, device="meta")
            clip.text_projection(clip.text_model(input_ids=ids).pooler_output)
    return live.peak


@functools.lru_cache(maxsize=None)
def _blip_captions(blip_json: str, images: int, tokens: int) -> int:
    """Peak bytes of captioning ``images`` images with BLIP in fp32, no grad, as one vision forward and one decoder
    forward at ``tokens`` tokens whose self- and cross-attention caches are kept (what greedy ``generate`` holds at
    its last step)."""
    blip = meta_blip(json.loads(blip_json))
    size = blip.config.vision_config.image_size
    live = _LiveBytes([*blip.parameters(), *blip.buffers()])
    with torch.no_grad(), _as_on_cuda(False), live:
        states = blip.vision_model(pixel_values=torch.empty(images, 3, size, size, device="meta"))[0]
        out = blip.text_decoder(input_ids=torch.zeros(images, tokens, dtype=torch.long, device="meta"),
                                encoder_hidden_states=states, use_cache=True)
        del out
    return live.peak


@functools.lru_cache(maxsize=None)
def _vae_round_trip(vae_json: str, size: int, images: int, fp16: bool) -> int:
    """Peak bytes of encoding ``images`` images of ``size`` px with the VAE (the latent mean) and decoding them, no
    grad (:func:`erasure_lib.detect.aigi_bench._vae_roundtrip`)."""
    dtype = _FP16 if fp16 else _FP32
    vae = _module_to(meta_vae(json.loads(vae_json)), dtype).eval()
    x = torch.empty(images, 3, size, size, device="meta", dtype=dtype)
    live = _LiveBytes([*vae.parameters(), *vae.buffers(), x])
    with torch.no_grad(), _as_on_cuda(False), live:
        vae.decode(vae.encode(x).latent_dist.mean)
    return live.peak


def chapter40_memory(profile: str = "sd14", preset: str | None = None, *, autocast: bool = False,
                     captions_precomputed: bool = False, clip_config: Mapping | None = None,
                     blip_config: Mapping | None = None, **plan_overrides):
    """The computed (not measured) peak GPU memory of chapter 40's sd14 run, phase by phase, in the order the
    notebook runs them (``plan_overrides`` go to :func:`erasure_lib.profiles.chapter40_plan`'s plan, as in
    :func:`erasure_lib.runtime.chapter40`). Each row: the weights resident then, the phase's own peak (activations and
    transients, counted on the meta device as :func:`training_memory` counts the UNet's), their total, and whether
    it fits a T4 16 GB / A100 40 GB (:func:`fits`, with :data:`RESERVE` free).

    What is resident, as the notebook holds it: SD v1.4's pipeline in fp16 (:func:`erasure_lib.load_pipeline` on
    CUDA) from the start; BLIP in fp32 (``from_pretrained``'s default dtype is the checkpoint's, float32; kept as the
    captioner's fallback) unless ``captions_precomputed``; after the fakes, the backbone's ``CLIPModel`` in fp32
    (idem); then every NS-Net / CLIP + LoRA detector of the plan's seeds at once, each with its own fp32 copy of the
    vision tower + LoRA (:func:`erasure_lib.detect.aigi_eval.fit_many` builds them all before fitting one; the
    notebook keeps them all), and, while one trains, the LoRA's and the head's fp32 gradients and AdamW's two
    moments. UnivFD's probe and the CNN baseline run on the CPU.

    Phases: BLIP captioning (its ``batch_size`` images; 30 new tokens); SD v1.4 sampling (:func:`inference_memory`:
    :func:`erasure_lib.sampling.generate` at the 64 images of :func:`erasure_lib.detect.aigi_bench._tinysd_images`,
    128 UNet rows with CFG, decoded 8 at a time); SD-VAE's reconstructions (8 images of 256 px encoded and decoded,
    fp16); the feature figure's and UnivFD's frozen CLIP features (256 images, fp32); one NS-Net training step
    (``NSNetConfig.sd14``'s batch of 32 mosaics of 224 px, LoRA r 6 with dropout 0.8 on q / k / v). The code trains
    in fp32 without autocast; ``autocast=True`` counts the step as CUDA autocast would run it (fp16 matmuls), for
    comparison. Not counted, as in :func:`training_memory`: the CUDA context, cuDNN / cuBLAS workspaces, allocator
    fragmentation (hence :data:`RESERVE`), UCE's edited weights (a few MB), the text encoders of the prompts."""
    import dataclasses
    import inspect

    import pandas as pd

    from .detect import aigi_bench, ns_net
    from .profiles import chapter40_plan

    plan = chapter40_plan(profile, preset)
    if profile != "sd14":
        raise ValueError("chapter40_memory computes the sd14 profile's GPU memory (the toy's run on the CPU)")
    fields = {f.name for f in dataclasses.fields(plan)}
    if set(plan_overrides) - fields:
        raise ValueError(f"unknown chapter 40 plan field(s) {sorted(set(plan_overrides) - fields)}; valid: "
                         f"{', '.join(sorted(fields))}")
    plan = dataclasses.replace(plan, **plan_overrides)
    unknown = set(plan.detectors) - set(ns_net.DETECTORS)
    if unknown:
        raise ValueError(f"unknown detector(s) {sorted(unknown)}; valid: {', '.join(ns_net.DETECTORS)}")
    if clip_config is None:
        from .testing.sd14_model import CLIP_VIT_L14_CONFIG as clip_config
    clip_json = json.dumps(dict(clip_config), sort_keys=True)
    blip_json = json.dumps(dict(BLIP_BASE_CONFIG if blip_config is None else blip_config), sort_keys=True)
    clip = meta_clip(json.loads(clip_json))
    pipe = pipeline_weights(True)
    blip = 0 if captions_precomputed else 4 * _parameters(meta_blip(json.loads(blip_json)))
    backbone = 4 * _parameters(clip)
    kinds = {g.kind for g in aigi_bench.SD14_GENERATORS}     # the test split draws from every generator
    blip_batch = inspect.signature(aigi_bench.blip_captioner).parameters["batch_size"].default
    blip_tokens = inspect.signature(aigi_bench.blip_captioner).parameters["max_new_tokens"].default
    chunk = inspect.signature(ns_net.Backbone.image_features).parameters["chunk"].default
    text_chunk = inspect.signature(ns_net.Backbone.text_features).parameters["chunk"].default

    rows = []

    def row(phase, weights, peak):
        total = weights + peak
        rows.append({"phase": phase, "weights GiB": weights / GIB, "phase peak GiB": peak / GIB,
                     "total GiB": total / GIB, **{f"{gpu} fits?": fits(total, gpu) for gpu in GPUS}})

    if not captions_precomputed:
        row(f"BLIP captions ({blip_batch} images, fp32)", pipe + blip,
            _blip_captions(blip_json, blip_batch, blip_tokens))
    if "pipeline" in kinds:
        sample = inference_memory(2 * 64, decode_images=8)
        row("SD v1.4 fakes (64 images: 128 UNet rows with CFG; decodes of 8)", pipe + blip,
            max(sample["unet_call"], sample["decode"]))
    if "vae" in kinds:
        row("SD-VAE reconstructions (8 images, 256 px)", pipe + blip,
            _vae_round_trip(json.dumps(SD14_VAE_CONFIG, sort_keys=True), 256, 8, True))
    features = max(_clip_inference(clip_json, chunk, 0), _clip_inference(clip_json, 0, text_chunk))
    row(f"frozen CLIP features ({chunk} images, fp32): the feature figure", pipe + blip + backbone, features)
    towers = [n for n in plan.detectors if n in ("NS-Net", "CLIP+LoRA")]
    copies = len(plan.claim_seeds) * len(towers)
    if towers:
        cfg = ns_net.NSNET_CONFIGS["sd14"](**({"projection": None} if towers == ["CLIP+LoRA"] else {}))
        step = _clip_training_step(clip_json, cfg.to_json(), autocast)
        resident = pipe + blip + backbone + copies * 4 * step["tower_parameters"]
        optimizer = 8 * step["trained_parameters"]        # AdamW's exp_avg and exp_avg_sq (gradients: step_peak)
        row(f"{' / '.join(towers)} training step ({cfg.batch_size} images, "
            f"{'autocast' if autocast else 'fp32'}; {copies} tower cop{'y' if copies == 1 else 'ies'} resident)",
            resident + optimizer, step["step_peak"])
        if plan.ablation and "NS-Net" in towers:
            row("NS-Net ablation training step (5 more tower copies)", resident + 5 * 4 * step["tower_parameters"]
                + optimizer, step["step_peak"])
    else:
        resident = pipe + blip + backbone
    if "UnivFD" in plan.detectors or towers:
        row(f"frozen CLIP features and scoring ({chunk} images, fp32)", resident, features)
    table = pd.DataFrame(rows)
    table.attrs["note"] = ("computed, not measured: erasure_lib.memory.chapter40_memory (exact parameter counts, "
                           f"activations counted on the meta device); fits = total + {RESERVE / GIB:.0f} GiB reserve "
                           "<= the card")
    return table


__all__ = ["attack_memory", "BLIP_BASE_CONFIG", "chapter40_memory", "fits", "GPUS", "inference_memory",
           "IP_ADAPTER_IMAGE_ENCODER_CONFIG", "ip_adapter_parameters", "memory_table", "meta_blip",
           "meta_clip", "meta_unet", "METHODS", "optimizer_state_bytes", "parameter_counts",
           "pipeline_weights", "RESERVE", "sd14_component_parameters", "SD14_TEXT_ENCODER_CONFIG",
           "SD14_UNET_CONFIG", "SD14_UNET_PARAMETERS", "SD14_VAE_CONFIG", "text_encoder_training_memory",
           "training_memory", "trce_memory", "validate_on_toy"]
