"""The toy tokenizer and text encoder have CLIP's semantics (what TRCE's [EoT] edit relies on)."""
import pytest
import torch

from erasure_lib.toyworld.captions import prompt_set
from erasure_lib.toyworld.zoo import data_dir


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(data_dir() / "toy_clip", local_files_only=True)


def test_bos_eos_and_padding_with_eos(tokenizer):
    ids = tokenizer("a red gun on a grey background", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 == tokenizer.model_max_length
    assert ids[0] == tokenizer.bos_token_id
    words = tokenizer.tokenize("a red gun on a grey background")
    assert words == ["a</w>", "red</w>", "gun</w>", "on</w>", "a</w>", "grey</w>", "background</w>"]
    eot = 1 + len(words)
    assert ids[eot] == tokenizer.eos_token_id
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert all(i == tokenizer.eos_token_id for i in ids[eot:])


def test_grammar_words_are_single_tokens(tokenizer):
    for prompt in prompt_set().prompt:
        for word in prompt.replace(",", " ,").split():
            assert len(tokenizer.tokenize(word)) == 1, word


def test_eot_position_after_a_multi_token_word(tokenizer):
    # an unseen word falls apart into sub-word pieces; [EoT] sits after the last piece
    pieces = tokenizer.tokenize("xylophone")
    assert len(pieces) > 1 and pieces[-1].endswith("</w>")
    ids = tokenizer("a xylophone", padding="max_length", max_length=77).input_ids
    eot = ids.index(tokenizer.eos_token_id)
    assert eot == 1 + 1 + len(pieces)
    assert tokenizer.convert_ids_to_tokens(ids[2:eot]) == pieces


def test_long_prompts_are_truncated_to_77_with_eot_last(tokenizer):
    ids = tokenizer(" ".join(["red"] * 100), truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == tokenizer.eos_token_id


def test_text_encoder_is_causal_and_pools_at_the_first_eot(tokenizer):
    from transformers import CLIPTextModel
    encoder = CLIPTextModel.from_pretrained(data_dir() / "tinysd" / "text_encoder", local_files_only=True).eval()
    a = tokenizer(["a red gun at the beach", "a red gun on a black background"], padding="max_length",
                  max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = encoder(a)
    h = out.last_hidden_state
    # causal: the shared prefix "a red gun" (plus BOS) has identical states in both prompts
    assert torch.allclose(h[0, :4], h[1, :4], atol=1e-5)
    assert not torch.allclose(h[0, 4], h[1, 4], atol=1e-3)
    # pooled output = the hidden state at the first [EoT]
    eot = (a[0] == tokenizer.eos_token_id).nonzero()[0, 0]
    assert torch.allclose(out.pooler_output[0], h[0, eot], atol=1e-6)
