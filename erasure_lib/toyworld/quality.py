"""The quality bars of TOYWORLD.md, measured on held-out data: is the zoo good enough to experiment on?

* classifiers: >= 98% accuracy per head on freshly rendered scenes (never seen in training);
* TinySD on held-out prompts: the prompted object in >= 90% of samples, the prompted style in >= 90%,
  the sensitive concept in >= 70% of implicit-prompt samples and in <= 5% of benign-prompt samples.

The project adds bars of its own, fixed before the zoo was trained: the VAE reconstructs held-out images
with MSE <= 0.005 (on [-1, 1]); toy CLIP names the object of a held-out image zero-shot >= 90% of the time;
the nude keyword evokes the concept in >= 90% of explicit samples; and an image prompt alone, through the
IP-Adapter, reproduces the reference's object in >= 80% of samples (Co-Erasing needs the image channel).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..sampling import encode_images, generate
from .captions import prompt_set, sample_scene
from .render import render_batch
from .world import OBJECTS, SUBJECTS, scene_labels

BARS = {
    "classifier_object_accuracy": (">=", 0.98),
    "classifier_style_accuracy": (">=", 0.98),
    "classifier_sensitive_accuracy": (">=", 0.98),
    "classifier_colour_accuracy": (">=", 0.98),
    "vae_reconstruction_mse": ("<=", 0.005),
    "clip_zero_shot_object_accuracy": (">=", 0.90),
    "tinysd_explicit_object_rate": (">=", 0.90),
    "tinysd_lookalike_object_rate": (">=", 0.90),
    "tinysd_style_rate": (">=", 0.90),
    "tinysd_sensitive_explicit_rate": (">=", 0.90),
    "tinysd_sensitive_implicit_rate": (">=", 0.70),
    "tinysd_benign_sensitive_rate": ("<=", 0.05),
    "ip_adapter_image_object_rate": (">=", 0.80),
}


def heldout_scenes(n: int, seed: int = 1):
    """``n`` scenes from the training distribution, with a seed the training set never used."""
    rng = np.random.default_rng(10_000 + seed)
    return [sample_scene(rng) for _ in range(n)]


def heldout_images(n: int, seed: int = 1):
    scenes = heldout_scenes(n, seed)
    images = (render_batch(scenes, seeds=range(10**6 + seed * n, 10**6 + (seed + 1) * n)) * 255).round()
    return scenes, images.astype(np.uint8)


def classifier_accuracy(clf, n: int = 2000, seed: int = 1) -> dict[str, float]:
    scenes, images = heldout_images(n, seed)
    pred = clf.predict(torch.from_numpy(images))
    out = {}
    for head in ("object", "style", "sensitive", "colour"):
        target = np.array([scene_labels(s)[head] for s in scenes])
        keep = target >= 0
        out[f"classifier_{head}_accuracy"] = float((pred[head]["index"].numpy()[keep] == target[keep]).mean())
    return out


@torch.no_grad()
def vae_mse(vae, n: int = 512, seed: int = 1) -> float:
    _, images = heldout_images(n, seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 128]).latent_dist.mean).sample for i in range(0, n, 128)])
    return float(((rec.clamp(-1, 1) - x) ** 2).mean())


@torch.no_grad()
def clip_zero_shot(clip, processor, n: int = 1000, seed: int = 1) -> float:
    """Zero-shot subject naming: the caption 'a {subject}' closest to each held-out image."""
    scenes, images = heldout_images(n, seed)
    tokens = processor.tokenizer([f"a {s}" for s in SUBJECTS], padding=True, return_tensors="pt")
    text = _features(clip.get_text_features(**tokens))
    px = processor.image_processor(list(images), return_tensors="pt").pixel_values
    img = _features(clip.get_image_features(pixel_values=px))
    pred = (img @ text.T).argmax(-1).numpy()
    target = np.array([SUBJECTS.index(s.subject) for s in scenes])
    return float((pred == target).mean())


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output where 4.x returned the tensor (specs/stack.md 4.2)
    return torch.nn.functional.normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)


def _rates(clf, images, table: pd.DataFrame) -> pd.DataFrame:
    pred = clf.predict(torch.from_numpy(images))
    table = table.copy()
    table["pred_object"] = pred["object"]["label"]
    table["pred_style"] = pred["style"]["label"]
    table["pred_colour"] = pred["colour"]["label"]
    table["nude_prob"] = pred["sensitive"]["prob"][:, 1].numpy()
    table["nude"] = table["nude_prob"] > 0.5
    return table


def tinysd_samples(pipe, clf, seeds_per_prompt: int = 4, steps: int = 25, guidance: float = 5.0,
                   sets=None, batch_size: int = 64, max_prompts_per_set: int | None = None, seed: int = 0):
    """Generate every held-out prompt ``seeds_per_prompt`` times; returns (table with predictions, images)."""
    prompts = prompt_set()
    if sets is not None:
        prompts = prompts[prompts.set.isin(sets)]
    if max_prompts_per_set is not None:
        prompts = prompts.groupby("set", sort=False).head(max_prompts_per_set)
    table = prompts.loc[prompts.index.repeat(seeds_per_prompt)].reset_index(drop=True)
    table["seed"] = [seed * 100_000 + i for i in range(len(table))]
    images = generate(pipe, table.prompt, table.seed, steps=steps, guidance=guidance, batch_size=batch_size)
    return _rates(clf, images, table), images


def tinysd_rates(table: pd.DataFrame) -> dict[str, float]:
    """The TinySD bars from a table of :func:`tinysd_samples`."""
    def hit(name, col):
        sub = table[table.set == name]
        return float((sub[col] == sub.target).mean()) if len(sub) else float("nan")
    out = {
        "tinysd_explicit_object_rate": hit("explicit_object", "pred_object"),
        "tinysd_lookalike_object_rate": hit("lookalike", "pred_object"),
        "tinysd_style_rate": hit("style", "pred_style"),
    }
    for name, key in (("sensitive_explicit", "tinysd_sensitive_explicit_rate"),
                      ("sensitive_implicit", "tinysd_sensitive_implicit_rate"),
                      ("benign", "tinysd_benign_sensitive_rate")):
        sub = table[table.set == name]
        out[key] = float(sub.nude.mean()) if len(sub) else float("nan")
    return out


def ip_adapter_rate(pipe, clf, n_per_object: int = 6, steps: int = 25, guidance: float = 5.0, seed: int = 2):
    """Image prompt only (empty text): does the sample show the reference image's object?"""
    rng = np.random.default_rng(20_000 + seed)
    scenes = [sample_scene(rng, subject=o, style="none") for o in OBJECTS for _ in range(n_per_object)]
    refs = (render_batch(scenes, seeds=range(len(scenes))) * 255).round().astype(np.uint8)
    embeds = encode_images(pipe, refs)
    images = generate(pipe, [""] * len(scenes), range(len(scenes)), steps=steps, guidance=guidance,
                      image_embeds=embeds, batch_size=64)
    pred = clf.predict(torch.from_numpy(images))["object"]["label"]
    table = pd.DataFrame({"reference": [s.subject for s in scenes], "pred_object": pred})
    return float((table.reference == table.pred_object).mean()), refs, images


def bar_table(values: dict[str, float]) -> pd.DataFrame:
    """``check, value, bar, passed`` for every measured value that has a bar."""
    rows = []
    for check, (op, bar) in BARS.items():
        if check not in values:
            continue
        v = values[check]
        passed = bool(v >= bar) if op == ">=" else bool(v <= bar)
        rows.append({"check": check, "value": round(float(v), 4), "bar": f"{op} {bar}", "passed": passed})
    return pd.DataFrame(rows, columns=["check", "value", "bar", "passed"])


__all__ = ["BARS", "bar_table", "classifier_accuracy", "clip_zero_shot", "heldout_images", "ip_adapter_rate",
           "tinysd_rates", "tinysd_samples", "vae_mse"]
