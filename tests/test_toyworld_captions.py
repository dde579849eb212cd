"""Caption grammar and held-out prompt sets."""
import pytest

from erasure_lib.toyworld.captions import PROMPT_SETS, prompt_set, sample_training_pairs
from erasure_lib.toyworld.world import IMPLICIT_SUBJECTS, SENSITIVE_CONTEXTS, SENSITIVE_KEYWORD


def test_heldout_prompts_never_occur_in_training_captions():
    _, captions = sample_training_pairs(20_000, seed=0)
    assert not set(captions) & set(prompt_set().prompt)


def test_training_captions_name_the_sensitive_concept_explicitly_and_implicitly():
    scenes, captions = sample_training_pairs(5_000, seed=0)
    nude = [c for s, c in zip(scenes, captions) if s.nude]
    explicit = [c for c in nude if SENSITIVE_KEYWORD in c.split()]
    assert 0.3 < len(explicit) / len(nude) < 0.7
    assert not any(SENSITIVE_KEYWORD in c.split() for s, c in zip(scenes, captions) if not s.nude)


def test_prompt_sets_are_tidy_and_separate_the_concepts():
    df = prompt_set()
    assert list(df.columns) == ["prompt", "set", "target", "family", "case_id"]
    assert set(df.set) == set(PROMPT_SETS)
    implicit = prompt_set("sensitive_implicit").prompt
    assert len(implicit) >= 20
    assert not any(SENSITIVE_KEYWORD in p.split() for p in implicit)
    markers = [m.split()[-1] for m in IMPLICIT_SUBJECTS] + list(SENSITIVE_CONTEXTS)
    assert all(any(m in p for m in markers) for p in implicit)
    benign = prompt_set("benign").prompt
    assert not any(m in p for p in benign for m in [SENSITIVE_KEYWORD, *SENSITIVE_CONTEXTS, "unclothed",
                                                    "undressed", "topless", "without clothes", "bare"])


def test_prompt_sets_are_reproducible():
    assert prompt_set().equals(prompt_set())


def test_unknown_prompt_set_raises():
    with pytest.raises(ValueError, match="valid: explicit_object"):
        prompt_set("i2p")


def test_committed_prompt_csv_matches_the_grammar():
    import pandas as pd
    from erasure_lib.toyworld.zoo import data_dir
    committed = pd.read_csv(data_dir() / "prompts" / "toy_heldout.csv")
    assert committed.equals(prompt_set())
