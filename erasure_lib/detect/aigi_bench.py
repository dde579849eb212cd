"""The toy AI-generated-image benchmark of chapter 40: real renders against eight generators of three families.

NS-Net (Yan et al., "Decoupling CLIP Semantic Information through NULL-Space for Generalizable AI-Generated Image
Detection", arXiv 2508.01248) and UnivFD (Ojha et al., CVPR 2023, ``WisconsinAIVision/UniversalFakeDetect``) train
a detector on one or two generators (AIGIBench's setting II: ProGAN + SD v1.4, ``HorizonTEL/AIGIBench``) and test it
on many unseen ones. Their claim rests on real and fake images sharing their *semantics*: the toy world can make
that exactly, since its renders are the real photographs and every generator draws the same scenes' captions.

* **real**: fresh renders of the toy world (:func:`erasure_lib.toyworld.render.render`);
* **fake**: one image per scene caption from each generator of :data:`TOY_GENERATORS` (our own code and zoo):
  TinySD at its defaults (DDIM 25 steps, CFG 5); TinySD with 10 DDIM steps, with DPM-Solver++ (15 steps), and at
  CFG 2; a second UNet of half the width, own seed and own data (:mod:`erasure_lib.toyworld.second_unet`); TinySD
  with chapter 10's UCE erasure of ``church``; reconstructions of *other* renders of the scene through TinySD's VAE
  (autoencoder family); a small text-conditional GAN trained on the renders (:mod:`erasure_lib.toyworld.gan`, the
  ProGAN analog).
* **splits by scene**: a scene's content key (subject, colour, background, style, nude) is hashed to train / val /
  test (60 / 10 / 30 %), so no caption content of the test set was seen in training; never a split by image.
* every generator's images are judged by the zoo's classifier (:func:`judge`): the share showing the caption's
  subject, colour and style, so that "real and fake share semantics" is measured, not assumed.

Images are cached in ``cache_dir/aigi/`` by (generator spec, split, size, seed, base model, bench version): the
notebook regenerates nothing on a rerun.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

BENCH_VERSION = 1
FAMILIES = ("diffusion", "autoencoder", "gan")
SPLITS = {"train": (0, 6), "val": (6, 7), "test": (7, 10)}     # a scene key's hash mod 10 in [lo, hi)
REAL_SEED_OFFSET = 50_000_000      # render seeds of real images: never the zoo's training seeds (0 .. 40k)
RECON_SEED_OFFSET = 60_000_000     # render seeds of the images the VAE reconstructs (other renders of the scene)


@dataclass(frozen=True)
class GeneratorSpec:
    """One fake-image source. ``kind``: ``"pipeline"`` (the loaded text-to-image pipeline with ``scheduler`` /
    ``steps`` / ``guidance`` and, optionally, ``unet`` = ``"aigi_unet"`` or an ``edit`` ``"METHOD:concept"`` of
    ``profile``), ``"vae"`` (the pipeline's VAE reconstructing other real images of the scene) or ``"gan"``."""
    name: str
    family: str
    kind: str
    description: str
    steps: int = 25
    guidance: float = 5.0
    scheduler: str = "ddim"
    unet: str = "base"
    edit: str | None = None
    profile: str = "toy"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if self.kind not in ("pipeline", "vae", "gan"):
            raise ValueError(f"unknown generator kind {self.kind!r}")
        if self.scheduler not in ("ddim", "dpm++"):
            raise ValueError(f"unknown scheduler {self.scheduler!r}; valid: ddim, dpm++")


TOY_GENERATORS: tuple[GeneratorSpec, ...] = (
    GeneratorSpec("TinySD", "diffusion", "pipeline", "TinySD at its defaults: DDIM, 25 steps, CFG 5"),
    GeneratorSpec("TinySD-DDIM10", "diffusion", "pipeline", "TinySD, DDIM with 10 steps", steps=10),
    GeneratorSpec("TinySD-DPM++", "diffusion", "pipeline", "TinySD, DPM-Solver++ (2M), 15 steps", steps=15,
                  scheduler="dpm++"),
    GeneratorSpec("TinySD-CFG2", "diffusion", "pipeline", "TinySD, CFG 2", guidance=2.0),
    GeneratorSpec("SmallUNet", "diffusion", "pipeline", "a second UNet: half the width, own seed and data",
                  unet="aigi_unet"),
    GeneratorSpec("TinySD-UCE", "diffusion", "pipeline", "TinySD with chapter 10's UCE erasure of church",
                  edit="UCE:church"),
    GeneratorSpec("VAE", "autoencoder", "vae", "TinySD's VAE: reconstructions of other renders of the scene"),
    GeneratorSpec("GAN", "gan", "gan", "a small text-conditional GAN trained on the renders (ProGAN analog)"),
)
TRAIN_GENERATORS = ("GAN", "TinySD")    # AIGIBench setting II's analog: ProGAN + SD v1.4


def generator(name: str, generators=TOY_GENERATORS) -> GeneratorSpec:
    table = {g.name: g for g in generators}
    if name not in table:
        raise ValueError(f"unknown generator {name!r}; valid: {', '.join(table)}")
    return table[name]


def scene_key(scene) -> str:
    """The content of a scene, what its caption can say: subject, colour (none when nude), background, style."""
    colour = "-" if scene.nude else scene.colour
    return f"{scene.subject}|{colour}|{scene.background}|{scene.style}|{int(scene.nude)}"


def split_of(key: str) -> str:
    """``"train"``, ``"val"`` or ``"test"``: a fixed hash of the scene key (the same on every machine)."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


@dataclass
class SceneSet:
    """``n`` scenes of one split with one caption each, and the seeds that draw them."""
    split: str
    scenes: list
    captions: list[str]
    seeds: np.ndarray = field(repr=False)

    def __len__(self):
        return len(self.scenes)

    @property
    def keys(self) -> list[str]:
        return [scene_key(s) for s in self.scenes]

    def digest(self) -> str:
        text = json.dumps([self.split, self.captions, self.seeds.tolist(), self.keys])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def scene_set(split: str, n: int, seed: int = 0) -> SceneSet:
    """``n`` scenes of the training distribution (:func:`erasure_lib.toyworld.captions.sample_scene`) whose key
    falls in ``split``, each with a grammar caption (never a held-out evaluation prompt)."""
    from ..toyworld.captions import caption, heldout_prompt_strings, sample_scene
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if n < 1:
        raise ValueError(f"need at least one scene, got n={n}")
    rng = np.random.default_rng([seed, list(SPLITS).index(split), 4040])
    held_out = heldout_prompt_strings()
    scenes, captions = [], []
    while len(scenes) < n:
        scene = sample_scene(rng)
        if split_of(scene_key(scene)) != split:
            continue
        text = caption(scene, rng)
        if text in held_out:
            continue
        scenes.append(scene)
        captions.append(text)
    offset = {"train": 0, "val": 1_000_000, "test": 2_000_000}[split] + 10_000 * seed
    return SceneSet(split, scenes, captions, np.arange(offset, offset + n))


def real_images(scenes: SceneSet) -> np.ndarray:
    """uint8 ``(n, 32, 32, 3)`` renders of the scenes (the "real photographs")."""
    from ..toyworld.render import render_batch
    return _u8(render_batch(scenes.scenes, seeds=scenes.seeds + REAL_SEED_OFFSET))


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _tinysd_images(pipe, spec: GeneratorSpec, scenes: SceneSet, progress: bool) -> np.ndarray:
    from ..methods import edited
    from ..sampling import generate
    work = pipe
    if spec.unet == "aigi_unet":
        from ..toyworld.second_unet import pipeline
        work = pipeline(pipe)
    elif spec.unet != "base":
        raise ValueError(f"unknown UNet {spec.unet!r}; valid: base, aigi_unet")
    edit = {}
    if spec.edit:
        from ..tasks import baseline_edit
        method, concept = spec.edit.split(":", 1)
        edit = baseline_edit(work, method, concept, profile=spec.profile)
    original = work.scheduler
    if spec.scheduler == "dpm++":
        from diffusers import DPMSolverMultistepScheduler
        work.scheduler = DPMSolverMultistepScheduler.from_config(original.config, algorithm_type="dpmsolver++",
                                                                 solver_order=2)
    try:
        with edited(work, edit):
            return generate(work, scenes.captions, scenes.seeds.tolist(), steps=spec.steps, guidance=spec.guidance,
                            batch_size=64, progress=progress)
    finally:
        work.scheduler = original


def _vae_roundtrip(pipe, x, batch: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)``: images ``x`` (float ``(N, 3, H, W)`` in [-1, 1]) encoded by the pipeline's VAE (the
    latent mean) and decoded, ``batch`` images at a time."""
    import torch
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            z = pipe.vae.encode(x[i:i + batch].to(pipe.device, pipe.vae.dtype)).latent_dist.mean
            out.append(((pipe.vae.decode(z).sample.float().cpu() + 1) / 2).permute(0, 2, 3, 1).numpy())
    return _u8(np.concatenate(out))


def _vae_images(pipe, scenes: SceneSet) -> np.ndarray:
    import torch

    from ..toyworld.render import render_batch
    x = torch.from_numpy(render_batch(scenes.scenes, seeds=scenes.seeds + RECON_SEED_OFFSET)).permute(0, 3, 1, 2)
    return _vae_roundtrip(pipe, x * 2 - 1, 256)


def _gan_images(pipe, scenes: SceneSet) -> np.ndarray:
    from ..toyworld import gan
    return gan.generate(gan.load_gan(), pipe.text_encoder, pipe.tokenizer, scenes.captions, scenes.seeds.tolist())


def fake_images(pipe, spec: GeneratorSpec, scenes: SceneSet, progress: bool = False) -> np.ndarray:
    """uint8 ``(n, 32, 32, 3)``: ``spec``'s image of each scene (its caption, its seed)."""
    if spec.kind == "pipeline":
        return _tinysd_images(pipe, spec, scenes, progress)
    if spec.kind == "vae":
        return _vae_images(pipe, scenes)
    return _gan_images(pipe, scenes)


def _cache_path(cache_dir, what: str, meta: dict) -> Path | None:
    if cache_dir is None:
        return None
    from ..methods.cache import cache_folder, edit_key
    return cache_folder(cache_dir) / "aigi" / f"{what}-{edit_key(meta)}.npz"


def _model_key(pipe, spec: GeneratorSpec) -> dict:
    """Everything the images of ``spec`` depend on besides the spec: the base model (weights and dtype), the VAE, the
    zoo files it reads (the second UNet, the GAN: their manifest hashes) and an edit's concept settings."""
    from .._hashing import state_dict_sha256
    from ..methods.cache import base_model
    key = {**base_model(pipe), "vae": state_dict_sha256(pipe.vae)[:16]}
    if spec.unet == "aigi_unet" or spec.kind == "gan":
        from ..toyworld import zoo
        part = "aigi_unet" if spec.unet == "aigi_unet" else "aigi_gan"
        manifest = json.loads((zoo.data_dir() / zoo.MANIFEST).read_text())
        key[part] = {k: v for k, v in manifest.items() if k.startswith(part + "/")}
    if spec.edit:
        from ..tasks import concepts
        method, concept = spec.edit.split(":", 1)
        key["edit"] = {"method": method, "concept": concepts(spec.profile)[concept]}
    return key


def _cached(cache_dir, what: str, meta: dict, make) -> np.ndarray:
    path = _cache_path(cache_dir, what, meta)
    if path is not None and path.exists():
        with np.load(path) as f:
            return f["images"]
    images = make()
    if path is not None:
        from .._io import atomic_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=images, meta=json.dumps(meta, default=str))
    return images


def images_of(pipe, source: str, scenes: SceneSet, *, cache_dir=None, generators=TOY_GENERATORS,
              progress: bool = False) -> np.ndarray:
    """The images of ``source`` (``"real"`` or a generator's name) for ``scenes``, from the cache when there."""
    meta = {"bench": BENCH_VERSION, "source": source, "scenes": scenes.digest(), "n": len(scenes)}
    if source == "real":
        return _cached(cache_dir, "real", meta, lambda: real_images(scenes))
    spec = generator(source, generators)
    meta.update(spec=asdict(spec), models=_model_key(pipe, spec))
    return _cached(cache_dir, source, meta, lambda: fake_images(pipe, spec, scenes, progress))


def judge(images: np.ndarray, scenes: SceneSet, classifier=None) -> dict[str, float]:
    """Share of ``images`` whose subject, colour (objects and clothed persons) and style the zoo's classifier
    finds as the scene says; ``nude`` for the person scenes: the sensitive head agreeing with the scene."""
    from ..metrics.concept import predict_concepts
    pred = predict_concepts(images, classifier=classifier)
    subj = np.array([s.subject for s in scenes.scenes])
    colour = np.array([s.colour for s in scenes.scenes])
    style = np.array([s.style for s in scenes.scenes])
    nude = np.array([s.nude for s in scenes.scenes])
    has_colour = ~nude
    person = subj == "person"
    return {
        "subject": float((pred["object"].to_numpy() == subj).mean()),
        "colour": float((pred["colour"].to_numpy() == colour)[has_colour].mean()) if has_colour.any() else np.nan,
        "style": float((pred["style"].to_numpy() == style).mean()),
        "nude": float((pred["nude"].to_numpy().astype(bool) == nude)[person].mean()) if person.any() else np.nan,
    }


def judge_table(pipe, sources, scenes: SceneSet, *, cache_dir=None, generators=TOY_GENERATORS) -> pd.DataFrame:
    """One row per source (``"real"`` first): family, subject / colour / style / nude agreement, n."""
    rows = []
    for source in sources:
        images = images_of(pipe, source, scenes, cache_dir=cache_dir, generators=generators)
        family = "real" if source == "real" else generator(source, generators).family
        rows.append({"source": source, "family": family, **judge(images, scenes), "n": len(images)})
    return pd.DataFrame(rows)


@dataclass
class Split:
    """Images and labels of one split: ``labels`` 1 = generated, 0 = real; ``source`` per image; ``captions``."""
    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    captions: list[str]
    scene_keys: list[str]

    def __len__(self):
        return len(self.labels)

    def of(self, sources) -> Split:
        keep = np.isin(self.source, list(sources))
        idx = np.flatnonzero(keep)
        return Split(self.images[idx], self.labels[idx], self.source[idx], [self.captions[i] for i in idx],
                     [self.scene_keys[i] for i in idx])


def build_split(pipe, split: str, n_real: int, fake_sources, n_fake: int | None = None, *, seed: int = 0,
                cache_dir=None, generators=TOY_GENERATORS, progress: bool = False) -> Split:
    """``n_real`` real images of ``split``'s scenes and ``n_fake`` images of each source in ``fake_sources``
    (default: ``n_real // len(fake_sources)``), every fake drawn from the caption of one of the real images' scenes:
    source ``k`` takes the scenes ``k * n_fake, ..., (k + 1) * n_fake - 1`` (cyclically). Real and fake images of a
    split thus share their semantics scene by scene, as NS-Net's setting assumes; with ``n_fake = n_real`` (the
    test split) every generator draws all the scenes of the real images."""
    sources = list(fake_sources)
    if not sources:
        raise ValueError("need at least one fake source")
    n_fake = n_real // len(sources) if n_fake is None else int(n_fake)
    if n_fake < 1 or n_fake > n_real:
        raise ValueError(f"n_fake must be in [1, n_real={n_real}], got {n_fake}")
    pool = scene_set(split, n_real, seed)
    images = [images_of(pipe, "real", pool, cache_dir=cache_dir, generators=generators)]
    labels, source = [np.zeros(n_real, int)], ["real"] * n_real
    captions, keys = list(pool.captions), list(pool.keys)
    for k, name in enumerate(sources):
        idx = (np.arange(n_fake) + k * n_fake) % n_real
        sub = SceneSet(split, [pool.scenes[i] for i in idx], [pool.captions[i] for i in idx], pool.seeds[idx])
        images.append(images_of(pipe, name, sub, cache_dir=cache_dir, generators=generators, progress=progress))
        labels.append(np.ones(n_fake, int))
        source += [name] * n_fake
        captions += sub.captions
        keys += sub.keys
    return Split(np.concatenate(images), np.concatenate(labels), np.array(source), captions, keys)


# --- sd14: real images from a folder, fakes of SD v1.4 and its erased variants -----------------------------------

SD14_GENERATORS: tuple[GeneratorSpec, ...] = (
    GeneratorSpec("SD-v1.4", "diffusion", "pipeline", "SD v1.4: DDIM, 25 steps, CFG 7.5", guidance=7.5,
                  profile="sd14"),
    GeneratorSpec("SD-v1.4-DPM++", "diffusion", "pipeline", "SD v1.4: DPM-Solver++ (2M), 20 steps, CFG 7.5",
                  steps=20, guidance=7.5, scheduler="dpm++", profile="sd14"),
    GeneratorSpec("SD-v1.4-UCE", "diffusion", "pipeline", "SD v1.4 with chapter 10's UCE erasure of church",
                  guidance=7.5, edit="UCE:church", profile="sd14"),
    GeneratorSpec("SD-VAE", "autoencoder", "vae", "SD v1.4's VAE reconstructing the real test images",
                  profile="sd14"),
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_image_folder(folder) -> dict[str, list[Path]]:
    """The image files of a detection folder by source, sorted: ``{"real": [...], generator: [...]}``.

    Layouts: UniversalFakeDetect's and AIGIBench's (``<folder>/<generator>/[<class>/]0_real|1_fake/``, or
    ``<folder>/0_real|1_fake/``): files under a ``0_real`` folder are real, files under ``1_fake`` are the fakes of
    the generator named by the folder above it (``"external"`` at the top); a folder without these names holds
    real images only."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}: name a folder of real images (or a UniversalFakeDetect "
                                f"/ AIGIBench test folder)")
    out: dict[str, list[Path]] = {"real": []}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        parts = path.relative_to(root).parts[:-1]
        if "1_fake" in parts:
            i = parts.index("1_fake")
            gen = parts[0] if i > 0 else "external"
            out.setdefault(gen, []).append(path)
        else:
            out["real"].append(path)
    if not out["real"]:
        raise ValueError(f"no real image in {root} (looked for {', '.join(IMAGE_SUFFIXES)} files outside 1_fake/)")
    return out


def load_images(paths, size: int = 256) -> np.ndarray:
    """uint8 ``(N, size, size, 3)``: each image in RGB, its short side resized to ``size`` (bicubic), centre-cropped."""
    from PIL import Image

    from .ns_net import square_crop
    out = []
    for path in paths:
        with Image.open(path) as im:
            out.append(square_crop(im.convert("RGB"), size))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def read_captions(folder, paths) -> list[str] | None:
    """Precomputed captions, when the folder has them: ``<folder>/captions.json`` or DGS-Net's
    ``<folder>_text.json`` (``specs/ns-net.md`` 3.1), a JSON object keyed by image path (relative to the folder, or
    as given); None when neither file exists. A missing image is an error naming it."""
    root = Path(folder).expanduser()
    for candidate in (root / "captions.json", root.parent / f"{root.name}_text.json"):
        if candidate.exists():
            table = json.loads(candidate.read_text())
            out = []
            for p in paths:
                rel = Path(p).relative_to(root).as_posix()
                text = table.get(rel, table.get(str(p)))
                if not isinstance(text, str):
                    raise KeyError(f"{candidate} has no caption for {rel}")
                out.append(text)
            return out
    return None


def blip_captioner(model: str = "Salesforce/blip-image-captioning-base", device=None, local_files_only: bool = False,
                   max_new_tokens: int = 30, batch_size: int = 16):
    """BLIP (the captioner of the NS-Net replication, ``specs/ns-net.md`` 3.1) as ``images -> list[str]``, greedy
    decoding; the model is downloaded the first time (sd14 only)."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor
    try:
        processor = BlipProcessor.from_pretrained(model, local_files_only=local_files_only)
        net = BlipForConditionalGeneration.from_pretrained(model, local_files_only=local_files_only).eval()
    except OSError as err:
        raise OSError(f"could not load the captioner {model!r} ({err}); online, it is downloaded once; offline, "
                      f"give precomputed captions (captions.json beside the images) instead") from err
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device)

    def caption(images) -> list[str]:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                inputs = processor(images=list(images[i:i + batch_size]), return_tensors="pt").to(device)
                ids = net.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
                out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
        return out

    return caption


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])


def folder_fakes(pipe, spec: GeneratorSpec, captions: list[str], seeds, real: np.ndarray, *, size: int = 256,
                 cache_dir=None, progress: bool = False) -> np.ndarray:
    """``spec``'s images of ``captions`` at ``size`` px (a ``"vae"`` spec reconstructs ``real``), cached."""
    meta = {"bench": BENCH_VERSION, "spec": asdict(spec), "captions": captions, "seeds": [int(s) for s in seeds],
            "size": size, "models": _model_key(pipe, spec),
            "real": hashlib.sha256(np.ascontiguousarray(real).tobytes()).hexdigest()[:16] if spec.kind == "vae" else ""}

    def make():
        if spec.kind == "vae":
            import torch
            return _vae_roundtrip(pipe, torch.from_numpy(real).permute(0, 3, 1, 2).float() / 127.5 - 1, 8)
        if spec.kind != "pipeline":
            raise ValueError(f"generator {spec.name!r}: a folder benchmark takes pipeline and vae generators")
        scenes = SceneSet("test", [None] * len(captions), list(captions), np.asarray(seeds))
        return _resize(_tinysd_images(pipe, spec, scenes, progress), size)

    return _cached(cache_dir, spec.name, meta, make)


def folder_splits(pipe, folder, captioner=None, *, generators=SD14_GENERATORS, train_generators=("SD-v1.4",),
                  n_train: int = 2000, n_test: int = 500, seed: int = 0, size: int = 256, cache_dir=None,
                  progress: bool = False) -> tuple[Split, Split]:
    """The sd14 benchmark: the real images of ``folder`` (:func:`read_image_folder`), captioned (precomputed
    captions, else ``captioner``), split by caption hash (a caption stands for its scene); the training fakes of
    ``train_generators`` drawn from the training captions; the test split: every generator from the test captions,
    plus the folder's own ``1_fake`` generators (their images as they are, up to ``n_test``)."""
    files = read_image_folder(folder)
    real_paths = files["real"]
    real = load_images(real_paths, size)
    captions = read_captions(folder, real_paths)
    if captions is None:
        if captioner is None:
            raise ValueError(f"{folder} has no captions.json: pass a captioner (e.g. blip_captioner())")
        captions = list(captioner(real))
    which = np.array([split_of(c) for c in captions])
    parts = {}
    for name, n, gens in (("train", n_train, train_generators), ("test", n_test, [g.name for g in generators])):
        idx = np.flatnonzero(which == name)[:n]
        if len(idx) < 2:
            raise ValueError(f"only {len(idx)} real images of {folder} fall in the {name} split (by caption); "
                             "give more images")
        caps = [captions[i] for i in idx]
        seeds = np.arange(len(idx)) + (0 if name == "train" else 5_000_000) + 10_000 * seed
        images, labels, source, all_caps = [real[idx]], [np.zeros(len(idx), int)], ["real"] * len(idx), list(caps)
        for g in gens:
            fake = folder_fakes(pipe, generator(g, generators), caps, seeds, real[idx], size=size,
                                cache_dir=cache_dir, progress=progress)
            images.append(fake)
            labels.append(np.ones(len(fake), int))
            source += [g] * len(fake)
            all_caps += caps
        if name == "test":
            for g, paths in files.items():
                if g == "real":
                    continue
                ext = load_images(paths[:n], size)
                try:
                    ext_caps = read_captions(folder, paths[:n])
                except KeyError:                      # captions.json covers the real images only
                    ext_caps = None
                if ext_caps is None and captioner is not None:
                    ext_caps = list(captioner(ext))
                if ext_caps is None:
                    raise ValueError(f"no captions for the {g} images of {folder}")
                images.append(ext)
                labels.append(np.ones(len(ext), int))
                source += [g] * len(ext)
                all_caps += ext_caps
        parts[name] = Split(np.concatenate(images), np.concatenate(labels), np.array(source), all_caps, all_caps)
    return parts["train"], parts["test"]


class CaptionLookup:
    """A captioner that knows the captions of the images of some splits (by the images' bytes) and asks
    ``fallback`` (e.g. :func:`blip_captioner`) for any other image; an unknown image without a fallback is an
    error. sd14 with precomputed captions: a real image's caption is the folder's, a fake's the one it was drawn
    from."""

    def __init__(self, splits, fallback=None):
        self.table = {}
        for split in splits:
            for image, text in zip(split.images, split.captions):
                self.table[hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()] = text
        self.fallback = fallback

    def __call__(self, images) -> list[str]:
        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self.table]
        found = {}
        if missing:
            if self.fallback is None:
                raise KeyError(f"{len(missing)} image(s) without a known caption and no fallback captioner")
            found = dict(zip(missing, self.fallback(np.asarray(images)[missing])))
        return [self.table[k] if k in self.table else found[i] for i, k in enumerate(keys)]


__all__ = ["FAMILIES", "GeneratorSpec", "SPLITS", "SceneSet", "Split", "TOY_GENERATORS", "TRAIN_GENERATORS",
           "build_split", "fake_images", "generator", "images_of", "judge", "judge_table", "real_images",
           "scene_key", "scene_set", "split_of", "SD14_GENERATORS", "CaptionLookup", "blip_captioner", "folder_fakes", "folder_splits",
           "load_images", "read_captions", "read_image_folder"]
