"""Ring-A-Bell: a model-agnostic search for discrete prompts whose text embedding carries an erased concept.

Paper: Y.-L. Tsai, C.-Y. Hsu, C. Xie, C.-H. Lin, J.-Y. Chen, B. Li, P.-Y. Chen, C.-M. Yu, C.-Y. Huang,
"Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models?", ICLR 2024, arXiv 2310.10012.
Code: ``chiayi-hsu/Ring-A-Bell`` @ e4585ada (``Get_Concept_Vector.ipynb``, ``InversePrompt.ipynb``). The continuous
variant is RECE's (``CharlesGong12/RECE``, ``attack_methods/RingABell.py``). Spec: ``specs/attacks.md`` sections 2,
7, 8. Written from the paper, the spec and a reading of the notebooks; no code is copied.

Algorithm (one seed prompt ``p``)::

    v      = mean_i [ E(p_i with the concept) - E(p_i without it) ]          (concept_vector; full (77, d) states)
    target = E(p) + eta * v
    population: ``population`` prompts [start, K uniform allowed ids, end, end, ...] (77 ids)
    repeat ``generations`` times:
        fitness(x) = sum over the 77 x d last hidden states of (E(x) - target)^2     (lower is better)
        keep the ``survivors`` fittest
        (not after the last generation) each survivor is kept and, with probability ``crossover_rate``, adds the
        two children of a single-point crossover with a random survivor; then each individual, with probability
        ``mutation_rate``, gets one random position replaced by a random allowed id
    the adversarial prompt is the decoded K tokens of the fittest individual of the last generation

``E`` is the text encoder (``pipe.text_encoder``) alone: the search **never touches the UNet**, so it is
model-agnostic and the erased model enters only when the found prompt is evaluated (generate + judge). This is
why one search transfers to every erasure method that keeps the text encoder.

Where this follows the reference code rather than the paper's prose, or deviates from both
    * No strict elitism (``elitism=False``, the code's behaviour): the notebook mutates the population list *in
      place*, survivors included, so the best individual can be lost and the best fitness per generation can
      rise. ``elitism=True`` mutates a *copy* of a survivor (appended to the population) and keeps the survivor,
      so the best fitness never rises.
    * Initial and mutated ids: the notebook draws ``randint(1, 49406)``, i.e. every id but 0 ("!") and the two
      special tokens. Here they are drawn uniformly from :func:`~.base.allowed_tokens` (every non-special token,
      optionally ASCII only): id 0 is not excluded (*inferred*: the notebook's comment, "avoid 0, 40496 and
      40497", reads like a typo for the special ids 49406 / 49407).
    * Prompts are padded with the end token right after the K tokens (``[49406, K ids, 49407 x (76-K)]``), as the
      notebook builds them, whatever the tokenizer's own pad token.
    * The random draws come from one ``numpy.random.Generator(seed)`` (the notebook uses the global ``random``
      and ``numpy`` states, unseeded); the population is evaluated ``batch_size`` rows per text-encoder forward
      and sorted with a stable sort (ties keep their order).
    * The crossover partner is drawn for every survivor and used where the coin says so (the notebook draws it
      only then): the same distribution, another stream of numbers.
    * ``metadata["prompt_fitness"]`` re-scores the *decoded text* as the pipeline would tokenise it: decoding and
      re-tokenising can merge sub-words, so what a user types is not always the searched ids (both are reported).

The concept vector
    On SD v1.4 the paper's 50 nudity prompt pairs (templates of nudity words x people x locations, each
    repeated 5 times, 19 of the 250 rows dropped where NudeNet found nothing; ``Get_Concept_Vector.ipynb`` with
    the reference's ``data/Prompts_For_ConceptVector/*.csv``) are not shipped by this project: pass your own
    pairs to :func:`concept_vector`, or the released vector (``Concept Vectors/Nudity_vector.npy`` of the
    reference repository, ``(77, 768)``) as a path or array to :func:`attack` (:func:`load_concept_vector`); a
    missing file or a vector of the wrong shape raises ``ValueError`` saying so. On the toy,
    :func:`toy_concept_pairs` draws pairs from the toy caption grammar.

Measured on the toy (unerased zoo, *toy* budget, eta 3, four clothed-person seed prompts, 4 images each at 10
steps, CFG 5): the seed prompts give no nude image, the decoded Ring-A-Bell prompts 0.94 (eta 1: 0.88, eta 2:
1.0); the GA finds the toy's implicit words ("topless", "undressed", "sauna") among sub-word noise.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backdoors.base import encode_texts
from .base import AttackResult, allowed_tokens, decode_tokens

ATTACK = "ring_a_bell"
TOY_CONCEPTS = ("nudity",)


@dataclass(frozen=True)
class RingABellConfig:
    """Ring-A-Bell hyper-parameters. ``InversePrompt.ipynb``'s values unless marked *toy* (:meth:`sd14` gives them
    all).

    The *toy* budget (64 x 150, about 10k text-encoder rows) runs in about ten seconds on one CPU core; the
    reference's 200 x 3000 (600k rows) takes about 10 minutes on the toy and is the GPU budget for SD v1.4."""

    eta: float = 3.0                 # eta, the notebook's ``cof``: 3 for nudity (violence: 5 - 5.5)
    length: int = 16                 # K, adversarial tokens (the notebook's ``length``; 75 for K = 77)
    population: int = 64             # *toy* (200): individuals drawn at the start
    generations: int = 150           # *toy* (3000)
    survivors: int = 32              # *toy* (100 = population // 2): the fittest kept each generation
    crossover_rate: float = 0.5      # per survivor: adds two single-point-crossover children
    mutation_rate: float = 0.25      # per individual: one random position gets a random allowed id
    elitism: bool = False            # False: mutation in place, survivors included (the code); True: mutate copies
    ascii_only: bool = True          # *toy* (False): the toy's non-ASCII tokens are bare byte symbols its tokenizer
                                     # maps back to the end token when the decoded prompt is typed in
    banned_substrings: tuple[str, ...] = ()  # no vocabulary filter in the reference
    batch_size: int = 256            # rows per text-encoder forward (memory only, not the result)

    def __post_init__(self):
        if min(self.length, self.population, self.generations, self.survivors, self.batch_size) < 1:
            raise ValueError("length, population, generations, survivors and batch_size must be >= 1")
        if self.survivors > self.population:
            raise ValueError(f"survivors ({self.survivors}) must not exceed the population ({self.population})")
        for name in ("crossover_rate", "mutation_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RingABellConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not np.isfinite(self.eta):
            raise ValueError("eta must be finite")
        object.__setattr__(self, "banned_substrings", tuple(self.banned_substrings))

    @classmethod
    def sd14(cls, **overrides) -> "RingABellConfig":
        """``InversePrompt.ipynb`` for nudity on SD v1.4: eta 3, K = 16, population 200, 3000 generations, 100
        survivors, crossover 0.5, mutation 0.25, no strict elitism, ids over the whole vocabulary."""
        return cls(**{**dict(eta=3.0, length=16, population=200, generations=3000, survivors=100,
                             crossover_rate=0.5, mutation_rate=0.25, elitism=False, ascii_only=False,
                             batch_size=200), **overrides})


# --- step 1: the concept vector -----------------------------------------------------------------------------

def concept_vector(pipe, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """``v = mean_i [E(with_i) - E(without_i)]`` over prompt ``pairs`` ``(with the concept, without it)``: the text
    encoder's full last hidden state, ``(77, d)`` float32 on the CPU (prompts padded as the pipeline pads them)."""
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("concept_vector needs at least one (with, without) prompt pair")
    if any(len(p) != 2 or not all(isinstance(s, str) for s in p) for p in pairs):
        raise ValueError("each pair must be two prompts: (with the concept, without it)")
    with torch.no_grad():
        _, with_ = encode_texts(pipe, [p[0] for p in pairs])
        _, without = encode_texts(pipe, [p[1] for p in pairs])
    return (with_ - without).mean(0)


def toy_concept_pairs(concept: str = "nudity", n: int = 50, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` prompt pairs for :func:`concept_vector` on the toy, drawn from the toy caption grammar: the same
    scene (background, optional style) once with a nude person (the grammar's explicit, implicit and
    context-only phrasings) and once with a clothed one, e.g. ``("a nude person at the beach", "a person wearing
    red at the beach")``; the toy analog of the paper's 50 templated pairs."""
    from ..toyworld.captions import background_phrase, sample_scene, style_phrase, subject_phrase
    from ..toyworld.world import NO_STYLE, PERSON
    if concept not in TOY_CONCEPTS:
        raise ValueError(f"unknown toy concept {concept!r}; valid: {', '.join(TOY_CONCEPTS)}")
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        nude = sample_scene(rng, subject=PERSON, nude=True)
        clothed = replace(nude, nude=False)
        with_, without = subject_phrase(nude, rng), subject_phrase(clothed, rng)
        rest = f" {background_phrase(nude.background)}"
        if nude.style != NO_STYLE:
            rest += ", " + style_phrase(nude.style, int(rng.integers(3)))
        pairs.append((with_ + rest, without + rest))
    return pairs


def load_concept_vector(path) -> torch.Tensor:
    """A saved concept vector (``.npy``, ``(77, d)`` or ``(1, 77, d)``) as float32, e.g. the reference
    repository's ``Concept Vectors/Nudity_vector.npy``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"no concept vector at {path!r}: download Ring-A-Bell's 'Concept Vectors/Nudity_vector.npy' "
                         "(github.com/chiayi-hsu/Ring-A-Bell) or build one with concept_vector(pipe, pairs)")
    return torch.from_numpy(np.load(path, allow_pickle=False)).float()


def resolve_concept_vector(pipe, concept_vec) -> torch.Tensor:
    """``concept_vec`` (tensor, array, or ``.npy`` path) as a ``(77, d)`` float32 tensor checked against ``pipe``'s
    text encoder."""
    if concept_vec is None:
        raise ValueError("Ring-A-Bell needs a concept vector: concept_vector(pipe, pairs) (toy: "
                         "toy_concept_pairs()), or a saved .npy such as the reference's Nudity_vector.npy")
    if isinstance(concept_vec, (str, os.PathLike)):
        concept_vec = load_concept_vector(concept_vec)
    vec = torch.as_tensor(np.asarray(concept_vec) if not torch.is_tensor(concept_vec) else concept_vec)
    vec = vec.detach().float().cpu()
    if vec.dim() == 3 and vec.shape[0] == 1:
        vec = vec[0]
    shape = (pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
    if tuple(vec.shape) != shape:
        raise ValueError(f"the concept vector has shape {tuple(vec.shape)}; this text encoder needs {shape} "
                         "(a vector of another model, e.g. SD v1.4's 77 x 768 on the toy?)")
    if not torch.isfinite(vec).all():
        raise ValueError("the concept vector has non-finite values")
    return vec


def continuous_embedding(pipe, prompt: str, concept_vec, eta: float = 3.0) -> torch.Tensor:
    """RECE's continuous Ring-A-Bell: ``E(prompt) + eta * v`` as ``(1, 77, d)`` float32 prompt embeddings on the
    CPU (cast them to the pipeline's device and dtype and pass them as ``prompt_embeds``); no token search, so no
    prompt a user could type."""
    vec = resolve_concept_vector(pipe, concept_vec)
    with torch.no_grad():
        _, states = encode_texts(pipe, [prompt])
    return states + eta * vec[None]


# --- step 2: the genetic search -----------------------------------------------------------------------------

def attack(pipe, seed_prompt: str, *, concept_vec, config: RingABellConfig | None = None, seed: int = 0,
           progress: bool = False) -> AttackResult:
    """Search ``config.length`` tokens whose text encoding is closest to ``E(seed_prompt) + eta * concept_vec``.

    Only ``pipe.tokenizer`` and ``pipe.text_encoder`` are used (model-agnostic: the UNet is never called).
    Returns an :class:`~.base.AttackResult` whose ``objective`` is the best fitness of each generation,
    ``evaluations`` the text-encoder rows encoded by the search, ``prompt`` the decoded tokens and ``token_ids``
    the searched ids (without the start / end tokens)."""
    config = config or RingABellConfig()
    if not isinstance(seed_prompt, str):
        raise ValueError("seed_prompt must be a string")
    tok, enc = pipe.tokenizer, pipe.text_encoder
    max_len = tok.model_max_length
    if config.length > max_len - 2:
        raise ValueError(f"length {config.length} does not fit: at most {max_len - 2} tokens between start and end")
    vec = resolve_concept_vector(pipe, concept_vec)
    start = time.perf_counter()
    with torch.no_grad():
        _, seed_states = encode_texts(pipe, [seed_prompt])
    target = (seed_states[0] + config.eta * vec).to(enc.device)
    vocab = torch.nonzero(allowed_tokens(tok, banned_substrings=config.banned_substrings,
                                         ascii_only=config.ascii_only)).flatten()
    rng = np.random.default_rng(seed)
    search = _Search(enc, target, tok.bos_token_id, tok.eos_token_id, max_len, config.batch_size)

    K = config.length
    population = vocab[torch.from_numpy(rng.integers(0, len(vocab), (config.population, K)))]
    objective: list[float] = []
    best_ever, best_ever_at = float("inf"), 0
    bar = tqdm(range(config.generations), desc=f"Ring-A-Bell {seed_prompt}"[:60], disable=not progress)
    for generation in bar:
        fit = search.fitness(population)
        order = torch.argsort(fit, stable=True)[: config.survivors]
        population, fit = population[order], fit[order]
        objective.append(float(fit[0]))
        if fit[0] < best_ever:
            best_ever, best_ever_at = float(fit[0]), generation
        bar.set_postfix(best=f"{objective[-1]:.4g}")
        if generation != config.generations - 1:
            population, is_survivor = _crossover(population, config.crossover_rate, rng)
            population = _mutate(population, is_survivor, config.mutation_rate, config.elitism, vocab, rng)

    ids = [int(i) for i in population[0]]
    prompt = decode_tokens(tok, ids)
    with torch.no_grad():
        _, typed = encode_texts(pipe, [prompt])
    prompt_fitness = float(((typed[0].to(target.device) - target) ** 2).sum())
    return AttackResult(
        attack=ATTACK, seed_prompt=seed_prompt, prompt=prompt, token_ids=ids, objective=objective,
        iterations=config.generations, evaluations=search.evaluations,
        budget={"generations": config.generations, "population": config.population,
                "survivors": config.survivors},
        config=asdict(config), seconds=time.perf_counter() - start,
        metadata={"seed": seed, "eta": config.eta, "length": K, "vocabulary": len(vocab),
                  "best_fitness": objective[-1], "best_ever_fitness": best_ever,
                  "best_ever_generation": best_ever_at, "prompt_fitness": prompt_fitness,
                  "concept_vector_norm": float(vec.norm()), "model_agnostic": True},
    )


class _Search:
    """Fitness of token populations against one target: the SSE over the full ``(77, d)`` last hidden state of
    ``[start, K ids, end x (76 - K)]``, ``batch_size`` rows per forward; counts the rows encoded."""

    def __init__(self, text_encoder, target, bos: int, eos: int, max_len: int, batch_size: int):
        self.encoder, self.target = text_encoder, target.float()
        self.bos, self.eos, self.max_len, self.batch_size = bos, eos, max_len, batch_size
        self.evaluations = 0

    def ids(self, population: torch.Tensor) -> torch.Tensor:
        n, k = population.shape
        return torch.cat([torch.full((n, 1), self.bos), population,
                          torch.full((n, self.max_len - 1 - k), self.eos)], dim=1)

    @torch.no_grad()
    def fitness(self, population: torch.Tensor) -> torch.Tensor:
        ids = self.ids(population)
        out = []
        for i in range(0, len(ids), self.batch_size):
            states = self.encoder(ids[i:i + self.batch_size].to(self.encoder.device))[0].float()
            out.append(((states - self.target) ** 2).sum(dim=(1, 2)).cpu())
        self.evaluations += len(ids)
        return torch.cat(out)


def _crossover(parents: torch.Tensor, rate: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each parent, then (with probability ``rate``) its two children with a random partner, cut after
    ``t ~ U{0..K-1}`` tokens (the notebook's cut point 1..K counts the start token); returns the new population
    in that order and which rows are the parents themselves."""
    n, k = parents.shape
    crossed = torch.from_numpy(rng.random(n) < rate)
    partner = parents[torch.from_numpy(rng.integers(0, n, n))]
    cut = torch.from_numpy(rng.integers(0, k, n))
    head = torch.arange(k)[None, :] < cut[:, None]
    first, second = torch.where(head, parents, partner), torch.where(head, partner, parents)
    blocks = torch.stack([parents, first, second], dim=1)                     # (n, 3, K)
    keep = torch.stack([torch.ones(n, dtype=torch.bool), crossed, crossed], dim=1)
    is_parent = torch.zeros(n, 3, dtype=torch.bool)
    is_parent[:, 0] = True
    return blocks[keep], is_parent[keep]


def _mutate(population: torch.Tensor, is_survivor: torch.Tensor, rate: float, elitism: bool, vocab: torch.Tensor,
            rng: np.random.Generator) -> torch.Tensor:
    """With probability ``rate`` an individual gets one position replaced by a random allowed id: in place (the
    notebook), or, with ``elitism``, in a copy appended after the population when the individual is a survivor."""
    n, k = population.shape
    hit = torch.from_numpy(rng.random(n) < rate)
    pos = torch.from_numpy(rng.integers(0, k, n))
    val = vocab[torch.from_numpy(rng.integers(0, len(vocab), n))]
    mutated = population.clone()
    rows = torch.nonzero(hit).flatten()
    mutated[rows, pos[rows]] = val[rows]
    if not elitism:
        return mutated
    copies = hit & is_survivor
    out = torch.where(copies[:, None], population, mutated)
    return torch.cat([out, mutated[copies]])


__all__ = ["RingABellConfig", "attack", "concept_vector", "continuous_embedding", "load_concept_vector",
           "resolve_concept_vector", "toy_concept_pairs"]
