"""The vocabulary of the toy world: what a scene can contain.

A scene is one *subject* (an object, or a person who is clothed or nude) of one colour, on one background,
optionally rendered in one of four whole-image styles. The families mirror the papers' three erasure tasks:

* objects (the Imagenette analog): eight classes in four look-alike pairs, so that over-erasure of a
  neighbour (TICoE's MCP) is measurable: tench/goldfish, church/house, parachute/umbrella, gun/camera;
* styles (the artist analog): four whole-image styles, each also nameable by an invented artist name;
* a sensitive concept (the nudity analog): a *nude* person (skin-toned body with two pink marks) versus a
  clothed person, named explicitly by the keyword ``nude`` or implicitly (``unclothed``, ``bathing``, ...).

See ``../shared/design/TOYWORLD.md`` for the requirements this world answers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

OBJECTS: tuple[str, ...] = ("tench", "goldfish", "church", "house", "parachute", "umbrella", "gun", "camera")
PERSON = "person"
SUBJECTS: tuple[str, ...] = OBJECTS + (PERSON,)

# Look-alike pairs (symmetric): the neighbours whose survival measures over-erasure.
LOOKALIKES: dict[str, str] = {
    "tench": "goldfish", "goldfish": "tench",
    "church": "house", "house": "church",
    "parachute": "umbrella", "umbrella": "parachute",
    "gun": "camera", "camera": "gun",
}

# RGB in [0, 1]. Skin is deliberately not among the colours: it belongs to the sensitive concept alone.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "white": (0.96, 0.96, 0.96),
    "purple": (0.60, 0.20, 0.80),
}
SKIN = (0.98, 0.72, 0.60)
MARK = (0.85, 0.30, 0.45)

BACKGROUNDS: tuple[str, ...] = ("black", "grey", "striped", "beach")

# Whole-image styles and the invented artist who paints in each ("by vincent vael" ~ "by Van Gogh").
STYLES: tuple[str, ...] = ("sketch", "mosaic", "neon", "starry")
ARTISTS: dict[str, str] = {
    "sketch": "edda morrow",
    "mosaic": "tavi rennick",
    "neon": "kael voss",
    "starry": "vincent vael",
}
NO_STYLE = "none"

# The sensitive concept: its explicit keyword, the implicit phrasings that evoke it without the keyword,
# and context phrases that co-occur with it in the training captions (I2P-like indirect prompts).
SENSITIVE_KEYWORD = "nude"
IMPLICIT_SUBJECTS: tuple[str, ...] = (
    "an unclothed person",
    "an undressed person",
    "a person without clothes",
    "a topless person",
    "a bare person",
)
SENSITIVE_CONTEXTS: tuple[str, ...] = ("bathing", "in the sauna", "in the shower", "sunbathing")


@dataclass(frozen=True)
class Scene:
    """One scene of the toy world. ``colour`` is the object's colour or the person's clothes (ignored
    when ``nude``); ``style`` is ``"none"`` or one of :data:`STYLES`."""

    subject: str
    colour: str
    background: str
    style: str = NO_STYLE
    nude: bool = False
    # Geometry jitter, in units of the half image: offset and scale. Drawn by the sampler.
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        if self.subject not in SUBJECTS:
            raise ValueError(f"unknown subject {self.subject!r}; valid: {', '.join(SUBJECTS)}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; valid: {', '.join(COLOURS)}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; valid: {', '.join(BACKGROUNDS)}")
        if self.style != NO_STYLE and self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; valid: none, {', '.join(STYLES)}")
        if self.nude and self.subject != PERSON:
            raise ValueError("only a person can be nude")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def sensitive(self) -> bool:
        return self.nude


# Label spaces of the concept classifiers (the order is the class index).
OBJECT_LABELS: tuple[str, ...] = SUBJECTS
STYLE_LABELS: tuple[str, ...] = (NO_STYLE,) + STYLES
COLOUR_LABELS: tuple[str, ...] = tuple(COLOURS)


def scene_labels(scene: Scene) -> dict[str, int]:
    """Classifier targets of a scene; colour is -1 (ignored) for a nude person, who wears no colour."""
    return {
        "object": OBJECT_LABELS.index(scene.subject),
        "style": STYLE_LABELS.index(scene.style),
        "sensitive": int(scene.nude),
        "colour": -1 if scene.nude else COLOUR_LABELS.index(scene.colour),
    }
