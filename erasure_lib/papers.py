"""The papers' own numbers, for orientation beside the book's measurements (chapter 90, "What reproduces").

Every row quotes a spec in ../shared/specs/ (which re-verified it against the paper and its code, or says it could
not), and names it in ``source`` together with the spec's provenance tag: [doc] benchmark page, [page] project page,
[abs] arXiv abstract, [nb] the code's saved notebook output, [secondary] / [note] a secondary summary that could not
be checked against the paper. No number here is estimated or derived; where a spec gives none, the row is absent.

Conventions:

- ``value`` is in the unit of ``quantity``: percent as 0-100 where the paper gives percent; TICoE's ASR, UDA and P4D
  are fractions (0-1) as its table gives them.
- ``method`` is "ESD" where the paper's row says "ESD" without naming the variant (TRCE, TICoE); "ESD-u" only where
  the spec says the row is ESD-u (Co-Erasing's "text only" stage is ESD-u, ``specs/co-erasing.md`` section 3).
- These are Stable Diffusion numbers (v1.4; TICoE's are v1.5) under each paper's own judge and prompt set; they are
  not comparable with the toy world's, nor across papers (``specs/evaluation.md``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class PaperNumber:
    claim: str        # claim id, see CLAIMS below
    paper: str        # "Co-Erasing", "TRCE", "TICoE", "SET", "NS-Net"
    quantity: str     # what the number measures, with its benchmark and unit
    method: str       # method name as the book spells it
    value: float      # the paper's number, in the unit of `quantity`
    lower_is_better: bool
    source: str       # spec file and section/table, with the spec's provenance tag


CLAIMS: tuple[str, ...] = ("co_erasing_implicit", "trce_eot_vs_key", "trce_vs_baselines", "ticoe_vs_baselines",
                           "attack_co_erasing", "attack_trce", "attack_ticoe", "set_auroc", "ns_net_unseen")

_P = PaperNumber

# Co-Erasing: UnlearnDiffAtk protocol, nudity, 142 I2P prompts, NudeNet > 0.45 (specs/co-erasing.md section 11).
_CO_PRE = "UnlearnDiffAtk nudity pre-attack ASR (%), 142 I2P prompts, NudeNet > 0.45"
_CO_POST = "UnlearnDiffAtk nudity post-attack ASR (%), 142 I2P prompts, NudeNet > 0.45"
_CO_FID = "FID, COCO-10k (nudity-erased model)"
_CO_ESD = ("specs/co-erasing.md section 12.2, nudity ablation row 'Text only (= ESD)' [secondary; unverified]")
_CO_OURS = ("specs/co-erasing.md section 12.2, nudity ablation row 'Text + image + refinement (Co-Erasing)' "
            "[secondary; unverified]")
_CO_BENCH = "; same value in the UnlearnDiffAtk benchmark's ESD row, section 12.1 [doc]"

# TRCE: sexual erasure, SD v1.4, NudeNet 0.45 on any EXPOSED class (specs/trce.md section 4).
_I2P = "I2P sexual ASR (%), 931 prompts, NudeNet 0.45"
_TRCE_T1 = "specs/trce.md section 5.1, Table 1 [secondary]"
_TRCE_TA = "specs/trce.md section 5.3, Table A (Stage-1 mapping-target ablation) [page]"
_TRCE_FULL = "specs/trce.md section 5.1, Table 1 [secondary; confirmed by the code's notebook, {} [nb]]"
_P4D = "P4D ASR (%), nudity, TRCE's 151-prompt file, NudeNet 0.45"
_MMA = "MMA ASR (%), nudity, TRCE's 1000-prompt file, NudeNet 0.45"
_RAB = "Ring-A-Bell ASR (%), nudity, TRCE's 79-row file (non-adversarial, specs/trce.md section 4), NudeNet 0.45"

# TICoE: erasing "gun" on SD v1.5; MCP of look-alike concepts (specs/ticoe.md sections 8-9).
_GUN_ASR = "gun ASR (fraction 0-1), no attack, SD v1.5"
_GUN_FID = "FID, COCO-10k (gun-erased model, SD v1.5)"
_GUN_UDA = "gun UnlearnDiffAtk (UDA) ASR (fraction 0-1), SD v1.5"
_GUN_P4D = "gun P4D ASR (fraction 0-1), SD v1.5"
_TA = "specs/ticoe.md section 9, Table A (erasing 'gun', SD 1.5) [note; unverified]"
_TB = "specs/ticoe.md section 9, Table B (MCP) [note; unverified]"
_TB_SD = "specs/ticoe.md section 9, Table B (MCP), row 'SD (clean)' [note; unverified]"


def _mcp(pair: str, sd: float, esd: float, co: float, ticoe: float) -> tuple[PaperNumber, ...]:
    q = f"MCP {pair} (%), images of the look-alike classified as it"
    return (_P("ticoe_vs_baselines", "TICoE", q, "SD v1.5", sd, False, _TB_SD),
            _P("ticoe_vs_baselines", "TICoE", q, "ESD", esd, False, _TB),
            _P("ticoe_vs_baselines", "TICoE", q, "Co-Erasing", co, False, _TB),
            _P("ticoe_vs_baselines", "TICoE", q, "TICoE", ticoe, False, _TB))


PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    # Co-Erasing erases nudity better than ESD-u at comparable FID.
    _P("co_erasing_implicit", "Co-Erasing", _CO_PRE, "ESD-u", 20.42, True, _CO_ESD + _CO_BENCH),
    _P("co_erasing_implicit", "Co-Erasing", _CO_PRE, "Co-Erasing", 0.85, True, _CO_OURS),
    _P("co_erasing_implicit", "Co-Erasing", _CO_FID, "ESD-u", 17.29, True,
      _CO_ESD + "; conflicts with the benchmark's ESD FID 18.18, section 12.1 [doc]"),
    _P("co_erasing_implicit", "Co-Erasing", _CO_FID, "Co-Erasing", 18.77, True, _CO_OURS),

    # TRCE's Stage-1 ablation: which token to remap.
    _P("trce_eot_vs_key", "TRCE", _I2P, "TRCE [EoT]", 5.05, True, _TRCE_TA),
    _P("trce_eot_vs_key", "TRCE", _I2P, "TRCE [KEY]", 22.80, True, _TRCE_TA),
    _P("trce_eot_vs_key", "TRCE", _I2P, "TRCE [EoT] + [KEY]", 6.34, True, _TRCE_TA),
    _P("trce_eot_vs_key", "TRCE", _I2P, "TRCE [EoT] + [SoT]", 6.56, True, _TRCE_TA),

    # Full TRCE against ESD and UCE on implicit (I2P) prompts.
    _P("trce_vs_baselines", "TRCE", _I2P, "SD v1.4", 34.69, True, _TRCE_T1),
    _P("trce_vs_baselines", "TRCE", _I2P, "ESD", 31.15, True, _TRCE_T1),
    _P("trce_vs_baselines", "TRCE", _I2P, "UCE", 8.16, True, _TRCE_T1),
    _P("trce_vs_baselines", "TRCE", _I2P, "TRCE (T)", 5.05, True, _TRCE_T1 + "; = Table A's [EoT] row [page]"),
    _P("trce_vs_baselines", "TRCE", _I2P, "TRCE (T+V)", 1.29, True, _TRCE_FULL.format("12/931")),

    # TICoE against ESD and Co-Erasing: erasing "gun", and keeping its look-alikes (MCP).
    _P("ticoe_vs_baselines", "TICoE", _GUN_ASR, "ESD", 0.02, True, _TA),
    _P("ticoe_vs_baselines", "TICoE", _GUN_ASR, "Co-Erasing", 0.00, True, _TA),
    _P("ticoe_vs_baselines", "TICoE", _GUN_ASR, "TICoE", 0.00, True, _TA),
    _P("ticoe_vs_baselines", "TICoE", _GUN_FID, "ESD", 31.76, True, _TA),
    _P("ticoe_vs_baselines", "TICoE", _GUN_FID, "Co-Erasing", 35.94, True, _TA),
    _P("ticoe_vs_baselines", "TICoE", _GUN_FID, "TICoE", 30.86, True, _TA),
    *_mcp("gun -> camera", 92.54, 68.25, 39.68, 92.06),
    *_mcp("gun -> phone", 97.96, 79.59, 53.06, 95.91),
    *_mcp("tench -> whale", 97.78, 75.56, 60.00, 95.45),
    *_mcp("tench -> goldfish", 98.15, 75.93, 48.15, 96.30),

    # Co-Erasing under UnlearnDiffAtk ("UD Attack").
    _P("attack_co_erasing", "Co-Erasing", _CO_PRE, "ESD-u", 20.42, True, _CO_ESD + _CO_BENCH),
    _P("attack_co_erasing", "Co-Erasing", _CO_PRE, "Co-Erasing", 0.85, True, _CO_OURS),
    _P("attack_co_erasing", "Co-Erasing", _CO_POST, "ESD-u", 76.05, True, _CO_ESD + _CO_BENCH),
    _P("attack_co_erasing", "Co-Erasing", _CO_POST, "Co-Erasing", 16.96, True,
      _CO_OURS + "; wizwand.com lists 8.42 instead (section 12.2, Conflicts)"),

    # TRCE on the released adversarial prompt files.
    _P("attack_trce", "TRCE", _P4D, "SD v1.4", 83.44, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _P4D, "ESD", 82.67, True, _TRCE_T1 + "; fits N = 150, not 151"),
    _P("attack_trce", "TRCE", _P4D, "UCE", 43.71, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _P4D, "TRCE (T+V)", 1.99, True, _TRCE_FULL.format("3/151")),
    _P("attack_trce", "TRCE", _MMA, "SD v1.4", 79.00, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _MMA, "ESD", 58.50, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _MMA, "UCE", 30.80, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _MMA, "TRCE (T+V)", 1.40, True, _TRCE_FULL.format("14/1000")),
    _P("attack_trce", "TRCE", _RAB, "SD v1.4", 59.49, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _RAB, "ESD", 50.63, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _RAB, "UCE", 13.92, True, _TRCE_T1),
    _P("attack_trce", "TRCE", _RAB, "TRCE (T+V)", 1.27, True, _TRCE_FULL.format("1/79")),

    # TICoE under UnlearnDiffAtk and P4D (its UDA and P4D columns).
    _P("attack_ticoe", "TICoE", _GUN_UDA, "ESD", 0.20, True, _TA),
    _P("attack_ticoe", "TICoE", _GUN_UDA, "Co-Erasing", 0.10, True, _TA),
    _P("attack_ticoe", "TICoE", _GUN_UDA, "TICoE", 0.02, True, _TA),
    _P("attack_ticoe", "TICoE", _GUN_P4D, "ESD", 0.47, True, _TA),
    _P("attack_ticoe", "TICoE", _GUN_P4D, "Co-Erasing", 0.15, True, _TA),
    _P("attack_ticoe", "TICoE", _GUN_P4D, "TICoE", 0.04, True, _TA),

    # SET: the best baseline's own AUROC is not in the spec, only SET's margin over it.
    _P("set_auroc", "SET", "mean AUROC gain over the best baseline (%, as the abstract words it: '+9.1% AUROC')",
      "SET", 9.1, False, "specs/set.md section 7, headline [abs]"),
    _P("set_auroc", "SET", "mean AUROC (%) over 5 backdoor attacks", "SET", 95.1, False,
      "specs/set.md section 7, survey numbers [note; unverified]"),
    _P("set_auroc", "SET", "AUROC (%) on IBA (implicit trigger; the `twt` config)", "SET", 92.9, False,
      "specs/set.md section 7, survey numbers [note; unverified]; IBA = TwT per section 6"),

    # NS-Net: no UnivFD or other baseline number is in the spec, only NS-Net's margin and its own accuracy.
    _P("ns_net_unseen", "NS-Net", "accuracy gain over the state of the art (%), 40-generator open-world benchmark",
      "NS-Net", 7.4, False, "specs/ns-net.md sections 1 and 5, headline [abs]"),
    _P("ns_net_unseen", "NS-Net", "mean accuracy (%), UniversalFakeDetect test set", "NS-Net", 98.5, False,
      "specs/ns-net.md section 5, aggregator numbers [note; unverified; provenance unclear]"),
)


def paper_numbers(claim: str | None = None) -> pd.DataFrame:
    """The rows of :data:`PAPER_NUMBERS` as a table: all of them, or one claim's (an id of :data:`CLAIMS`)."""
    if claim is not None and claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; valid ids: {', '.join(CLAIMS)}")
    rows = [asdict(r) for r in PAPER_NUMBERS if claim is None or r.claim == claim]
    return pd.DataFrame(rows, columns=list(PaperNumber.__dataclass_fields__))
