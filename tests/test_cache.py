"""The edit cache (erasure_lib.methods.cache): keys name the base model (identity and dtype), so two base models
never share a cached edit; edits are stored in the base model's dtype; a bare UNet is named by its state dict's
hash."""
import hashlib
import types

import pytest
import torch

from erasure_lib.loading import load_pipeline
from erasure_lib.methods import cache, esd, load_edit


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("toy", device="cpu")


def _other_base():
    """A second base model: a small UNet built in memory (not loaded from a file), seeded."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=8)
    return types.SimpleNamespace(unet=unet)


def _edit_of(p, scale=0.01):
    name, value = next(iter(p.unet.named_parameters()))
    return {name: value.detach().float() + scale}


def test_cached_edit_keys_differ_for_two_base_models(pipe, tmp_path):
    other = _other_base()
    meta = esd.metadata("a nude person", esd.ESDConfig(iterations=7))  # the same hyper-parameters for both
    calls = []

    def train(p):
        def run():
            calls.append(p)
            return _edit_of(p)
        return run

    a = cache.cached_edit(tmp_path, meta, train(pipe), pipe=pipe)
    b = cache.cached_edit(tmp_path, meta, train(other), pipe=other)
    again = cache.cached_edit(tmp_path, meta, train(pipe), pipe=pipe)
    assert calls == [pipe, other]  # the second base model is trained, not served the first one's edit
    assert a["conv_in.weight"].shape != b["conv_in.weight"].shape and torch.equal(a["conv_in.weight"],
                                                                                 again["conv_in.weight"])
    keys = [cache.edit_key({**meta, **cache.base_model(p)}) for p in (pipe, other)]
    assert keys[0] != keys[1] and keys[0] != cache.edit_key(meta)
    files = {f.name: load_edit(f)[1] for f in tmp_path.iterdir()}
    assert len(files) == 2 and all(any(name.endswith(f"-{k}.safetensors") for name in files) for k in keys)
    assert {m["base_model"] for m in files.values()} == {cache.model_identity(pipe), cache.model_identity(other)}
    # the methods' metadata(pipe=...) names the base model the same way, and a mismatch is refused
    assert esd.metadata("a nude person", pipe=pipe)["base_model"] == cache.model_identity(pipe)
    with pytest.raises(ValueError, match="base_model"):
        cache.cached_edit(tmp_path, {**meta, **cache.base_model(other)}, train(pipe), pipe=pipe)


def test_the_dtype_of_the_base_joins_the_key(pipe, tmp_path):
    half = load_pipeline("toy", device="cpu", dtype=torch.float16)
    assert cache.base_model(half)["dtype"] == "float16" and cache.base_model(pipe)["dtype"] == "float32"
    meta = {"method": "test", "concept": "x"}
    assert cache.edit_key({**meta, **cache.base_model(half)}) != cache.edit_key({**meta, **cache.base_model(pipe)})


def test_cached_edit_stores_an_fp16_base_edit_in_fp16(tmp_path):
    half = load_pipeline("toy", device="cpu", dtype=torch.float16)
    trained = _edit_of(half)
    assert {v.dtype for v in trained.values()} == {torch.float32}
    calls = []
    edit = cache.cached_edit(tmp_path, {"method": "test", "concept": "x"},
                             lambda: calls.append(1) or trained, pipe=half)
    (path,) = tmp_path.iterdir()
    stored, meta = load_edit(path)
    assert {v.dtype for v in stored.values()} == {v.dtype for v in edit.values()} == {torch.float16}
    assert meta["dtype"] == "float16" and all(torch.equal(stored[k], trained[k].half()) for k in trained)
    again = cache.cached_edit(tmp_path, {"method": "test", "concept": "x"}, lambda: calls.append(1), pipe=half)
    assert calls == [1] and all(torch.equal(again[k], edit[k]) for k in edit)  # a cached and a fresh edit agree


def test_an_fp32_base_keeps_fp32_bit_for_bit(pipe, tmp_path):
    trained = _edit_of(pipe, scale=1e-7)
    edit = cache.cached_edit(tmp_path, {"method": "test", "concept": "x"}, lambda: trained, pipe=pipe)
    stored, meta = load_edit(next(tmp_path.iterdir()))
    assert meta["dtype"] == "float32"
    assert all(stored[k].dtype == torch.float32 and torch.equal(stored[k], trained[k])
               and torch.equal(edit[k], trained[k]) for k in trained)


def test_model_identity_names_the_weights(pipe):
    import erasure_lib.loading as loading
    known = cache.model_identity(pipe)
    assert known == str(loading.model_identity(pipe)) and not known.startswith("state:")  # the zoo's weights file
    other = _other_base()
    assert cache.model_identity(other) != known
    bare = cache.model_identity(pipe.unet)  # a bare UNet: the hash of its state dict
    assert bare == cache._state_identity(pipe.unet) and len(bare) == 16
    int(bare, 16)
    assert cache._state_identity(_other_base().unet) == cache._state_identity(other.unet)  # stable for equal weights
    assert cache._state_identity(other.unet) != bare


def test_edit_fingerprint_is_unchanged_for_fp32_and_works_for_bfloat16():
    edit = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor(1.5)}
    h = hashlib.sha256()
    for name in sorted(edit):  # the formula the committed fingerprints were made with
        h.update(name.encode())
        h.update(edit[name].numpy().tobytes())
    assert cache.edit_fingerprint(edit) == h.hexdigest()
    bf = {k: v.bfloat16() for k, v in edit.items()}
    assert cache.edit_fingerprint(bf) != cache.edit_fingerprint(edit)
    assert cache.edit_fingerprint(bf) == cache.edit_fingerprint({k: v.clone() for k, v in bf.items()})
