"""TICoE's prompt banks for the toy world: about 30 phrasings of each erased concept (``specs/ticoe.md`` section 1).

The released banks (``OpenAscent-L/TICoE``, ``configs/prompt_banks/*.json``) are bare phrases, 30 or 31 per concept:
the concept's name, its synonyms and kinds ("tench", "common tench", "Tinca tinca", "olive-green tench", ...), and
for nudity also related words ("swimsuit", "torso") that matter for collateral damage. The toy analog is built
here from the toy grammar's vocabulary alone (:mod:`.world`), deterministically, in the same spirit:

* ``"tench"`` (the object of TICoE's Table B): the bare name, "a tench", each colour, each background, colour and
  background together, and the tench in each style;
* ``"nudity"``: the keyword, the explicit subject, every implicit phrasing ("an unclothed person", ...), the
  context phrases ("a person bathing"), and explicit / implicit subjects in a context or on a background;
* ``"starry style"``: the style's name, its artist ("vincent vael"), "by vincent vael", "in the style of ...",
  and subjects (objects, a person) painted that way.

No prompt of a bank is a held-out evaluation prompt (:func:`heldout_prompt_strings`): a phrase that is one is
left out, and the next candidate taken. Phrases are shared, as they are on SD (the released nudity bank holds
synonyms that I2P's prompts use; TRCE's pairs, chapter 11, hold the toy's implicit phrasings too): "a person in the
shower" is a bank prompt and part of the held-out "a person in the shower on a grey background". So TICoE trains on
the concept's phrasings, as the method intends, but never on an evaluation prompt. :func:`write_banks` writes them to
``data/prompt_banks/toy/<concept>.json`` in the code's format (``{"concept": ..., "prompts": [...]}``); a test
checks that the committed files equal what this module builds.
"""
from __future__ import annotations

import json
from pathlib import Path

from .captions import _article, background_phrase, heldout_prompt_strings, style_phrase
from .world import (ARTISTS, BACKGROUNDS, COLOURS, IMPLICIT_SUBJECTS, OBJECTS, SENSITIVE_CONTEXTS, SENSITIVE_KEYWORD,
                    STYLES)

BANK_SIZE = 30
BANK_CONCEPTS = ("tench", "nudity", "starry style")
BANK_FOLDER = Path(__file__).resolve().parents[2] / "data" / "prompt_banks" / "toy"


def _candidates(concept: str) -> list[str]:
    colours, bgs = list(COLOURS), [background_phrase(b) for b in BACKGROUNDS]
    if concept == "tench":
        out = ["tench", "a tench"] + [f"{_article(c)} {c} tench" for c in colours] + [f"a tench {b}" for b in bgs]
        out += [f"{_article(c)} {c} tench {b}" for c in colours for b in bgs]
        out += [f"a tench, {style_phrase(s, 0)}" for s in STYLES]
        return out
    if concept == "nudity":
        out = [SENSITIVE_KEYWORD, f"a {SENSITIVE_KEYWORD} person"] + list(IMPLICIT_SUBJECTS)
        out += [f"a person {c}" for c in SENSITIVE_CONTEXTS] + [f"a {SENSITIVE_KEYWORD} person {c}"
                                                               for c in SENSITIVE_CONTEXTS]
        out += [f"a {SENSITIVE_KEYWORD} person {b}" for b in bgs] + [f"{s} {c}" for s in IMPLICIT_SUBJECTS
                                                                    for c in SENSITIVE_CONTEXTS]
        return out
    if concept == "starry style":
        artist = ARTISTS["starry"]
        out = ["starry style", "in starry style", artist, f"by {artist}", f"in the style of {artist}"]
        out += [f"{_article(o)} {o}, {style_phrase('starry', k % 3)}" for k, o in enumerate(OBJECTS)]
        out += [f"a person, {style_phrase('starry', k)}" for k in range(3)]
        out += [f"{_article(c)} {c} {o}, {style_phrase('starry', k % 3)}"
                for k, (c, o) in enumerate(zip(colours * 2, OBJECTS + OBJECTS[:4]))]
        out += [f"a person {b}, {style_phrase('starry', k % 3)}" for k, b in enumerate(bgs)]
        return out
    raise ValueError(f"no toy prompt bank for {concept!r}; banks: {', '.join(BANK_CONCEPTS)}")


def toy_bank(concept: str, size: int = BANK_SIZE) -> list[str]:
    """The first ``size`` distinct candidate phrasings of ``concept`` that are not held-out evaluation prompts."""
    held_out, out = heldout_prompt_strings(), []
    for prompt in _candidates(concept):
        if prompt not in held_out and prompt not in out:
            out.append(prompt)
    if len(out) < size:
        raise RuntimeError(f"only {len(out)} bank prompts for {concept!r}, {size} asked")
    return out[:size]


def bank_path(concept: str, folder: Path = BANK_FOLDER) -> Path:
    """The committed bank file of ``concept``."""
    return Path(folder) / f"{concept.replace(' ', '_')}.json"


def write_banks(folder: Path = BANK_FOLDER) -> list[Path]:
    """Write every toy bank as ``<folder>/<concept>.json`` (atomically); returns the paths."""
    from .._io import atomic_path
    paths = []
    for concept in BANK_CONCEPTS:
        path = bank_path(concept, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"concept": concept, "prompts": toy_bank(concept)}, indent=2) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":  # python -m erasure_lib.toyworld.banks
    for p in write_banks():
        print(p)
