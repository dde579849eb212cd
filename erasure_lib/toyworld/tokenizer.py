"""A CLIP tokenizer for the toy world: byte-level BPE with CLIP's semantics.

Like OpenAI CLIP's tokenizer (and so SD v1.4's): every prompt is ``<|startoftext|> ... <|endoftext|>``,
padded to ``model_max_length=77`` with ``<|endoftext|>`` itself, words end in ``</w>``, text is lower-cased.
With a causal text encoder this means the first ``<|endoftext|>`` ([EoT]) has read the whole prompt and every
padding position after it is a further [EoT]-like summary, exactly the property TRCE's [EoT] edit relies on.
Words of the toy grammar are single tokens; any other word falls apart into sub-word pieces, as on SD.
"""
from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def train_tokenizer(texts, vocab_size: int = 1000, max_length: int = 77) -> CLIPTokenizer:
    """Train the BPE on ``texts`` and wrap it as a ``transformers.CLIPTokenizer``."""
    bpe = Tokenizer(models.BPE(unk_token=EOS, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    # the pre-tokenizer CLIPTokenizer itself uses (split on CLIP's word regex, then bytes), so that the
    # trained merges produce whole-word tokens when the wrapper tokenizes
    bpe.pre_tokenizer = CLIPTokenizer(vocab={BOS: 0, EOS: 1}, merges=[]).backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>",
        continuing_subword_prefix="")
    bpe.train_from_iterator(sorted(set(texts)), trainer)
    spec = json.loads(bpe.to_str())["model"]
    # tuples, not "a b" strings: transformers 5 rejects the latter (specs/stack.md 3.1)
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ")) for m in spec["merges"]]
    return CLIPTokenizer(vocab=canonical_vocab(spec["vocab"], merges), merges=merges, model_max_length=max_length)


def canonical_vocab(vocab: dict[str, int], merges) -> dict[str, int]:
    """Token ids that do not depend on hash order.

    The BPE trainer numbers equally frequent single-character tokens in hash-map order, so two trainings on
    the same texts gave different ids (the merges themselves are deterministic). Canonical order: the special
    tokens, the byte alphabet sorted, the other single-character tokens sorted, then one id per merge in
    merge order."""
    merged = ["".join(m) for m in merges]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    rest = sorted(set(vocab) - set(merged) - set(alphabet) - {BOS, EOS})
    order = [BOS, EOS] + alphabet + rest + merged
    if sorted(order) != sorted(vocab):
        raise RuntimeError("the trained vocabulary is not specials + alphabet + characters + merges")
    return {tok: i for i, tok in enumerate(order)}
