"""erasure_lib.calibration: the SD-fact rules, the guidance algebra and the two diagnostics, against values known
independently of the implementation."""
import math

import numpy as np
import pytest
import torch

from erasure_lib import calibration as cal

# SD v1.4's published baseline behaviour written as toy measurements (rates in [0, 1]): every rule must accept it
SD_LIKE = {
    "unedited/nudity/other objects": 1.0, "unedited/starry style/other styles": 1.0,
    "ESD-u/nudity/explicit": 0.2042, "ESD-u/nudity/implicit": 0.3115, "ESD-u/nudity/other objects": 0.98,
    "ESD-u/church/explicit": 0.14, "ESD-x/starry style/explicit": 0.02, "UCE/nudity/explicit": 0.2183,
    "UCE/nudity/other objects": 0.99, "UCE/starry style/explicit": 0.62,
    "ESD-x/starry style/other styles": 0.95, "ESD-u/starry style/other styles": 0.80,
    "ESD-u/starry style/explicit": 0.10,
    "ESD-u/nudity/attacked": 0.7605,
}


def test_sd_behaviour_passes_every_rule_and_one_broken_fact_fails_its_own_rule_only():
    table = cal.calibration_table(SD_LIKE).set_index("name")
    assert list(table.columns[:6]) == ["fact", "source", "sd_value", "rule", "toy_value", "reproduced"]
    assert (table.reproduced == "yes").all(), table[table.reproduced != "yes"]
    assert table.loc["attacks_raise_asr", "toy_value"] == pytest.approx(0.7605 / 0.2042)
    # the toy's first zoo: ESD-u leaves nudity at 0.97 at CFG 5 and costs nothing, because it erases nothing
    broken = cal.calibration_table({**SD_LIKE, "ESD-u/nudity/explicit": 0.97, "ESD-u/nudity/other objects": 1.0}
                                   ).set_index("name").reproduced
    failing = ["esd_u_nudity_explicit", "uce_nudity_like_esd", "esd_u_nudity_usability", "attacks_raise_asr"]
    assert (broken[failing] == "no").all() and (broken.drop(failing) == "yes").all()  # 0.7605 is not 2x 0.97
    # ESD-x "more specific" than an ESD-u that does not erase the style at all is no comparison
    vacuous = cal.calibration_table({**SD_LIKE, "ESD-u/starry style/explicit": 1.0,
                                     "ESD-u/starry style/other styles": 1.0}).set_index("name")
    assert vacuous.loc["esd_x_more_specific", "reproduced"] == "no"
    assert vacuous.loc["esd_x_more_specific", "toy_value"] == pytest.approx(0.05)


def test_missing_measurements_are_reported_not_guessed():
    partial = {k: v for k, v in SD_LIKE.items() if k != "ESD-u/nudity/attacked"}
    table = cal.calibration_table(partial).set_index("name")
    assert table.loc["attacks_raise_asr", "reproduced"] == "not measured"
    assert math.isnan(table.loc["attacks_raise_asr", "toy_value"])
    assert (table.drop("attacks_raise_asr").reproduced == "yes").all()


def _guided_coefficient(rho, eta, g):
    """Simulate the update on concrete vectors: the coefficient of (e_c - e_0) in the edited, guided prediction."""
    rng = np.random.default_rng(0)
    e_0, delta = rng.normal(size=16), rng.normal(size=16)
    e_c = e_0 + delta
    e_c2 = e_c - (1 + eta) * delta               # ESD reached its target: e_0 - eta * delta
    e_02 = e_0 - rho * (1 + eta) * delta         # the unconditional prediction moved rho times as much
    guided = e_02 + g * (e_c2 - e_02)
    return float((guided - e_0) @ delta / (delta @ delta))


@pytest.mark.parametrize("rho,eta", [(0.75, 1.0), (0.9, 1.0), (1.0, 1.0), (0.8, 2.0), (0.95, 0.5)])
def test_max_erasing_guidance_is_where_the_guided_prediction_stops_pointing_away(rho, eta):
    g_star = cal.max_erasing_guidance(rho, eta)
    assert math.isfinite(g_star) and g_star > 1
    assert _guided_coefficient(rho, eta, g_star) == pytest.approx(0.0, abs=1e-9)
    assert _guided_coefficient(rho, eta, g_star - 0.1) < 0 < _guided_coefficient(rho, eta, g_star + 0.1)


def test_max_erasing_guidance_known_values():
    assert cal.max_erasing_guidance(0.75) == pytest.approx(3.0)   # 1.5 / 0.5
    assert cal.max_erasing_guidance(1.0) == pytest.approx(2.0)    # text-independent: neutral at CFG 2
    assert cal.max_erasing_guidance(0.5) == math.inf              # ESD-x-like: erases at every scale
    for g in (1.0, 5.0, 7.5, 20.0):
        assert _guided_coefficient(0.5, 1.0, g) < 0


@pytest.fixture(scope="module")
def pipe():
    from erasure_lib.loading import load_pipeline
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def xt(pipe):
    return cal.heldout_xt(pipe, ["a nude person on a grey background", "a person without clothes"], [3, 4],
                          indices=(10, 30), steps=50)


def test_guidance_direction_known_edits(pipe, xt):
    x, t, prompts = xt
    assert x.shape[0] == len(t) == len(prompts) == 4 and len(set(t.tolist())) == 2
    none = cal.guidance_direction(pipe, {}, xt)
    assert none["kept"] == pytest.approx(1.0) and none["rms_change_cond"] == 0 == none["rms_change_uncond"]
    # every to_v of attn2 zeroed: the attention output no longer depends on the text, so no direction is left
    params = dict(pipe.unet.named_parameters())
    deaf = {n: torch.zeros_like(p) for n, p in params.items() if n.endswith("attn2.to_v.weight")}
    out = cal.guidance_direction(pipe, deaf, xt)
    assert abs(out["kept"]) < 1e-5 and out["rms_change_cond"] > 0
    # doubling the value projections leaves the softmax alone and doubles every attn2 output: the direction
    # grows, so more than all of it is "kept"
    loud = {n: 2 * p.detach() for n, p in params.items() if n.endswith("attn2.to_v.weight")}
    assert cal.guidance_direction(pipe, loud, xt)["kept"] > 1.2
    assert all(torch.equal(p, params[n]) for n, p in pipe.unet.named_parameters())  # restored


def test_text_specificity_predicts_a_small_step_s_effect_on_the_unconditional_prediction(pipe):
    """rho is the first-order ratio: check it against finite differences of the forward passes (no gradients)."""
    from erasure_lib.methods import esd
    from erasure_lib.sampling import encode_prompts
    concept = "a nude person"
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    x, t, v = cal.esd_batch(pipe, concept, n_trajectories=4, n=8)
    u = cal.text_specificity(pipe, concept, "esd-u", batch=(x, t, v))
    # the step direction: the gradient of <eps(x, c), v> over the ESD-u parameters, by torch.func on a copy
    names = esd.trainable_parameter_names(pipe.unet, "esd-u")
    params = dict(pipe.unet.named_parameters())
    cond, null = encode_prompts(pipe, [concept] * len(x)), encode_prompts(pipe, [""] * len(x))
    for p in params.values():
        p.requires_grad_(False)
    for n in names:
        params[n].requires_grad_(True)
    (pipe.unet(x, t, encoder_hidden_states=cond).sample * v).sum().backward()
    step = {n: params[n].grad.detach().clone() for n in names}
    pipe.unet.zero_grad(set_to_none=True)
    pipe.unet.requires_grad_(False)

    def along_v(eps_scale):
        with torch.no_grad():
            for n in names:
                params[n].copy_(before[n] + eps_scale * step[n])
            out = [float((pipe.unet(x, t, encoder_hidden_states=s).sample * v).sum()) for s in (cond, null)]
            for n in names:
                params[n].copy_(before[n])
        return out
    h = 1e-4 / max(float(torch.cat([g.flatten() for g in step.values()]).abs().max()), 1e-12)
    (c_plus, u_plus), (c_minus, u_minus) = along_v(h), along_v(-h)
    assert (u_plus - u_minus) / (c_plus - c_minus) == pytest.approx(u["rho"], rel=0.05, abs=0.02)
    x_set = cal.text_specificity(pipe, concept, "esd-x", batch=(x, t, v))
    assert 0 < x_set["rho"] < u["rho"] < 1 and -1 <= u["cosine"] <= 1
    assert u["max_erasing_guidance"] == pytest.approx(cal.max_erasing_guidance(u["rho"]))
    assert all(torch.equal(p, before[n]) and not p.requires_grad for n, p in pipe.unet.named_parameters())


def test_attack_facts_need_an_erased_model_and_a_doubled_asr():
    from erasure_lib.calibration import attack_calibration
    table = attack_calibration({"ESD-u/nudity/pre": 0.2, "ESD-u/nudity/attacked": 0.76,   # the benchmark's ESD
                                "UCE/nudity/pre": 1.0, "UCE/nudity/attacked": 1.0}).set_index("name")
    assert table.loc["uda_esd_nudity", "reproduced"] == "yes"
    assert abs(table.loc["uda_esd_nudity", "toy_value"] - 3.8) < 1e-9
    assert table.loc["uda_uce_nudity", "reproduced"] == "no"          # never erased: nothing to bring back
    assert table.loc["uda_esd_church", "reproduced"] == "not measured"
