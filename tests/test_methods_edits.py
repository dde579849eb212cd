"""Edits (erasure_lib.methods.edits): only the changed weights, applied in one call, saved as safetensors.

Asserted: an edit round-trips through safetensors bit-exactly (tensors, dtypes, metadata) and the re-applied
saved edit reproduces the edited model's UNet outputs and generated images exactly; apply/restore and the
context manager put back the original weights bit-exactly (also when the block raises); bad names, shapes and
values raise EditError before anything is written; writes are atomic (no temporary file is left behind).
"""
import os

import numpy as np
import pytest
import torch

from erasure_lib.methods import (EditError, apply_edit, edit_size_bytes, edited, extract_edit, load_edit,
                                 save_edit)
from erasure_lib.sampling import generate

K0 = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
V1 = "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"
CONV = "conv_in.weight"


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy", device="cpu")


def _state(pipe):
    return {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}


def _same_state(pipe, state):
    return all(torch.equal(v, state[k]) for k, v in pipe.unet.state_dict().items())


def _random_edit(pipe, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = dict(pipe.unet.named_parameters())
    return {n: params[n].detach() + scale * torch.randn(params[n].shape, generator=g) for n in (K0, V1, CONV)}


def _unet_out(pipe):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    c = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return pipe.unet(x, torch.tensor([500, 20]), encoder_hidden_states=c).sample


def test_roundtrip_is_bit_exact(pipe, tmp_path):
    edit = _random_edit(pipe)
    edit["half"] = edit[CONV].half()  # dtypes survive as they are (not applied: only saved and loaded)
    meta = {"method": "test", "concept": "nude", "hyperparameters": {"lamb": 0.5, "tokens": "last"},
            "note": "free text"}
    path = save_edit(edit, tmp_path / "sub" / "e.safetensors", meta)
    loaded, meta2 = load_edit(path)
    assert set(loaded) == set(edit)
    for k in edit:
        assert loaded[k].dtype == edit[k].dtype and torch.equal(loaded[k], edit[k])
    assert meta2 == meta
    assert os.listdir(path.parent) == ["e.safetensors"]  # atomic write: no temporary file left


def test_saved_edit_reproduces_outputs_exactly(pipe, tmp_path):
    edit = _random_edit(pipe, scale=0.02)
    prompts, seeds = ["a red church on a grey background", "a nude person at the beach"], [3, 4]
    with edited(pipe, edit):
        out_mem = _unet_out(pipe)
        img_mem = generate(pipe, prompts, seeds, steps=4, progress=False)
    path = save_edit(edit, tmp_path / "e.safetensors", {"method": "test", "concept": "x"})
    loaded, _ = load_edit(path)
    with edited(pipe, loaded):
        out_file = _unet_out(pipe)
        img_file = generate(pipe, prompts, seeds, steps=4, progress=False)
    assert torch.equal(out_mem, out_file)
    assert np.array_equal(img_mem, img_file)
    assert not torch.equal(out_mem, _unet_out(pipe))  # and the edit did change the model


def test_apply_and_restore(pipe):
    before, out_before = _state(pipe), _unet_out(pipe)
    edit = _random_edit(pipe)
    handle = apply_edit(pipe, edit)
    assert handle.active and set(handle.names) == set(edit)
    params = dict(pipe.unet.named_parameters())
    for k, v in edit.items():
        assert torch.equal(params[k].detach(), v)
    handle.restore()
    handle.restore()  # a second restore is a no-op
    assert not handle.active
    assert _same_state(pipe, before)
    assert torch.equal(_unet_out(pipe), out_before)


def test_context_manager_restores_on_error(pipe):
    before = _state(pipe)
    with pytest.raises(RuntimeError, match="boom"):
        with edited(pipe, _random_edit(pipe)):
            assert not _same_state(pipe, before)
            raise RuntimeError("boom")
    assert _same_state(pipe, before)
    with apply_edit(pipe, _random_edit(pipe)):  # the handle is a context manager too
        pass
    assert _same_state(pipe, before)


def test_apply_keeps_parameter_identity_and_casts(pipe):
    ids = {n: id(p) for n, p in pipe.unet.named_parameters()}
    edit = {K0: _random_edit(pipe)[K0].double()}
    with edited(pipe, edit):
        params = dict(pipe.unet.named_parameters())
        assert {n: id(p) for n, p in params.items()} == ids
        assert params[K0].dtype == torch.float32
        assert torch.equal(params[K0].detach(), edit[K0].float())


@pytest.mark.parametrize("bad, match", [
    ({"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_kk.weight": torch.zeros(64, 64)}, "did you mean"),
    ({"unet." + K0: torch.zeros(64, 64)}, "drop the 'unet.' prefix"),
    ({K0: torch.zeros(64, 65)}, r"shape \(64, 65\)"),
    ({K0: np.zeros((64, 64))}, "not a tensor"),
    ({K0: torch.zeros(64, 64, dtype=torch.int64)}, "floating-point"),
])
def test_bad_edits_raise_and_leave_the_model_untouched(pipe, bad, match):
    before = _state(pipe)
    edit = {V1: torch.zeros_like(dict(pipe.unet.named_parameters())[V1]), **bad}  # one good entry, one bad
    with pytest.raises(EditError, match=match):
        apply_edit(pipe, edit)
    assert _same_state(pipe, before)


def test_apply_to_a_bare_unet_and_extract(pipe):
    edit = _random_edit(pipe)
    with edited(pipe.unet, edit):
        got = extract_edit(pipe, list(edit))
    assert all(torch.equal(got[k], edit[k]) for k in edit)
    with pytest.raises(EditError):
        extract_edit(pipe, ["no.such.weight"])


def test_size_and_metadata_rules(pipe, tmp_path):
    edit = _random_edit(pipe)
    assert edit_size_bytes(edit) == sum(v.numel() * 4 for v in edit.values())
    with pytest.raises(ValueError, match="method"):
        save_edit(edit, tmp_path / "a.safetensors", {"concept": "x"})
    with pytest.raises(ValueError, match="empty"):
        save_edit({}, tmp_path / "a.safetensors", {"method": "m", "concept": "x"})
    with pytest.raises(ValueError, match="reserved"):
        save_edit(edit, tmp_path / "a.safetensors", {"method": "m", "concept": "x", "format": "mine"})
    # a dataclass of hyper-parameters is stored as its dict; overwriting an existing file works
    from erasure_lib.methods.uce import UCEConfig
    p = save_edit(edit, tmp_path / "a.safetensors", {"method": "uce", "concept": "x", "hyperparameters": UCEConfig()})
    p = save_edit(edit, p, {"method": "uce", "concept": "y", "hyperparameters": UCEConfig(lamb=0.1)})
    _, meta = load_edit(p)
    assert meta["concept"] == "y" and meta["hyperparameters"]["lamb"] == 0.1
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors"]


def test_reference_style_file_loads(pipe, tmp_path):
    """A file as the reference scripts write it (save_file of the tensors, no metadata) loads, metadata {}."""
    from safetensors.torch import save_file
    edit = _random_edit(pipe)
    save_file({k: v.contiguous() for k, v in edit.items()}, tmp_path / "ref.safetensors")
    loaded, meta = load_edit(tmp_path / "ref.safetensors")
    assert meta == {} and all(torch.equal(loaded[k], edit[k]) for k in edit)
    with pytest.raises(FileNotFoundError):
        load_edit(tmp_path / "missing.safetensors")


def test_save_edit_in_the_base_dtype(pipe, tmp_path):
    """An fp32-trained edit of an fp16 base is stored in fp16 (``dtype=``) and the metadata says so; the fp16
    file gives the fp16 base exactly the model the fp32 edit gives it. An fp32 base keeps fp32 bit for bit."""
    from erasure_lib.loading import load_pipeline
    edit = _random_edit(pipe, scale=0.02)
    half_path = save_edit(edit, tmp_path / "half.safetensors", {"method": "test", "concept": "x"},
                          dtype=torch.float16)
    half, meta = load_edit(half_path)
    assert meta["dtype"] == "float16" and all(half[k].dtype == torch.float16 for k in half)
    assert all(torch.equal(half[k], edit[k].half()) for k in edit)
    assert os.path.getsize(half_path) < 0.6 * os.path.getsize(save_edit(edit, tmp_path / "f.safetensors",
                                                                        {"method": "test", "concept": "x"}))
    base = load_pipeline("toy", device="cpu", dtype=torch.float16)
    with edited(base, edit):
        from_fp32 = {k: v.detach().clone() for k, v in base.unet.state_dict().items()}
    with edited(base, half):
        assert all(torch.equal(v, from_fp32[k]) for k, v in base.unet.state_dict().items())
    full, meta = load_edit(save_edit(edit, tmp_path / "full.safetensors", {"method": "test", "concept": "x"},
                                     dtype=torch.float32))
    assert meta["dtype"] == "float32" and all(torch.equal(full[k], edit[k]) for k in edit)
    with pytest.raises(TypeError, match="dtype"):
        save_edit(edit, tmp_path / "bad.safetensors", {"method": "test", "concept": "x"}, dtype=torch.int8)


def test_originals_kept_on_another_device_restore_exactly(pipe):
    state = _state(pipe)
    edit = _random_edit(pipe)
    handle = apply_edit(pipe, edit, keep_originals_on="cpu")
    assert not _same_state(pipe, state)
    handle.restore()
    assert _same_state(pipe, state)
    with edited(pipe, edit, keep_originals_on="cpu"):
        assert not _same_state(pipe, state)
    assert _same_state(pipe, state)
