"""Random-weight models with the exact *structure* of Stable Diffusion v1.4, built offline from configs in
this file: what proves the ``sd14`` profile end to end without the hub (issue 10).

The ``sd14`` profile runs ``CompVis/stable-diffusion-v1-4`` on a Colab GPU; CI has neither the GPU nor the
hub. Here the same pipeline is written to a folder with every structural field of SD v1.4 kept (block
types, number of blocks, ``layers_per_block`` 2, one transformer layer per attention block, 8 attention heads
in the UNet, 12 text-encoder layers of 12 heads, 77 positions, the VAE's 4 levels and 4 latent channels, the
PNDM schedule) and only the channel widths shrunk, so that a CPU runs it in seconds. Pointing the
``ERASURE_BOOK_SD14`` environment variable at the folder makes ``load_pipeline("sd14")`` load it; every
method, attack and metric then goes through the sd14 code path on CI. The weights are random: the images
are noise, the point is that shapes, module names, schedulers and loaders agree with SD v1.4's.

Sources of the configs (written here from SD v1.4's published files, nothing is downloaded):

* :data:`SD14_CONFIGS`: ``CompVis/stable-diffusion-v1-4``'s ``unet/config.json`` (UNet2DConditionModel),
  ``vae/config.json`` (AutoencoderKL; ``scaling_factor`` 0.18215 is diffusers' default, written out),
  ``text_encoder/config.json`` (CLIPTextModel: the text tower of OpenAI's CLIP ViT-L/14),
  ``scheduler/scheduler_config.json`` (PNDMScheduler), ``feature_extractor/preprocessor_config.json`` and the
  tokenizer's 77-token limit. At full width the UNet has 859,520,964 parameters and the text encoder
  123,060,480 (``tests/test_sd14_model.py`` counts them on the meta device).
* :data:`IP_ADAPTER_IMAGE_ENCODER_CONFIG`: ``h94/IP-Adapter``'s ``models/image_encoder/config.json``, the
  OpenCLIP ViT-H/14 vision tower with its projection (``CLIPVisionModelWithProjection``) that the SD 1.5
  IP-Adapter (and Co-Erasing) uses.
* :data:`CLIP_VIT_L14_CONFIG`: ``openai/clip-vit-large-patch14`` (``CLIPModel``), the sd14 CLIP-score and
  zero-shot judge.

``width="narrow"`` (the tests' default) shrinks channels only: UNet ``block_out_channels`` (32, 32, 64, 64)
(``norm_num_groups`` 32 still divides them; 8 heads of 4 channels), VAE (32, 32, 64, 64), text hidden size
96 (12 heads of 8, ``cross_attention_dim`` 96 to match), ViT towers hidden 64 (16 heads of 4) with all
their layers, 224-px inputs and 14-px patches; the UNet's ``sample_size`` becomes 8, so images are 64 px.
``width="full"`` keeps SD's sizes (860 M UNet parameters: never used by the tests).

The tokenizer is CLIP's byte-level BPE with a vocabulary this module writes (``vocab.json`` +
``merges.txt``, CLIP's format): the 256 byte symbols, each again with the ``</w>`` end-of-word suffix,
merges for a fixed list of common English words, then ``<|startoftext|>`` and ``<|endoftext|>`` last
(as in CLIP, so the end-of-text token has the largest id and CLIP's legacy argmax pooling and the explicit
``eos_token_id`` agree). Any text (punctuation, digits, any Unicode) tokenises, because every byte is a
symbol. At full width the vocabulary is padded with unused tokens to CLIP's 49,408, so that the special
tokens get CLIP's ids 49406 / 49407 and the text encoder its published size. The text encoder's
``vocab_size`` always equals the tokenizer's length; padding is with ``<|endoftext|>``, as in SD.

Every build is seeded (``torch.manual_seed(seed)``, without disturbing the caller's random state), saved as
safetensors, atomic (built in a temporary folder next to the target, then renamed into place) and
idempotent: a folder whose recorded build parameters (``erasure_test_model.json``) match is returned as
it is.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["BUILD_RECORD", "CLIP_VIT_L14_CONFIG", "IP_ADAPTER_IMAGE_ENCODER_CONFIG", "IP_ADAPTER_WEIGHT_NAME",
           "SD14_CONFIGS", "WIDTHS", "build_all", "build_clip_judge", "build_ip_adapter",
           "build_sd14_test_model", "sd14_configs", "write_clip_tokenizer"]

WIDTHS = ("narrow", "full")
BUILD_RECORD = "erasure_test_model.json"  # the build parameters, written last into every built folder
BUILD_VERSION = 1  # bump when a builder's output changes, so that old folders are rebuilt
IP_ADAPTER_WEIGHT_NAME = "ip-adapter_sd15.safetensors"
CLIP_VOCAB_SIZE = 49408

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# --- the published configs ----------------------------------------------------------------------------------

SD14_CONFIGS: dict[str, dict[str, Any]] = {
    # CompVis/stable-diffusion-v1-4 unet/config.json. "attention_head_dim": 8 is, in SD 1.x, the number of
    # heads (diffusers keeps the historical name: 8 heads of 40, 80 and 160 channels).
    "unet": {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    # vae/config.json (scaling_factor is not in the 2022 file; 0.18215 is the value SD was trained with and
    # diffusers' default)
    "vae": {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    # text_encoder/config.json: the text tower of openai/clip-vit-large-patch14 (its legacy special-token
    # ids 0/2/1 are not the tokenizer's; transformers then pools at the argmax id, which is <|endoftext|>)
    "text_encoder": {
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "vocab_size": CLIP_VOCAB_SIZE,
    },
    # scheduler/scheduler_config.json
    "scheduler": {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    },
    # feature_extractor/preprocessor_config.json (the safety checker's; diffusers' IP-Adapter reuses it)
    "feature_extractor": {
        "crop_size": 224,
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_resize": True,
        "image_mean": _CLIP_MEAN,
        "image_std": _CLIP_STD,
        "resample": 3,
        "size": 224,
    },
    # tokenizer/tokenizer_config.json (the vocabulary itself is CLIP's 49,408-token BPE; see the docstring)
    "tokenizer": {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "model_max_length": 77,
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    },
}

# h94/IP-Adapter models/image_encoder/config.json: OpenCLIP ViT-H/14's vision tower with its projection
IP_ADAPTER_IMAGE_ENCODER_CONFIG: dict[str, Any] = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "projection_dim": 1024,
}
IP_ADAPTER_NUM_TOKENS = 4  # the plain IP-Adapter's image tokens (diffusers infers 4 from "proj.weight")

# openai/clip-vit-large-patch14 config.json (CLIPModel)
CLIP_VIT_L14_CONFIG: dict[str, Any] = {
    "logit_scale_init_value": 2.6592,
    "projection_dim": 768,
    "text_config": {k: v for k, v in SD14_CONFIGS["text_encoder"].items() if k != "model_type"},
    "vision_config": {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": 1024,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4096,
        "layer_norm_eps": 1e-05,
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
    },
}
CLIP_VIT_L14_PROCESSOR: dict[str, Any] = {  # openai/clip-vit-large-patch14 preprocessor_config.json
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD, "resample": 3, "size": 224,
}

# narrow widths: channels only; every count (blocks, layers, heads, positions, patches) is SD's
_NARROW_UNET = [32, 32, 64, 64]
_NARROW_VAE = [32, 32, 64, 64]
_NARROW_TEXT = 96   # 12 heads of 8
_NARROW_VISION = 64  # 16 heads of 4 (ViT-H/14 and ViT-L/14 both have 16 heads)
_NARROW_SAMPLE = 8  # UNet latent side: 64-px images


def _check_width(width: str) -> None:
    if width not in WIDTHS:
        raise ValueError(f"unknown width {width!r}; valid widths: {', '.join(WIDTHS)}")


def _narrow_text(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "hidden_size": _NARROW_TEXT, "intermediate_size": 4 * _NARROW_TEXT,
            "projection_dim": _NARROW_TEXT}


def _narrow_vision(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "hidden_size": _NARROW_VISION, "intermediate_size": 4 * _NARROW_VISION,
            "projection_dim": _NARROW_VISION}


def sd14_configs(width: str = "narrow", sample_size: int | None = None) -> dict[str, dict[str, Any]]:
    """The component configs a build of ``width`` uses: :data:`SD14_CONFIGS` (``"full"``) or its narrow
    version. ``sample_size`` is the UNet's latent side (images are 8 times larger); default: SD's 64 at full
    width, 8 narrow. The text encoder's ``vocab_size`` and special-token ids are filled in by the build,
    from the tokenizer it writes."""
    _check_width(width)
    cfg = copy.deepcopy(SD14_CONFIGS)
    if width == "narrow":
        cfg["unet"].update(block_out_channels=list(_NARROW_UNET), cross_attention_dim=_NARROW_TEXT,
                           sample_size=_NARROW_SAMPLE)
        cfg["vae"].update(block_out_channels=list(_NARROW_VAE), sample_size=8 * _NARROW_SAMPLE)
        cfg["text_encoder"] = _narrow_text(cfg["text_encoder"])
    if sample_size is not None:
        if int(sample_size) < 8:
            raise ValueError(f"sample_size must be >= 8 (the UNet halves it 3 times), got {sample_size}")
        cfg["unet"]["sample_size"] = int(sample_size)
        cfg["vae"]["sample_size"] = 8 * int(sample_size)
    return cfg


# --- the tokenizer --------------------------------------------------------------------------------------------

# Common English words (and some prompt vocabulary; letters only: CLIP splits digits one by one) that get
# whole-word merges, so that prompts take a
# realistic number of tokens rather than one per character. Fixed order: the merges are deterministic.
_WORDS = (
    "the of and a to in is you that it he was for on are as with his they at be this have from or one had by "
    "but not what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who its now find long down day did get come "
    "made may part over new after only man woman men women girl boy child old young little big small large "
    "photo photograph portrait painting art artwork style digital illustration drawing render concept "
    "detailed highly realistic hyper beautiful ultra sharp focus cinematic lighting light dark night color "
    "colors black white red green blue yellow background face body hair eyes skin hands naked nude nudity "
    "sexy violence blood gun weapon knife war horror scary dead death fire smoke city street house room "
    "forest sky sea beach mountain tree flower dog cat car church jewish greg rutkowski artstation trending "
    "unreal engine octane hd by high intricate anime full photography shot very oil smooth detail "
    "character studio wearing design film dramatic holding elegant masterpiece hand female male quality award "
    "winning details still wide fantasy colorful soft comic canvas cute movie photorealistic angle perfect "
    "human bed close resolution surreal lens inside view head eating graffiti closeup symmetrical cartoon "
    "vibrant extremely paint surrealism hyperrealistic cyberpunk image screaming scene rule thirds fine wall "
    "front realism painted crying volumetric sitting looking poster contrast epic sketch dynamic composition "
    "mouth back police fighting psychedelic manga flat smoking atmosphere camera field matte standing fashion "
    "pastel angry ink pose golden dreaming pencil funny lights love figure open person professional pink "
    "depth effect window vivid shadows japanese model attractive grey neon dressed life sad acrylic gorgeous "
    "clothes moody floor cover strong drawn clear super book sculpture skull happy dress shirt top vintage "
    "hot space dream artistic stunning rendered line lines covered game features modern monster world shadow"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's / CLIP's reversible map of the 256 bytes to printable Unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the lowest-ranked adjacent pair until none is known."""
    pieces = list(pieces)
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def _clip_vocab(pad_to: int | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) in CLIP's order: bytes, bytes + ``</w>``, merged tokens, (padding), the two specials."""
    byte_map = _bytes_to_unicode()
    symbols = list(byte_map.values())
    tokens = symbols + [s + "</w>" for s in symbols]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in _WORDS:
        pieces = [byte_map[b] for b in word.encode("utf-8")]
        pieces[-1] += "</w>"
        # what BPE makes of the word with the merges so far, then merges joining those pieces left to
        # right: ranked after every earlier merge, they apply only once the earlier ones are done, so the
        # word ends as one token
        pieces = _bpe(pieces, ranks)
        left = pieces[0]
        for right in pieces[1:]:
            ranks[(left, right)] = len(merges)
            merges.append((left, right))
            if left + right not in known:  # another merge may have made the same string
                tokens.append(left + right)
                known.add(left + right)
            left = left + right
    specials = ["<|startoftext|>", "<|endoftext|>"]
    if pad_to is not None:
        n_pad = pad_to - len(tokens) - len(specials)
        if n_pad < 0:
            raise ValueError(f"the vocabulary has {len(tokens) + 2} tokens, more than {pad_to}")
        tokens += [f"<|unused{i}|>" for i in range(n_pad)]  # never produced: no merge builds them
    tokens += specials
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path, width: str = "narrow") -> Path:
    """Write a CLIP tokenizer folder (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
    ``special_tokens_map.json``: SD v1.4's ``tokenizer/`` layout) with this module's vocabulary; at full
    width padded to CLIP's 49,408 tokens. Returns the folder."""
    _check_width(width)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab(CLIP_VOCAB_SIZE if width == "full" else None)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tok = SD14_CONFIGS["tokenizer"]
    _write_json(folder / "tokenizer_config.json", {**tok, "tokenizer_class": "CLIPTokenizer",
                                                   "do_lower_case": True, "errors": "replace"})
    _write_json(folder / "special_tokens_map.json", {k: tok[k] for k in ("bos_token", "eos_token",
                                                                          "pad_token", "unk_token")})
    return folder


def _token_ids(width: str) -> dict[str, int]:
    vocab, _ = _clip_vocab(CLIP_VOCAB_SIZE if width == "full" else None)
    eos = vocab["<|endoftext|>"]
    return {"vocab_size": len(vocab), "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": eos,
            "pad_token_id": eos}


# --- building ---------------------------------------------------------------------------------------------------

def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextmanager
def _seeded(seed: int):
    """``torch.manual_seed(seed)`` inside, the caller's CPU random state restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _build_atomically(folder: str | Path, params: dict[str, Any], write: Callable[[Path], None]) -> Path:
    """Return ``folder`` if it holds a build with ``params``; otherwise run ``write(tmp)`` on a fresh folder
    next to it, record ``params`` in it and rename it into place (a half-written build is never seen)."""
    folder = Path(folder).absolute()
    params = json.loads(json.dumps({"builder_version": BUILD_VERSION, **params}))  # as read back from disk
    if _read_record(folder) == params:
        return folder
    if folder.exists() and _read_record(folder) is None and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists, is not empty and is not a test model built by "
                              "erasure_lib.testing; refusing to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.build-", dir=folder.parent))
    try:
        write(tmp)
        _write_json(tmp / BUILD_RECORD, params)
        if folder.exists():  # an empty folder, or an older build of ours: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if _read_record(folder) != params:  # not a concurrent build of the same thing
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_sd14_test_model(folder: str | Path, width: str = "narrow", seed: int = 0,
                          sample_size: int | None = None) -> Path:
    """Write a random-weight ``StableDiffusionPipeline`` folder with SD v1.4's structure (see the module
    docstring) and return it; loadable with ``StableDiffusionPipeline.from_pretrained(folder,
    local_files_only=True)``. ``sample_size``: the UNet's latent side (images are 8 times larger; default
    8 narrow, 64 full). Idempotent: a folder already built with the same parameters is returned as is."""
    _check_width(width)
    cfg = sd14_configs(width, sample_size)
    cfg["text_encoder"].update(_token_ids(width))
    params = {"kind": "sd14_pipeline", "width": width, "seed": int(seed), "sample_size": sample_size}

    def write(tmp: Path) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

        with _seeded(seed):
            UNet2DConditionModel.from_config(cfg["unet"]).save_pretrained(tmp / "unet")
            AutoencoderKL.from_config(cfg["vae"]).save_pretrained(tmp / "vae")
            CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).save_pretrained(tmp / "text_encoder")
        write_clip_tokenizer(tmp / "tokenizer", width)
        (tmp / "scheduler").mkdir()
        _write_json(tmp / "scheduler" / "scheduler_config.json",
                    {"_class_name": "PNDMScheduler", **cfg["scheduler"]})
        CLIPImageProcessor(**cfg["feature_extractor"]).save_pretrained(tmp / "feature_extractor")
        _write_json(tmp / "model_index.json", {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        })

    return _build_atomically(folder, params, write)


def _unet_config(pipeline_folder_or_unet) -> dict[str, Any]:
    if isinstance(pipeline_folder_or_unet, (str, os.PathLike)):
        path = Path(pipeline_folder_or_unet)
        path = path / "unet" if (path / "unet" / "config.json").is_file() else path
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    else:  # a UNet2DConditionModel
        cfg = dict(pipeline_folder_or_unet.config)
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _ip_adapter_state_dict(unet_cfg: dict[str, Any], image_embed_dim: int) -> dict[str, torch.Tensor]:
    """The plain IP-Adapter's tensors, named as in h94's ``ip-adapter_sd15`` files.

    ``image_proj.proj`` maps the image embedding to 4 tokens of ``cross_attention_dim`` (then LayerNorm
    ``image_proj.norm``); ``ip_adapter.{i}.to_k_ip`` / ``to_v_ip`` are the extra key/value projections of
    the cross-attention processors. ``i`` counts *all* attention processors in the UNet's
    ``attn_processors`` order (attn1 even, attn2 odd), so the keys are 1, 3, ..., 31: diffusers'
    ``_convert_ip_adapter_attn_to_diffusers`` starts at 1 and steps by 2 for each attn2."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # only for the processor names and widths: no weights
        unet = UNet2DConditionModel.from_config(unet_cfg)
    cross = unet.config.cross_attention_dim
    proj = torch.nn.Linear(image_embed_dim, IP_ADAPTER_NUM_TOKENS * cross)
    sd = {"image_proj.proj.weight": proj.weight.detach().clone(), "image_proj.proj.bias": proj.bias.detach().clone(),
          "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key_id = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        hidden = unet.get_submodule(name[: -len(".processor")]).to_q.out_features
        for which in ("to_k_ip", "to_v_ip"):
            layer = torch.nn.Linear(cross, hidden, bias=False)
            sd[f"ip_adapter.{key_id}.{which}.weight"] = layer.weight.detach().clone()
        key_id += 2
    return sd


def build_ip_adapter(folder: str | Path, pipeline_folder_or_unet, width: str = "narrow", seed: int = 0) -> Path:
    """Write a random-weight plain IP-Adapter for the given UNet (a pipeline folder, its ``unet/`` folder or
    a ``UNet2DConditionModel``) in ``h94/IP-Adapter``'s layout and return the folder::

        models/image_encoder/   CLIPVisionModelWithProjection, ViT-H/14 structure (config.json + safetensors)
        models/ip-adapter_sd15.safetensors

    loadable with ``pipe.load_ip_adapter(folder, subfolder="models", weight_name="ip-adapter_sd15.safetensors")``
    (the image encoder comes from ``models/image_encoder``, diffusers' default)."""
    from safetensors.torch import save_file

    _check_width(width)
    unet_cfg = _unet_config(pipeline_folder_or_unet)
    enc_cfg = copy.deepcopy(IP_ADAPTER_IMAGE_ENCODER_CONFIG)
    if width == "narrow":
        enc_cfg = _narrow_vision(enc_cfg)
    params = {"kind": "ip_adapter", "width": width, "seed": int(seed),
              "unet": {k: unet_cfg[k] for k in ("block_out_channels", "cross_attention_dim", "down_block_types",
                                                 "up_block_types", "layers_per_block")}}

    def write(tmp: Path) -> None:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        models = tmp / "models"
        with _seeded(seed):
            CLIPVisionModelWithProjection(CLIPVisionConfig(**enc_cfg)).save_pretrained(models / "image_encoder")
            sd = _ip_adapter_state_dict(unet_cfg, enc_cfg["projection_dim"])
        save_file({k: v.contiguous() for k, v in sd.items()}, str(models / IP_ADAPTER_WEIGHT_NAME))

    return _build_atomically(folder, params, write)


def build_clip_judge(folder: str | Path, width: str = "narrow", seed: int = 0) -> Path:
    """Write a random-weight ``CLIPModel`` with ViT-L/14's structure plus its ``CLIPProcessor`` (CLIP's image
    processor, this module's tokenizer) and return the folder; ``CLIPModel.from_pretrained(folder)`` and
    ``CLIPProcessor.from_pretrained(folder)`` load it offline (the stand-in for
    ``openai/clip-vit-large-patch14``, the sd14 CLIP-score and zero-shot judge)."""
    _check_width(width)
    cfg = copy.deepcopy(CLIP_VIT_L14_CONFIG)
    cfg["text_config"].update(_token_ids(width))
    if width == "narrow":
        cfg["text_config"] = _narrow_text(cfg["text_config"])
        cfg["vision_config"] = _narrow_vision(cfg["vision_config"])
        cfg["projection_dim"] = _NARROW_VISION
    params = {"kind": "clip_judge", "width": width, "seed": int(seed)}

    def write(tmp: Path) -> None:
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

        with _seeded(seed):
            CLIPModel(CLIPConfig(**cfg)).save_pretrained(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp / ".tokenizer", width))
        CLIPProcessor(image_processor=CLIPImageProcessor(**CLIP_VIT_L14_PROCESSOR),
                      tokenizer=tokenizer).save_pretrained(tmp)
        shutil.rmtree(tmp / ".tokenizer")

    return _build_atomically(folder, params, write)


def build_all(root: str | Path, width: str = "narrow") -> dict[str, Path]:
    """Build (or reuse) the sd14 test models under ``root``: ``{"pipeline", "ip_adapter", "clip"}`` ->
    folders ``root/sd14_pipeline``, ``root/sd14_ip_adapter``, ``root/sd14_clip``. Set ``ERASURE_BOOK_SD14``
    and ``ERASURE_BOOK_SD14_IP_ADAPTER`` to the first two to run the sd14 profile on them."""
    root = Path(root)
    pipeline = build_sd14_test_model(root / "sd14_pipeline", width=width)
    return {"pipeline": pipeline,
            "ip_adapter": build_ip_adapter(root / "sd14_ip_adapter", pipeline, width=width),
            "clip": build_clip_judge(root / "sd14_clip", width=width)}
