"""What reproduces: every claim the book tests, read back from the chapters' committed tables (chapter 90).

Nothing here recomputes a chapter. Each chapter writes its claim's verdict and the statistics behind it to
``results/<chapter>/``; this module reads those tables and lays every claim out in one shape:

- ``comparison``: the two things compared (the paper's method against a baseline, or two variants);
- ``ours``, ``lo``, ``hi``: our measured difference with its 95% interval, signed so that the paper's claim
  predicts the sign in ``predicts`` (``"< 0"`` for rates and attack success, ``"> 0"`` for AUROC, accuracy, MCP);
- ``verdict``: the chapter's own, word for word, and ``outcome``: the same in one of three words (``confirmed``,
  ``not confirmed``, ``limited by the toy world``; a chapter that says both of the last two counts as limited);
- ``paper_numbers``: the paper's numbers for the methods compared (claim ``paper_claim`` of :mod:`erasure_lib.papers`,
  its rows of ``paper_methods`` on ``paper_quantities``; empty: all), for orientation only.

The intervals are the chapters' own (paired bootstraps, pooled over seeds), except chapter 10's, whose verdict rule
compares per-seed intervals: here its difference is the mean over the seeds with a Student-t interval over them.
:func:`paper_vs_ours` pairs, per paper, the paper's numbers with ours method by method, for the summary's figures.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from .papers import paper_numbers
from .results import read_table, results_root

PAPERS = ("Co-Erasing", "TRCE", "TICoE", "SET", "NS-Net")
OUTCOMES = ("confirmed", "not confirmed", "limited by the toy world", "not measured")
# chapter 20 sets a comparison aside when its baseline does not erase before the attack (make_nb20.py)
PRE_ATTACK_ERASES = 0.5
# two-sided 95% Student-t quantiles t_{0.975, df} (standard tables), for intervals over a few seeds
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
        21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}
COLUMNS = ["paper", "chapter", "claim", "comparison", "measure", "predicts", "ours", "lo", "hi", "tested", "verdict",
           "outcome", "paper_claim", "paper_methods", "paper_quantities", "paper_numbers", "table"]
# the papers' tables name ESD without its variant; the book compares with ESD-u (the variant for nudity and objects)
_PAPER_NAMES = {"ESD-u": ("ESD-u", "ESD"), "SD": ("SD v1.4", "SD v1.5"), "TRCE": ("TRCE (T+V)",),
                "TRCE (T+V)": ("TRCE (T+V)",), "TRCE [EoT]": ("TRCE [EoT]", "TRCE (T)")}


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its two-sided 95% Student-t interval (``nan`` bounds for fewer than 2 values)."""
    if level != 0.95:
        raise ValueError("only 95% intervals are tabulated")
    x = np.asarray(values, float)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"expected a non-empty 1-d array of finite values, got {x!r}")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    df = len(x) - 1
    t = T975.get(df, 1.96 + 2.4 / df)  # beyond the table (df > 30): within 0.005 of the exact quantile
    half = t * float(x.std(ddof=1)) / np.sqrt(len(x))
    return mean, mean - half, mean + half


def outcome(verdict: str) -> str:
    """The chapter's verdict in one of :data:`OUTCOMES`."""
    v = str(verdict).strip().lower()
    if "limited" in v:
        return "limited by the toy world"
    if v.startswith("not confirmed"):
        return "not confirmed"
    if v == "confirmed":
        return "confirmed"
    if v == "not measured":
        return "not measured"
    raise ValueError(f"not a verdict: {verdict!r}")


def _paper_text(claim_id: str, methods=None, quantities=None) -> str:
    rows = paper_numbers(claim_id)
    if quantities is not None:
        rows = rows[rows.quantity.apply(lambda q: any(s in q for s in quantities))]
    if methods is not None:
        names = {n for m in methods for n in _PAPER_NAMES.get(m, (m,))}
        if not rows.method.isin(names).any():
            raise ValueError(f"no number of {sorted(names)} for claim {claim_id!r} in erasure_lib.papers")
        rows = rows[rows.method.isin(names)]
    parts = []
    for quantity, group in rows.groupby("quantity", sort=False):
        values = ", ".join(f"{r.method} {r.value:g}" for r in group.itertuples())
        parts.append(f"{values} ({quantity})")
    return "; ".join(parts)


def _row(methods=None, quantities=None, tested=True, **kw) -> dict:
    kw["outcome"] = outcome(kw["verdict"])
    kw["tested"] = bool(tested)
    kw["paper_numbers"] = _paper_text(kw["paper_claim"], methods, quantities)
    kw["paper_methods"], kw["paper_quantities"] = "; ".join(methods or ()), "; ".join(quantities or ())
    return kw


def _co_erasing(root: Path) -> list[dict]:
    verdicts, claim = read_table("10_co_erasing", "verdicts", root), read_table("10_co_erasing", "claim", root)
    per_seed = claim.pivot(index="seed", columns="method", values="implicit")
    ours, lo, hi = t_interval(per_seed["Co-Erasing"] - per_seed["ESD-u"])
    v = verdicts.iloc[0]
    return [_row(paper="Co-Erasing", chapter="10_co_erasing", claim=v["claim"], comparison="Co-Erasing - ESD-u",
                 measure=f"implicit-prompt rate (mean over {len(per_seed)} seeds, t-interval); FID_gen "
                         f"{v['co_erasing_fid_gen']:.1f} vs {v['esd_u_fid_gen']:.1f}",
                 predicts="< 0", ours=ours, lo=lo, hi=hi, verdict=v["verdict"],
                 paper_claim="co_erasing_implicit", table="10_co_erasing/verdicts.csv, claim.csv")]


_TRCE_CLAIMS = {
    "a": ("On implicit prompts, remapping [EoT] erases more than remapping the keyword, at comparable usability",
          "trce_eot_vs_key"),
    "b": ("Full TRCE has a lower implicit-prompt rate than ESD-u and UCE at a comparable FID", "trce_vs_baselines"),
}


def _trce(root: Path) -> list[dict]:
    verdicts, paired = read_table("11_trce", "verdicts", root), read_table("11_trce", "paired", root)
    rows = []
    for r in paired[paired.prompts == "implicit"].itertuples():
        worse, better = (s.strip() for s in r.comparison.split(" - "))
        text, claim_id = _TRCE_CLAIMS[r.claim]
        rows.append(_row(paper="TRCE", chapter="11_trce", claim=text, comparison=f"{better} - {worse}",
                         measure=f"implicit-prompt rate (paired, pooled over {r.seeds} seeds)", predicts="< 0",
                         ours=-r.difference, lo=-r.hi, hi=-r.lo,
                         verdict=verdicts.set_index("claim").loc[r.claim, "verdict"],
                         paper_claim=claim_id, methods=[better, worse],
                         table="11_trce/verdicts.csv, paired.csv"))
    return rows


def _ticoe(root: Path) -> list[dict]:
    verdicts = read_table("12_ticoe", "verdicts", root)
    return [_row(paper="TICoE", chapter="12_ticoe",
                 claim=f"TICoE erases as well as {r['baseline']} and preserves look-alike concepts better (MCP)",
                 comparison=f"TICoE - {r['baseline']}",
                 measure=f"MCP on the look-alikes (paired); explicit rate {r['TICoE explicit']:.2f} vs "
                         f"{r['baseline explicit']:.2f}",
                 predicts="> 0", ours=r["MCP difference"], lo=r["lo"], hi=r["hi"], verdict=r["verdict"],
                 paper_claim="ticoe_vs_baselines", methods=["TICoE", r["baseline"]],
                 quantities=["gun ASR", "tench -> goldfish"],
                 table="12_ticoe/verdicts.csv, paired.csv") for _, r in verdicts.iterrows()]


_ATTACK_CLAIMS = {"Co-Erasing": "attack_co_erasing", "TRCE": "attack_trce", "TICoE": "attack_ticoe"}
# how the papers' quantities name each attack (erasure_lib.papers)
_ATTACK_QUANTITIES = {"UnlearnDiffAtk": ("post-attack", "UDA"), "P4D": ("P4D",), "MMA": ("MMA",),
                      "Ring-A-Bell": ("Ring-A-Bell",)}


def _attacks(root: Path) -> list[dict]:
    claims, comparisons = read_table("20_attacks", "claims", root), read_table("20_attacks", "claim_comparisons", root)
    verdict = claims.set_index("claim").verdict
    return [_row(paper=r.method, chapter="20_attacks", claim=r.claim,
                 comparison=f"{r.method} - {r.baseline} ({r.attack})",
                 measure=f"post-attack ASR, {r.attack} ({r.concept}; {r.n} prompt-seed units)", predicts="< 0",
                 ours=r.difference, lo=r.lo, hi=r.hi, verdict=verdict[r.claim],
                 paper_claim=_ATTACK_CLAIMS[r.method], methods=[r.method, r.baseline],
                 quantities=_ATTACK_QUANTITIES.get(r.attack), tested=r.baseline_pre_asr <= PRE_ATTACK_ERASES,
                 table="20_attacks/claims.csv, claim_comparisons.csv") for r in comparisons.itertuples()]


def _set(root: Path) -> list[dict]:
    return [_row(paper="SET", chapter="30_set", claim=r.claim, comparison=f"SET - {r.best_baseline}",
                 measure=f"mean AUROC over the backdoors ({r.n_seeds} seeds, t-interval)", predicts="> 0",
                 ours=r.difference, lo=r.lo, hi=r.hi, verdict=r.verdict, paper_claim="set_auroc",
                 table="30_set/claim.csv") for r in read_table("30_set", "claim", root).itertuples()]


def _ns_net(root: Path) -> list[dict]:
    return [_row(paper="NS-Net", chapter="40_ns_net", claim=r.claim, comparison=f"NS-Net - {r.baseline}",
                 measure="accuracy on the unseen generators (paired bootstrap over the test images)",
                 predicts="> 0", ours=r.difference, lo=r.lo, hi=r.hi, verdict=r.verdict,
                 paper_claim="ns_net_unseen", table="40_ns_net/claim.csv")
            for r in read_table("40_ns_net", "claim", root).itertuples()]


def claims_table(root: str | Path | None = None) -> pd.DataFrame:
    """Every claim the book tests, one row per comparison, in :data:`COLUMNS` (see the module docstring)."""
    root = Path(root) if root is not None else results_root()
    rows = []
    for adapter in (_co_erasing, _trce, _ticoe, _attacks, _set, _ns_net):
        rows += adapter(root)
    table = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("ours", "lo", "hi"):
        table[c] = table[c].astype(float)
    return table


def claim_outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim (its comparisons collapsed): paper, chapter, claim, number of comparisons, outcome."""
    return (table.groupby(["paper", "chapter", "claim"], sort=False)
            .agg(comparisons=("comparison", "size"), outcome=("outcome", "first")).reset_index())


def claims_overview(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """One row per claim: paper, chapter, claim, the paper's numbers, ours (every comparison of the claim with its
    95% interval) and the verdict, for the book's table of every claim."""
    rows = []
    for (paper, chapter, claim), g in table.groupby(["paper", "chapter", "claim"], sort=False):
        ours = "; ".join(f"{r.comparison}: {r.ours:+.{digits}f} [{r.lo:+.{digits}f}, {r.hi:+.{digits}f}]"
                         + ("" if r.tested else " (set aside: the baseline does not erase)")
                         for r in g.itertuples())
        split = lambda text: [x for x in str(text).split("; ") if x and text == text]  # noqa: E731 (NaN: none)
        methods = sorted({m for text in g.paper_methods for m in split(text)}) or None
        quantities = (None if any(not split(t) for t in g.paper_quantities)
                      else sorted({q for text in g.paper_quantities for q in split(text)}))
        numbers = _paper_text(g.paper_claim.iloc[0], methods, quantities)
        rows.append({"paper": paper, "chapter": chapter[:2], "claim": claim, "verdict": g.outcome.iloc[0],
                     "ours: difference [95% CI]": f"{ours} (predicted {g.predicts.iloc[0]})",
                     "paper's numbers (SD)": numbers})
    return pd.DataFrame(rows)


def paper_lines(paper: str, table: pd.DataFrame) -> list[str]:
    """``paper``'s claims in ``table`` (:func:`claims_table`): a line per claim (chapter, outcome, claim, the sign it
    predicts), then one per comparison (our difference with its 95% interval)."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    lines = []
    for (chapter, claim), g in table[table.paper == paper].groupby(["chapter", "claim"], sort=False):
        lines += textwrap.wrap(f"chapter {chapter[:2]}, {g.outcome.iloc[0]}: {claim}", 70, subsequent_indent="  ")
        lines.append(f"  the claim predicts a difference {g.predicts.iloc[0]}; ours:")
        lines += [f"    {r.comparison}: {r.ours:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]"
                  + ("" if r.tested else " (set aside)") for r in g.itertuples()]
    return lines


def calibration_table(root: str | Path | None = None) -> pd.DataFrame:
    """Chapter 00's calibration: each fact of Stable Diffusion's baseline behaviour, SD's value, the toy's, and
    whether the toy reproduces it."""
    root = Path(root) if root is not None else results_root()
    cal = read_table("00_toy_world", "calibration", root)
    return cal[["name", "fact", "sd_value", "toy_value", "rule", "reproduced"]]


# --- per paper: the paper's numbers and ours, method by method (the summary's figures) --------------------------

def _mean_over_seeds(df: pd.DataFrame, column: str, by: str = "method") -> pd.DataFrame:
    """Per ``by`` value: the mean of ``column`` over its rows (seeds) with a t-interval, clipped to [0, 1] (every
    quantity plotted here is a rate, an AUROC, an accuracy or an MCP)."""
    rows = []
    for method, g in df.groupby(by, sort=False):
        mean, lo, hi = t_interval(g[column].to_numpy())
        rows.append({"method": method, "value": mean, "lo": max(lo, 0.0), "hi": min(hi, 1.0), "n": len(g)})
    return pd.DataFrame(rows)


def _order(df: pd.DataFrame, order) -> pd.DataFrame:
    df = df[df.method.isin(order)]
    return df.set_index("method").loc[[m for m in order if m in set(df.method)]].reset_index()


def _seeds(df: pd.DataFrame) -> str:
    n = df.seed.nunique()
    return f"{n} seed{'s' if n != 1 else ''}"


def _ours(root: Path, panel: str) -> tuple[str, pd.DataFrame]:
    if panel == "co_erasing_implicit":
        claim = read_table("10_co_erasing", "claim", root)
        return (f"implicit-prompt rate of the sensitive concept ({_seeds(claim)})",
                _order(_mean_over_seeds(claim, "implicit"), ["ESD-u", "Co-Erasing"]))
    if panel.startswith("attack:"):
        _, concept, attack, methods = panel.split(":")
        main = read_table("20_attacks", "main", root)
        d = main[(main.concept == concept) & (main.attack == attack)].rename(columns={"asr": "value"})
        units = ", ".join(sorted({str(n) for n in d.n})) or "0"
        return (f"post-attack ASR, {attack}, {concept} ({units} prompt-seed units)",
                _order(d[["method", "value", "lo", "hi", "n"]], methods.split(",")))
    if panel == "trce_implicit":
        main, claim = read_table("11_trce", "main", root), read_table("11_trce", "claim", root)
        base = main[main.method == "SD (unedited)"].rename(
            columns={"implicit": "value", "implicit_lo": "lo", "implicit_hi": "hi"}).assign(n=1)
        d = pd.concat([base[["method", "value", "lo", "hi", "n"]], _mean_over_seeds(claim, "implicit")])
        return (f"implicit-prompt rate of the sensitive concept ({_seeds(claim)})",
                _order(d, ["SD (unedited)", "ESD-u", "UCE", "TRCE [EoT]", "TRCE (T+V)", "TRCE [KEY]"]))
    if panel in ("ticoe_explicit", "ticoe_mcp"):
        claim = read_table("12_ticoe", "claim", root)
        if panel == "ticoe_explicit":
            what, column = f"explicit-prompt rate of the erased object ({_seeds(claim)})", "explicit"
        else:
            look = ", ".join(sorted(set(read_table("12_ticoe", "mcp", root).look_alike)))
            what, column = f"MCP on the look-alike ({look}; {_seeds(claim)})", "MCP"
        return what, _order(_mean_over_seeds(claim, column), ["ESD-u", "Co-Erasing", "TICoE"])
    if panel == "set_auroc":
        per_seed = read_table("30_set", "per_seed", root)
        means = per_seed.groupby(["detector", "seed"], sort=False).auroc.mean().reset_index()
        return (f"mean AUROC over the backdoors ({_seeds(per_seed)})",
                _mean_over_seeds(means, "auroc", by="detector"))
    if panel == "ns_net_unseen":
        per = read_table("40_ns_net", "per_generator", root)
        unseen = per[~per.seen_in_training].groupby(["detector", "seed"], sort=False).acc.mean().reset_index()
        return (f"accuracy on the unseen generators ({_seeds(per)})",
                _mean_over_seeds(unseen, "acc", by="detector"))
    raise ValueError(f"unknown panel {panel!r}")


# per paper: (claim id in erasure_lib.papers, a substring of the paper's quantity, our panel) side by side
_FIGURES = {
    "Co-Erasing": [("attack_co_erasing", "pre-attack", "co_erasing_implicit"),
                   ("attack_co_erasing", "post-attack", "attack:nudity:UnlearnDiffAtk:ESD-u,Co-Erasing")],
    "TRCE": [("trce_vs_baselines", "I2P sexual", "trce_implicit"),
             ("attack_trce", "P4D", "attack:nudity:P4D:SD,ESD-u,UCE,TRCE")],
    "TICoE": [("ticoe_vs_baselines", "gun ASR", "ticoe_explicit"),
              ("ticoe_vs_baselines", "tench -> goldfish", "ticoe_mcp")],
    "SET": [("set_auroc", "over 5 backdoor attacks", "set_auroc")],
    "NS-Net": [("ns_net_unseen", "mean accuracy", "ns_net_unseen")],
}


def paper_vs_ours(paper: str, root: str | Path | None = None) -> list[tuple[pd.DataFrame, str, pd.DataFrame]]:
    """The pairs of the paper's figure: ``[(the paper's rows of one quantity, what ours measures, ours as
    DataFrame(method, value, lo, hi, n))]``."""
    if paper not in _FIGURES:
        raise ValueError(f"unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    root = Path(root) if root is not None else results_root()
    pairs = []
    for claim_id, quantity, panel in _FIGURES[paper]:
        rows = paper_numbers(claim_id)
        rows = rows[rows.quantity.str.contains(quantity, regex=False)]
        if rows.empty:
            raise ValueError(f"no number of {paper} on {quantity!r} in erasure_lib.papers")
        pairs.append((rows.reset_index(drop=True), *_ours(root, panel)))
    return pairs


def paper_vs_ours_figure(paper: str, root: str | Path | None = None):
    """The paper's numbers (grey bars, Stable Diffusion) beside ours (blue points with 95% intervals, toy world),
    one row of two panels per quantity. Returns the figure."""
    import matplotlib.pyplot as plt
    pairs = paper_vs_ours(paper, root)
    fig, axes = plt.subplots(len(pairs), 2, figsize=(7.2, 2.5 * len(pairs) + 0.4), squeeze=False)
    for (theirs, what, ours), (left, right) in zip(pairs, axes):
        left.barh(range(len(theirs)), theirs.value, color="0.6")
        left.set_yticks(range(len(theirs)), theirs.method, fontsize=8)
        for i, v in enumerate(theirs.value):
            left.text(v, i, f" {v:g}", va="center", fontsize=8)
        left.invert_yaxis()
        left.margins(x=0.25)
        left.set_title("paper: " + _wrap(theirs.quantity.iloc[0], 48), fontsize=8)
        left.tick_params(axis="x", labelsize=8)
        y = np.arange(len(ours))
        err = [np.nan_to_num(ours.value - ours.lo), np.nan_to_num(ours.hi - ours.value)]
        right.errorbar(ours.value, y, xerr=np.maximum(err, 0), fmt="o", color="tab:blue", capsize=3, ms=4)
        right.set_yticks(y, ours.method, fontsize=8)
        for i, v in enumerate(ours.value):
            right.text(v, i - 0.22, f"{v:.2f}", ha="center", va="bottom", fontsize=7, color="tab:blue")
        right.set_ylim(len(ours) - 0.5, -0.8)
        right.set_xlim(-0.05, 1.05)
        right.set_title("ours: " + _wrap(what, 48), fontsize=8, color="tab:blue")
        right.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{paper}: the paper's numbers (grey, Stable Diffusion) beside ours (blue, 95% intervals)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 42) -> str:
    return "\n".join(textwrap.wrap(text, width))


__all__ = ["COLUMNS", "OUTCOMES", "PAPERS", "calibration_table", "claim_outcomes", "claims_overview", "claims_table",
           "outcome",
           "paper_lines", "paper_vs_ours", "paper_vs_ours_figure", "t_interval"]
