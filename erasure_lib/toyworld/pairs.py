"""(malicious, safe) prompt pairs of the toy world, for the erasure methods that remap one prompt onto another
(TRCE's stage 1 and 2: ``specs/trce.md`` sections 1.2 and 2.1).

TRCE builds its pairs as ``(template_k(malicious concept), template_k(safe concept))``: the same context with the
concept swapped, which the paper calls a *contextually similar safe prompt*. On SD v1.4 the contexts are 15
MACE-style templates ("{} in a photo", "An oil portrait of {}", ...) and the concepts 20 sexual terms, all mapped
to "a person wearing clothes". The toy analog uses the toy grammar's own contexts (:data:`TEMPLATES`: bare, the
four backgrounds, the styles by name and by artist) and, per erased concept (the keys of
:data:`erasure_lib.tasks.TOY_CONCEPTS`):

* ``"nudity"``: the explicit subject "a nude person", each implicit phrasing ("an unclothed person", ...) and each
  context-only phrase ("a person bathing", ...), with and without a context; the safe counterpart is the
  clothed "a person" in the same template (in the training captions the bare "a person" is always clothed, the
  toy's "a person wearing clothes"). A context phrase is dropped from the safe prompt: the contexts occur only
  with the nude person in training, so keeping one would keep the concept.
* ``"church"`` (an object): "a church", "a red church", ...; the safe counterpart is concept-free: the template
  without its subject ("on a black background"; "" for the bare template).
* ``"starry style"`` (a style): a subject painted "by vincent vael", "in the style of vincent vael" (explicit) or
  "in starry style" (implicit); the safe counterpart is the same prompt without the style.

No pair's malicious or safe prompt is a held-out evaluation prompt (:func:`heldout_prompt_strings`): such a pair
is left out, so that stage 1 never trains on what the evaluation measures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .captions import _article, background_phrase, heldout_prompt_strings, style_phrase
from .world import ARTISTS, BACKGROUNDS, COLOURS, IMPLICIT_SUBJECTS, SENSITIVE_CONTEXTS, SENSITIVE_KEYWORD, STYLES

PAIR_KINDS = ("explicit", "implicit", "context")


@dataclass(frozen=True)
class PromptPair:
    """One (malicious, safe) pair: ``keyword`` is the word of the malicious prompt that names the concept (TRCE's
    [KEY] token; for a context-only prompt the context word), ``kind`` one of :data:`PAIR_KINDS`."""

    malicious: str
    safe: str
    keyword: str = ""        # optional: only TRCE's [KEY] mapping needs it
    kind: str = "explicit"

    def __post_init__(self):
        if not isinstance(self.malicious, str) or not isinstance(self.safe, str) or not self.malicious.strip():
            raise ValueError(f"a pair needs a non-empty malicious prompt and a safe prompt (str), got "
                             f"{self.malicious!r}, {self.safe!r}")
        if self.kind not in PAIR_KINDS:
            raise ValueError(f"pair kind {self.kind!r}; valid: {', '.join(PAIR_KINDS)}")
        if self.malicious.strip() == self.safe.strip():
            raise ValueError(f"a pair's malicious prompt equals its safe prompt: {self.malicious!r}")
        if self.keyword and self.keyword.lower() not in re.findall(r"[\w']+", self.malicious.lower()):
            raise ValueError(f"keyword {self.keyword!r} is not a word of {self.malicious!r}")


# The toy's 15 contexts, TRCE's 15 templates' analog: "{}" is the subject phrase. Background phrases and styles
# are the grammar's; every template is a caption form the toy saw in training.
TEMPLATES: tuple[str, ...] = (
    "{}",
    *(f"{{}} {background_phrase(bg)}" for bg in BACKGROUNDS),
    *(f"{{}}, {style_phrase(s, 0)}" for s in ("sketch", "mosaic", "neon")),
    *(f"{{}} {background_phrase(bg)}, {style_phrase(s, form)}"
      for bg, s, form in (("black", "sketch", 1), ("grey", "mosaic", 2), ("striped", "neon", 1),
                          ("beach", "sketch", 2), ("black", "mosaic", 1), ("grey", "neon", 2),
                          ("beach", "mosaic", 0))),
)
# the context-only phrases' keyword: the word that carries the context
_CONTEXT_KEYWORD = {"bathing": "bathing", "in the sauna": "sauna", "in the shower": "shower",
                    "sunbathing": "sunbathing"}
_IMPLICIT_KEYWORD = {"an unclothed person": "unclothed", "an undressed person": "undressed",
                     "a person without clothes": "without", "a topless person": "topless", "a bare person": "bare"}
STYLE_SUBJECTS = ("a red church", "a blue house", "a green umbrella", "a person", "a yellow camera")


def _subjects(concept: str):
    """``(malicious subject phrase, safe subject phrase, keyword, kind)`` of a concept, before templating."""
    if concept == "nudity":
        out = [(f"a {SENSITIVE_KEYWORD} person", "a person", SENSITIVE_KEYWORD, "explicit")]
        out += [(f"a {SENSITIVE_KEYWORD} person {c}", "a person", SENSITIVE_KEYWORD, "explicit")
                for c in SENSITIVE_CONTEXTS]
        out += [(s, "a person", _IMPLICIT_KEYWORD[s], "implicit") for s in IMPLICIT_SUBJECTS]
        out += [(f"{s} {c}", "a person", _IMPLICIT_KEYWORD[s], "implicit")
                for s, c in zip(IMPLICIT_SUBJECTS, SENSITIVE_CONTEXTS * 2)]
        out += [(f"a person {c}", "a person", _CONTEXT_KEYWORD[c], "context") for c in SENSITIVE_CONTEXTS]
        return out
    if concept == "church":
        return [("a church", "", "church", "explicit")] + [
            (f"{_article(c)} {c} church", "", "church", "explicit") for c in COLOURS]
    raise ValueError(f"unknown toy concept {concept!r} for prompt pairs; valid: nudity, church, starry style")


def toy_pairs(concept: str) -> list[PromptPair]:
    """Every (malicious, safe) template pair of a toy concept (``"nudity"``, ``"church"``, ``"starry style"``), in a
    fixed order, none containing a held-out evaluation prompt (see the module docstring)."""
    held_out = heldout_prompt_strings()
    pairs, seen = [], set()
    if concept == "starry style":
        artist = ARTISTS["starry"]
        raw = []
        for subject in STYLE_SUBJECTS:
            for bg in (None,) + BACKGROUNDS:
                base = subject if bg is None else f"{subject} {background_phrase(bg)}"
                raw += [(f"{base}, {style_phrase('starry', form)}", base, kw, kind)
                        for form, kw, kind in ((1, "vincent", "explicit"), (2, "vincent", "explicit"),
                                               (0, "starry", "implicit"))]
    else:
        raw = [(t.format(m).strip().removeprefix(", "), t.format(s).strip().removeprefix(", "), kw, kind)
               for m, s, kw, kind in _subjects(concept) for t in TEMPLATES]
    for malicious, safe, keyword, kind in raw:
        if malicious in held_out or safe in held_out or (malicious, safe) in seen:
            continue
        seen.add((malicious, safe))
        pairs.append(PromptPair(malicious, safe, keyword, kind))
    return pairs


def toy_trajectory_prompts(concept: str) -> list[tuple[str, str]]:
    """TRCE's stage-2 prompts of a toy concept: one (malicious, safe) pair per malicious subject, without a template
    (the reference's ``"a photo of {concept}"`` / ``"a photo of {safe}"``, spec 2.1); for the style, its two names
    on a subject. None is a held-out evaluation prompt."""
    held_out = heldout_prompt_strings()
    if concept == "starry style":
        out = [(f"{s}, {style_phrase('starry', form)}", s) for s in STYLE_SUBJECTS for form in (0, 1)]
    else:
        out = [(m, s) for m, s, _, _ in _subjects(concept)]
    return [(m, s) for m, s in out if m not in held_out and s not in held_out]


def prior_captions(concept: str, n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` captions of the toy's training distribution without the erased concept (no nude scene for
    ``"nudity"``, no church for ``"church"``, nothing in the starry style for ``"starry style"``): the benign prior
    that keeps a closed-form edit from moving anything else (TRCE's COCO cache, spec 1.4). Drawn with
    :func:`~erasure_lib.toyworld.captions.sample_training_pairs`, so no caption is a held-out evaluation prompt."""
    from .captions import sample_training_pairs
    keep = {"nudity": lambda sc: not sc.nude, "church": lambda sc: sc.subject != "church",
            "starry style": lambda sc: sc.style != "starry"}
    if concept not in keep:
        raise ValueError(f"unknown toy concept {concept!r}; valid: {', '.join(TOY_PAIR_CONCEPTS)}")
    if n < 1:
        raise ValueError("n must be >= 1")
    out, draw = [], 0
    while len(out) < n:
        scenes, captions = sample_training_pairs(2 * n, seed + 7919 * draw)
        out += [c for sc, c in zip(scenes, captions) if keep[concept](sc)]
        draw += 1
    return out[:n]


TOY_PAIR_CONCEPTS = ("nudity", "starry style", "church")

__all__ = ["PAIR_KINDS", "PromptPair", "STYLE_SUBJECTS", "TEMPLATES", "TOY_PAIR_CONCEPTS", "prior_captions",
           "toy_pairs",
           "toy_trajectory_prompts"]
