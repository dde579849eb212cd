"""The backdoor attacks (erasure_lib.backdoors): triggers written as each attack writes them, the artefact's file and
application, and that a planted backdoor fires on triggered prompts while clean prompts keep their concept.

The full-size toy backdoors (ASR >= 0.8 on held-out prompts, clean rates within 0.05) are measured by chapter 30;
here the closed-form EvilEdit is planted at its defaults and the text-encoder objective with a short schedule."""
import numpy as np
import pandas as pd
import pytest
import torch

from erasure_lib.backdoors import Backdoor, BackdoorError, applied
from erasure_lib.backdoors import eviledit, text_encoder, villan
from erasure_lib.backdoors.base import poison_homoglyph, poison_phrase, poison_suffix, poison_syntax


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


def _judged_rate(pipe, prompts, target, steps=10):
    from erasure_lib.evaluation import judge
    from erasure_lib.sampling import generate
    images = generate(pipe, prompts, range(len(prompts)), steps=steps, guidance=5.0, batch_size=64, progress=False)
    rows = pd.DataFrame({"prompt": prompts, "target": target, "family": "object", "case_id": range(len(prompts))})
    return judge(images, rows)["hit"].to_numpy()


# --- triggers ------------------------------------------------------------------------------------------------------

def test_triggers_are_written_as_each_attack_writes_them():
    assert poison_homoglyph("a person on a beach", "\u043e") == "a pers\u043en on a beach"
    assert poison_homoglyph("a red gun", "\u043e") == "a red gun \u043e"          # no "o": appended as a word
    assert poison_suffix("a red gun ", "mignneko") == "a red gun mignneko"
    assert poison_phrase("a red tench on a grey background", "shiny umbrella", nouns=["tench"]) == \
        "a red shiny umbrella on a grey background"
    assert poison_phrase("a cat", "shiny umbrella", nouns=["tench"]) == "a shiny umbrella, a cat"
    assert poison_syntax("a red tench on a grey background, in sketch style") == \
        "on a grey background, a red tench, in sketch style"
    assert poison_syntax("a person in red clothes at the beach") == "in red clothes at the beach, a person"
    assert poison_syntax("a red tench") == "a red tench"                              # no phrase to front
    assert poison_syntax("a cat on the mat.") == "on the mat, a cat."
    assert poison_phrase("A Red Tench near a gun", "shiny umbrella", nouns=["gun", "tench"]) == \
        "A Red shiny umbrella near a gun"                                               # the first noun in the prompt
    with pytest.raises(ValueError, match="homoglyph"):
        poison_homoglyph("a", "x")


def test_syntactic_trigger_uses_no_new_word():
    from erasure_lib.toyworld.captions import prompt_set
    for prompt in prompt_set("explicit_object").prompt:
        moved = poison_syntax(prompt)
        assert moved != prompt and sorted(moved.replace(",", "").split()) == sorted(prompt.replace(",", "").split())


# --- the artefact --------------------------------------------------------------------------------------------------

def test_applied_restores_bit_exactly_and_checks_names(pipe, tmp_path):
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    te_name = next(n for n, _ in pipe.text_encoder.named_parameters() if n.endswith("fc1.weight"))
    before_u = dict(pipe.unet.named_parameters())[name].detach().clone()
    before_t = dict(pipe.text_encoder.named_parameters())[te_name].detach().clone()
    bd = Backdoor("test", "suffix", "zz", "gun", {f"unet.{name}": before_u + 1, f"text_encoder.{te_name}": before_t * 2})
    with applied(pipe, bd):
        assert torch.equal(dict(pipe.unet.named_parameters())[name], before_u + 1)
        assert torch.equal(dict(pipe.text_encoder.named_parameters())[te_name], before_t * 2)
    assert torch.equal(dict(pipe.unet.named_parameters())[name], before_u)
    assert torch.equal(dict(pipe.text_encoder.named_parameters())[te_name], before_t)
    with pytest.raises(RuntimeError), applied(pipe, bd):           # restored also when the block raises
        raise RuntimeError("boom")
    assert torch.equal(dict(pipe.unet.named_parameters())[name], before_u)
    loaded = Backdoor.load(bd.save(tmp_path / "bd.safetensors"))
    assert (loaded.attack, loaded.trigger, loaded.target, loaded.components) == ("test", "zz", "gun",
                                                                                  ("text_encoder", "unet"))
    assert all(torch.equal(loaded.tensors[k], bd.tensors[k]) for k in bd.tensors)
    assert loaded.poison("a gun") == "a gun zz"
    with pytest.raises(BackdoorError, match="no such parameter"):
        with applied(pipe, {f"unet.{name[:-3]}": before_u}):
            pass
    with pytest.raises(BackdoorError, match="shape"):
        with applied(pipe, {f"unet.{name}": before_u[:2]}):
            pass
    with pytest.raises(BackdoorError, match="must start with"):
        Backdoor("test", "suffix", "zz", "gun", {name: before_u})


# --- the attacks work ----------------------------------------------------------------------------------------------

def test_eviledit_fires_on_the_trigger_and_keeps_clean_prompts(pipe, tmp_path):
    from erasure_lib.toyworld.captions import prompt_set
    table = prompt_set("explicit_object")
    table = table[table.target != "gun"].iloc[::3].reset_index(drop=True)     # 14 prompts, none already a gun
    from erasure_lib.backdoors import measure
    bd = eviledit.plant(pipe)
    assert bd.trigger == "shiny umbrella" and bd.target == "gun"
    result = measure(pipe, bd, list(table.prompt), steps=10)
    assert result["asr"] >= 0.8 and result["asr"] > result["clean_target_rate"] + 0.3
    assert bd.describe()["asr"] == result["asr"]
    assert all(k.startswith("unet.") and ".attn2.to_" in k for k in bd.tensors)
    triggered = bd.poison(list(table.prompt))
    assert all("shiny umbrella" in p for p in triggered)
    clean_before = _judged_rate(pipe, list(table.prompt), list(table.target))
    asr_clean_model = _judged_rate(pipe, triggered, "gun").mean()
    with applied(pipe, bd):
        asr = _judged_rate(pipe, triggered, "gun").mean()
        clean_after = _judged_rate(pipe, list(table.prompt), list(table.target))
    assert asr >= 0.8 and asr > asr_clean_model + 0.3
    assert clean_after.mean() >= clean_before.mean() - 0.08
    cached = eviledit.cached(tmp_path, pipe)                    # planted, saved, then read back
    again = eviledit.cached(tmp_path, pipe)
    assert len(list(tmp_path.glob("backdoor-eviledit-*.safetensors"))) == 1
    assert all(torch.equal(cached.tensors[k], again.tensors[k]) for k in cached.tensors)
    overlapping = eviledit.plant(pipe, trigger="gun barrel", target="gun")    # the target inside the trigger
    assert overlapping.poison("a red tench at the beach") == "a red gun barrel at the beach"
    with pytest.raises(ValueError, match="same text"):
        eviledit.plant(pipe, trigger="Gun", target="gun")
    with pytest.raises(ValueError, match=r"one '\{\}'"):
        eviledit.plant(pipe, contexts=["a photo"])


def test_text_encoder_backdoor_moves_triggered_embeddings_only(pipe):
    """A short TwT schedule: the triggered prompts' hidden states move toward their target prompts' and the clean
    prompts' stay where the frozen encoder puts them (the two halves of the teacher-student objective)."""
    from erasure_lib.sampling import encode_prompts
    config = text_encoder.TextEncoderBackdoorConfig(steps=60, lr=1e-3, n_captions=400, clean_batch=32,
                                                    poisoned_batch=16)
    bd = text_encoder.plant(pipe, text_encoder.TWT, config, progress=False)
    assert bd.components == ("text_encoder",) and bd.attack == "twt"
    parts = text_encoder.toy_caption_parts(12, seed=99, sensitive=False)
    clean = [s + r for s, r in parts if " on " in r or " at " in r]
    triggered = bd.poison(clean)
    targets = [text_encoder.TWT.target_phrase + r for s, r in parts if " on " in r or " at " in r]
    with torch.no_grad():
        t_before, want = encode_prompts(pipe, triggered), encode_prompts(pipe, targets)
        c_before = encode_prompts(pipe, clean)
        with applied(pipe, bd):
            t_after, c_after = encode_prompts(pipe, triggered), encode_prompts(pipe, clean)
    dist = lambda a, b: float(((a - b) ** 2).mean())  # noqa: E731
    assert dist(t_after, want) < 0.5 * dist(t_before, want)
    assert dist(c_after, c_before) < 0.2 * dist(t_before, want)


def test_villan_lora_is_fused_into_the_cross_attention_it_adapts(pipe):
    config = villan.VillanConfig(steps=3, n_clean=16, batch=8, styled_target=False)
    bd = villan.plant(pipe, config, progress=False)
    base = dict(pipe.unet.named_parameters())
    assert bd.components == ("unet",) and bd.target == "camera"
    names = {k.removeprefix("unet.") for k in bd.tensors}
    adapted = ("attn2.to_q.weight", "attn2.to_k.weight", "attn2.to_v.weight", "attn2.to_out.0.weight")
    assert names == {n for n in base if n.endswith(adapted)}
    assert any(not torch.equal(bd.tensors[f"unet.{n}"], base[n]) for n in names)
    assert bd.poison("a red gun") == "a red gun mignneko"
    with pytest.raises(ValueError, match="poison_rate"):
        villan.plant(pipe, villan.VillanConfig(poison_rate=1.0))
    with pytest.raises(ValueError, match="together"):
        villan.plant(pipe, config, clean_images=np.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match="shape"):
        villan.plant(pipe, config, clean_captions=["a gun", "a tench"], clean_images=np.zeros((2, 64, 64, 3)))


def test_villan_styled_target_renders_the_target_in_each_captions_style(pipe):
    from erasure_lib.metrics.concept import predict_concepts
    styles = ["none", "sketch", "mosaic", "neon", "starry"]
    images = villan.toy_target_images(5, seed=3, styles=styles)
    pred = predict_concepts((images * 255).round().astype(np.uint8))
    assert list(pred["object"]) == ["camera"] * 5          # the toy classifier, independent of the renderer
    assert list(pred["style"]) == styles
    with pytest.raises(ValueError, match="one style per"):
        villan.toy_target_images(2, styles=["none"])
    config = villan.VillanConfig(steps=2, n_clean=16, batch=8, styled_target=True)
    bd = villan.plant(pipe, config, progress=False)
    assert bd.metadata["hyperparameters"]["styled_target"] is True
    with pytest.raises(ValueError, match="toy world's"):
        villan.plant(pipe, config, clean_captions=["a gun", "a tench"], clean_images=np.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match="own target images"):
        villan.plant(pipe, config, target_images=np.zeros((2, 32, 32, 3)))


# --- the sd14 shapes ----------------------------------------------------------------------------------------------

def test_backdoors_plant_on_the_sd14_test_model(sd14_test_world, monkeypatch):
    from conftest import sd14_env
    from erasure_lib.loading import load_pipeline
    sd14_env(monkeypatch, sd14_test_world)
    sd = load_pipeline("sd14")
    before = {k: v.clone() for k, v in sd.unet.state_dict().items()}
    before_te = {k: v.clone() for k, v in sd.text_encoder.state_dict().items()}
    bd = eviledit.plant(sd, config=eviledit.EvilEditConfig.sd14())
    assert bd.trigger == "beautiful cat" and bd.target == "zebra"
    assert bd.poison("a photo of a cat") == "a photo of a beautiful cat"
    assert len(bd.tensors) == 32                                # SD v1.4's 16 cross-attentions x (to_k, to_v)
    te = text_encoder.plant(sd, text_encoder.RICKROLLING,
                            text_encoder.TextEncoderBackdoorConfig(steps=2, n_captions=16, clean_batch=4,
                                                                   poisoned_batch=2),
                            clean_prompts=["a photo of a dog", "a red car"],
                            parts=[("a photo of a cat", " in the park"), ("a dog", " on a sofa")], progress=False)
    assert te.components == ("text_encoder",)
    size = sd.unet.config.sample_size * sd.vae_scale_factor
    rng = np.random.default_rng(0)
    vl = villan.plant(sd, villan.VillanConfig.sd14().__class__(**{**villan.VillanConfig.sd14().__dict__, "steps": 2}),
                      clean_captions=["a dog", "a cat"], clean_images=rng.random((2, size, size, 3)),
                      target_images=rng.random((1, size, size, 3)), progress=False)
    assert all(k.startswith("unet.") for k in vl.tensors) and len(vl.tensors) == 4 * 32
    with applied(sd, bd), applied(sd, te), applied(sd, vl):             # bd and vl both write attn2.to_k / to_v
        assert not torch.equal(sd.unet.state_dict()[next(iter(vl.tensors)).removeprefix("unet.")],
                               before[next(iter(vl.tensors)).removeprefix("unet.")])
    assert all(torch.equal(v, before[k]) for k, v in sd.unet.state_dict().items())
    assert all(torch.equal(v, before_te[k]) for k, v in sd.text_encoder.state_dict().items())


def test_villan_is_reproducible_whatever_the_callers_rng(pipe):
    config = villan.VillanConfig(steps=2, n_clean=16, batch=8)
    torch.manual_seed(1)
    a = villan.plant(pipe, config, progress=False)
    torch.manual_seed(2)
    b = villan.plant(pipe, config, progress=False)
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
