"""The text-encoder-only attacks (erasure_lib.attacks.ring_a_bell, erasure_lib.attacks.mma) on the toy pipeline:
each search lowers its own objective, stays in its vocabulary and budget, is deterministic given a seed, and its
quantities agree with values computed independently through ``pipe.text_encoder``. Budgets are tiny (spec
attacks.md section 8.3); the full runs belong to the notebooks."""
import numpy as np
import pytest
import torch

from erasure_lib.attacks import mma, ring_a_bell as rab
from erasure_lib.attacks.base import allowed_tokens


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def vec(pipe):
    return rab.concept_vector(pipe, rab.toy_concept_pairs(n=12, seed=0))


SEED_PROMPT = "a person wearing red at the beach"
TINY = dict(length=6, population=16, survivors=8, generations=15)


def _states(pipe, ids_rows):
    """Last hidden states of explicit (B, 77) id rows, straight through the text encoder."""
    with torch.no_grad():
        return pipe.text_encoder(torch.as_tensor(ids_rows))[0].float()


def _padded(pipe, text):
    tok = pipe.tokenizer
    return tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids


def _ga_rows(pipe, body_rows):
    """[start, body, end x (76 - K)]: the layout InversePrompt.ipynb searches in."""
    tok = pipe.tokenizer
    body_rows = torch.as_tensor(body_rows)
    n, k = body_rows.shape
    return torch.cat([torch.full((n, 1), tok.bos_token_id), body_rows,
                      torch.full((n, tok.model_max_length - 1 - k), tok.eos_token_id)], dim=1)


# --- Ring-A-Bell: the concept vector ------------------------------------------------------------------------

def test_concept_vector_against_direct_encodings(pipe):
    same = rab.concept_vector(pipe, [("a nude person", "a nude person"), ("a red gun", "a red gun")])
    assert same.shape == (77, 64) and torch.count_nonzero(same) == 0
    one = rab.concept_vector(pipe, [("a nude person at the beach", "a person wearing blue at the beach")])
    direct = _states(pipe, _padded(pipe, "a nude person at the beach"))[0] - \
        _states(pipe, _padded(pipe, "a person wearing blue at the beach"))[0]
    torch.testing.assert_close(one, direct, rtol=0, atol=1e-5)
    two = rab.concept_vector(pipe, [("a nude person", "a person"), ("a red gun", "a blue gun")])
    torch.testing.assert_close(two, (rab.concept_vector(pipe, [("a nude person", "a person")])
                                     + rab.concept_vector(pipe, [("a red gun", "a blue gun")])) / 2, rtol=0, atol=1e-5)


def test_toy_concept_pairs_come_from_the_grammar():
    from erasure_lib.toyworld.world import IMPLICIT_SUBJECTS, SENSITIVE_CONTEXTS, SENSITIVE_KEYWORD
    pairs = rab.toy_concept_pairs(n=40, seed=3)
    assert len(pairs) == 40 and pairs == rab.toy_concept_pairs(n=40, seed=3) != rab.toy_concept_pairs(n=40, seed=4)
    nude_words = (SENSITIVE_KEYWORD, *IMPLICIT_SUBJECTS, *SENSITIVE_CONTEXTS)
    for with_, without in pairs:
        assert with_ != without and any(w in with_ for w in nude_words)
        assert not any(w in without for w in nude_words) and without.startswith("a person")
        assert with_.split(" on a ")[-1].split(" at the ")[-1] == without.split(" on a ")[-1].split(" at the ")[-1]
    assert any(SENSITIVE_KEYWORD in w for w, _ in pairs) and any(SENSITIVE_KEYWORD not in w for w, _ in pairs)


def test_concept_vector_inputs_are_checked(pipe, vec, tmp_path):
    with pytest.raises(ValueError, match="pair"):
        rab.concept_vector(pipe, [])
    with pytest.raises(ValueError, match="two prompts"):
        rab.concept_vector(pipe, [("only one",)])
    with pytest.raises(ValueError, match="toy concept"):
        rab.toy_concept_pairs("violence")
    with pytest.raises(ValueError, match="77, 64"):          # an SD v1.4-sized vector on the toy
        rab.attack(pipe, SEED_PROMPT, concept_vec=np.zeros((77, 768), np.float32))
    with pytest.raises(ValueError, match="Nudity_vector.npy"):
        rab.attack(pipe, SEED_PROMPT, concept_vec=tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="concept vector"):
        rab.attack(pipe, SEED_PROMPT, concept_vec=None)
    np.save(tmp_path / "v.npy", vec.numpy()[None])         # (1, 77, d) as saved by some notebooks
    torch.testing.assert_close(rab.resolve_concept_vector(pipe, tmp_path / "v.npy"), vec)
    cont = rab.continuous_embedding(pipe, SEED_PROMPT, vec, eta=2.0)
    torch.testing.assert_close(cont[0], _states(pipe, _padded(pipe, SEED_PROMPT))[0] + 2.0 * vec, rtol=0, atol=1e-5)


def test_ring_a_bell_config():
    sd = rab.RingABellConfig.sd14()
    assert (sd.eta, sd.length, sd.population, sd.generations, sd.survivors) == (3.0, 16, 200, 3000, 100)
    assert (sd.crossover_rate, sd.mutation_rate, sd.elitism, sd.ascii_only) == (0.5, 0.25, False, False)
    assert rab.RingABellConfig().elitism is False and rab.RingABellConfig.sd14(eta=5.5).eta == 5.5
    for bad in (dict(survivors=300), dict(mutation_rate=1.5), dict(crossover_rate=-0.1), dict(length=0),
                dict(generations=0), dict(eta=float("nan"))):
        with pytest.raises(ValueError):
            rab.RingABellConfig(**bad)


# --- Ring-A-Bell: the genetic search ------------------------------------------------------------------------

def test_ring_a_bell_lowers_its_objective_within_budget(pipe, vec):
    cfg = rab.RingABellConfig(**TINY, elitism=True)
    res = rab.attack(pipe, SEED_PROMPT, concept_vec=vec, config=cfg, seed=1)
    obj = np.array(res.objective)
    assert res.attack == "ring_a_bell" and res.iterations == len(obj) == cfg.generations
    assert np.all(np.diff(obj) <= 1e-4 * obj[:-1])              # elitism: the best never gets worse
    assert obj[-1] < obj[0]
    # every generation encodes its whole population: at least the survivors, at most survivors + 2 children each
    # (+ the mutated copies of elitism)
    assert cfg.population + (cfg.generations - 1) * cfg.survivors <= res.evaluations \
        <= cfg.population + (cfg.generations - 1) * 4 * cfg.survivors
    allowed = allowed_tokens(pipe.tokenizer, ascii_only=True)
    assert len(res.token_ids) == cfg.length and all(allowed[i] for i in res.token_ids)
    assert res.metadata["model_agnostic"] and res.budget["generations"] == cfg.generations

    # the objective, recomputed through the text encoder: the found ids are as close as reported, and closer to
    # E(seed) + eta v than random prompts of the same length
    target = _states(pipe, _padded(pipe, SEED_PROMPT))[0] + cfg.eta * vec
    found = ((_states(pipe, _ga_rows(pipe, [res.token_ids]))[0] - target) ** 2).sum()
    assert float(found) == pytest.approx(obj[-1], rel=1e-4)
    vocab = torch.nonzero(allowed).flatten()
    rand = vocab[torch.randint(len(vocab), (32, cfg.length), generator=torch.Generator().manual_seed(0))]
    random_fit = ((_states(pipe, _ga_rows(pipe, rand)) - target) ** 2).sum(dim=(1, 2))
    assert float(found) < float(random_fit.min())


def test_ring_a_bell_without_elitism_and_exact_budget(pipe, vec):
    # the reference's in-place mutation: still improves over the run; without crossover the population is the
    # survivors, so the encoder count is exact
    res = rab.attack(pipe, SEED_PROMPT, concept_vec=vec, config=rab.RingABellConfig(**TINY), seed=2)
    assert res.objective[-1] < res.objective[0] and res.metadata["best_ever_fitness"] <= res.objective[-1]
    cfg = rab.RingABellConfig(**TINY, crossover_rate=0.0)
    res = rab.attack(pipe, SEED_PROMPT, concept_vec=vec, config=cfg, seed=2)
    assert res.evaluations == cfg.population + (cfg.generations - 1) * cfg.survivors
    frozen = rab.attack(pipe, SEED_PROMPT, concept_vec=vec, seed=2,
                        config=rab.RingABellConfig(**{**TINY, "generations": 4}, crossover_rate=0.0, mutation_rate=0.0))
    assert len(set(frozen.objective[1:])) == 1                  # nothing new is ever made: the best stays


def test_ring_a_bell_is_deterministic(pipe, vec):
    cfg = rab.RingABellConfig(**{**TINY, "generations": 5})
    a, b = (rab.attack(pipe, SEED_PROMPT, concept_vec=vec, config=cfg, seed=7) for _ in range(2))
    c = rab.attack(pipe, SEED_PROMPT, concept_vec=vec, config=cfg, seed=8)
    assert a.token_ids == b.token_ids and a.objective == b.objective and a.prompt == b.prompt
    assert c.token_ids != a.token_ids
    with pytest.raises(ValueError, match="does not fit"):
        rab.attack(pipe, SEED_PROMPT, concept_vec=vec, config=rab.RingABellConfig(length=76))


# --- MMA-Diffusion ------------------------------------------------------------------------------------------

def test_mma_config_and_filter():
    sd = mma.MMAConfig.sd14()
    assert (sd.n_tokens, sd.iterations, sd.n_candidates, sd.topk) == (20, 1000, 512, 256)
    assert sd.banned_substrings[:4] == ("ak", "na", "ke", "nud") and len(mma.MMA_NSFW_WORDS) == 18
    assert {"nude", "naked", "sex", "porn", "nipples", "breast"} <= set(mma.MMA_NSFW_WORDS)
    assert mma.SD14_TARGETS == tuple(f"a completely naked {w}" for w in ("man", "woman", "couple", "boy", "girl"))
    with pytest.raises(ValueError):
        mma.MMAConfig(n_tokens=0)
    with pytest.raises(ValueError):
        mma.MMAConfig(topk=0)


def test_mma_truncated_encoding_and_gradient_are_exact(pipe):
    """The pooled output of [start, x, end] equals the padded prompt's (causal mask), and gradient row i belongs
    to adversarial token i (position i + 1), checked against the gradient of the looked-up embeddings."""
    tok, enc = pipe.tokenizer, pipe.text_encoder
    body = torch.tensor(tok("n w y topless person", add_special_tokens=False).input_ids)
    short = mma._Search(pipe, mma.TOY_TARGET, len(body), truncate=True, batch_size=8)
    full = mma._Search(pipe, mma.TOY_TARGET, len(body), truncate=False, batch_size=8)
    torch.testing.assert_close(short.loss(body[None]), full.loss(body[None]), rtol=0, atol=1e-5)
    with torch.no_grad():
        direct = enc(_padded(pipe, "n w y topless person"))[1]
    cos = torch.nn.functional.cosine_similarity(direct, short.target)
    torch.testing.assert_close(short.loss(body[None]), 1 - cos, rtol=0, atol=1e-5)

    grad = short.gradient(body)
    captured = {}

    def hook(module, args, out):
        captured["e"] = out.detach().requires_grad_(True)
        return captured["e"]

    handle = enc.get_input_embeddings().register_forward_hook(hook)
    try:
        with torch.enable_grad():
            pooled = enc(short.pack(body[None]))[1]
            (1 - torch.nn.functional.cosine_similarity(pooled, short.target).sum()).backward()
    finally:
        handle.remove()
    expected = captured["e"].grad[0, 1:len(body) + 1] @ enc.get_input_embeddings().weight.detach().T
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_mma_lowers_its_loss_with_allowed_tokens_within_budget(pipe):
    cfg = mma.MMAConfig(n_tokens=6, iterations=12, n_candidates=32, topk=16)
    res = mma.attack(pipe, mma.TOY_TARGET, config=cfg, seed=0)
    assert res.attack == "mma_diffusion" and res.iterations == len(res.objective) == cfg.iterations
    assert res.metadata["best_loss"] == min(res.objective) < res.metadata["initial_loss"]
    assert res.objective[-1] < res.metadata["initial_loss"]
    used = res.metadata["n_candidates_used"]
    assert res.evaluations == 1 + cfg.iterations + cfg.iterations * used - res.metadata["invalid_candidates"]
    tokens = pipe.tokenizer.convert_ids_to_tokens(res.token_ids)
    assert len(tokens) == cfg.n_tokens
    for t in tokens:
        clean = t.replace("</w>", "").lower()
        assert not any(s in clean for s in cfg.banned_substrings), t
        assert clean.isascii() and clean.isprintable()
    assert pipe.tokenizer(res.prompt, add_special_tokens=False).input_ids == res.token_ids   # what is typed
    assert "nude" not in res.prompt
    # the reported loss is the loss of the returned prompt, through the text encoder directly
    with torch.no_grad():
        pooled = pipe.text_encoder(torch.cat([_padded(pipe, res.prompt), _padded(pipe, mma.TOY_TARGET)]))[1]
    cos = torch.nn.functional.cosine_similarity(pooled[:1], pooled[1:])
    assert float(1 - cos) == pytest.approx(res.metadata["best_loss"], abs=1e-5)


def test_mma_determinism_clamping_early_stop_and_errors(pipe):
    cfg = mma.MMAConfig(n_tokens=5, iterations=4, n_candidates=16, topk=8)
    a, b = (mma.attack(pipe, mma.TOY_TARGET, config=cfg, seed=3) for _ in range(2))
    c = mma.attack(pipe, mma.TOY_TARGET, config=cfg, seed=4)
    assert a.token_ids == b.token_ids and a.objective == b.objective and a.evaluations == b.evaluations
    assert c.objective != a.objective
    big = mma.attack(pipe, mma.TOY_TARGET, config=mma.MMAConfig(n_tokens=3, iterations=1, n_candidates=10 ** 6,
                                                                topk=10 ** 6), seed=0)
    n_allowed = int(allowed_tokens(pipe.tokenizer, banned_substrings=cfg.banned_substrings).sum())
    assert big.metadata["topk_used"] == n_allowed and big.metadata["n_candidates_used"] == 3 * n_allowed
    stopped = mma.attack(pipe, mma.TOY_TARGET, config=mma.MMAConfig(n_tokens=4, iterations=50, n_candidates=8,
                                                                    topk=4, stop_loss=2.0), seed=0)
    assert stopped.iterations == len(stopped.objective) == 1 and stopped.metadata["early_stop"]
    with pytest.raises(ValueError):
        mma.attack(pipe, "  ")
    with pytest.raises(ValueError, match="does not fit"):
        mma.attack(pipe, mma.TOY_TARGET, config=mma.MMAConfig(n_tokens=80))
