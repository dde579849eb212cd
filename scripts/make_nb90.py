"""Writes notebooks/90_what_reproduces.ipynb (its source; `jupyter execute` fills in the outputs)."""
from nbgen import Notebook

book = Notebook()
md, code = book.md, book.code

md(r'''
# What reproduces

This closing chapter gathers every claim the book tests, from the five papers {cite}`li2025coerasing,chen2025trce,li2026ticoe,li2026set,yan2025nsnet`
and from the attacks against their erased models, into one table. Each row gives the claim, what we measured, our
number with its 95% interval, and the verdict of the chapter that tested it. One figure per paper puts its numbers on
Stable Diffusion beside ours on the toy world. Chapter 00's calibration of the toy world sits beside them, because it
decides which verdicts can speak for Stable Diffusion at all.

The chapter computes nothing new about the methods. It only reads the tables the chapters wrote to `results/`
(`erasure_lib.summary`, which says how each table maps to a row), so it is a view of the book as last executed. Its
own table goes to `results/90_what_reproduces/`.

```{note}
**How to read a verdict.** *Confirmed*: the chapter's rule, stated before its data, holds on the toy world.
*Not confirmed*: the rule fails although the toy world reproduces the facts the claim rests on. *Limited by the toy
world*: the toy does not reproduce a fact of Stable Diffusion that the claim needs (for example, ESD-u does not erase
nudity on the toy, chapter {doc}`00_toy_world`), or the baseline is too weak to compare against, so the verdict says
nothing either way about Stable Diffusion. The papers' numbers come from `erasure_lib.papers`, which quotes the specs.
They are for orientation only: they were measured on other models, prompts and judges, and several are second-hand
(each row's source says so).
```
''')

book.colab()

code('''
# parameters: which results to summarise (papermill overrides them)
profile = "toy"        # the profile every summarised table must come from
results_dir = None     # None: the book's results/ (what its chapters wrote; tests point their own runs elsewhere)
''', tags=["parameters"])

code('''
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown

from erasure_lib import summary
from erasure_lib.papers import paper_numbers
from erasure_lib.results import ROOT, show_table, write_table
''')

code('''
# NBVAL_CHECK_OUTPUT
# read the book's results/ (not $ERASURE_BOOK_RESULTS, where test runs write their scratch tables)
root = Path(results_dir) if results_dir is not None else ROOT / "results"
claims = summary.claims_table(root)
calibration = summary.calibration_table(root)

# every table summarised here must come from the same profile: read each one's provenance
figures = {"11_trce/main.csv", "11_trce/claim.csv", "12_ticoe/claim.csv", "12_ticoe/mcp.csv", "20_attacks/main.csv",
           "30_set/per_seed.csv", "40_ns_net/per_generator.csv"}   # what the figures below read besides
sources = sorted({t.strip() if "/" in t else f"{c}/{t.strip()}" for c, ts in zip(claims.chapter, claims.table)
                  for t in ts.split(",")} | {"00_toy_world/calibration.csv"} | figures)
provenance = {}
for name in sources:
    chapter, table = name.split("/") if "/" in name else (None, name)
    meta = json.loads((root / chapter / table.replace(".csv", ".json")).read_text())
    provenance[name] = {"profile": meta.get("profile"), "commit": meta.get("environment", {}).get("git_commit")}
profiles = {p["profile"] for p in provenance.values()}
if profiles != {profile}:
    raise ValueError(f"the tables come from profiles {sorted(map(str, profiles))}, not only {profile!r}: "
                     "re-execute the chapters on one profile")
print(f"{len(sources)} tables read, all from the {profile!r} profile")
''')

md(r'''
## Every claim, at a glance

One row per claim: its verdict; ours on the toy world, the difference the claim is about (the paper's method minus
the baseline, or [EoT] minus [KEY]) with its 95% interval, one per comparison, and the sign the paper's claim
predicts (rates and attack success are better lower, AUROC, accuracy and MCP higher); and the paper's numbers on
Stable Diffusion for the methods compared. The verdict follows the rule the chapter stated before its data, and that rule may ask
more than the interval shown here (every seed's interval apart, a usability bound, a baseline that erases), so an
interval that excludes zero can sit beside *not confirmed*. Chapter 20 sets aside every comparison whose baseline
does not erase the concept before the attack (its pre-attack ASR is above 0.5): an attack cannot bring back what was
never removed. Those comparisons are shown, marked *set aside*, and do not count for the verdict.
''')

code('''
# NBVAL_CHECK_OUTPUT
outcomes = summary.claim_outcomes(claims)
counts = outcomes.outcome.value_counts().reindex(summary.OUTCOMES, fill_value=0)
Markdown(f"The book tests **{len(outcomes)} claims** of {outcomes.paper.nunique()} papers in "
         f"{len(claims)} comparisons: " + ", ".join(f"**{n}** {o}" for o, n in counts.items()) + ".")
''')

code('''
# the Styler's HTML carries a random table id: not compared by nbval; full-width: the table spans the page
show_table(summary.claims_overview(claims),
           caption="Every claim the book tests: ours (toy) and the paper's numbers (Stable Diffusion, for orientation)")
''', tags=["full-width"])

md(r'''
Each comparison in detail, with what was measured:
''')

code('''
show_table(claims[["paper", "comparison", "measure", "predicts", "ours", "lo", "hi", "tested", "outcome"]],
           estimates={"ours [95% CI]": ("ours", "lo", "hi")}, digits=3, caption="Every comparison")
''', tags=["full-width"])

code('''
# NBVAL_CHECK_OUTPUT
per_paper = (outcomes.groupby(["paper", "outcome"]).size().unstack(fill_value=0)
             .reindex(index=list(summary.PAPERS), columns=list(summary.OUTCOMES), fill_value=0))
per_paper["claims"] = per_paper.sum(axis=1)
per_paper
''')

md(r'''
## The papers' numbers beside ours

For each paper, its numbers on Stable Diffusion (grey bars) next to ours on the toy world (blue points with 95%
intervals), quantity by quantity. The two sides never share a scale: the paper measures attack success in percent
over hundreds of prompts with NudeNet or a classifier, and we measure rates over a few dozen toy prompts with the
toy's classifier. The figures show which way each comparison goes and how wide our intervals are.
''')

for paper in ("Co-Erasing", "TRCE", "TICoE", "SET", "NS-Net"):
    chapter = {"Co-Erasing": "10_co_erasing", "TRCE": "11_trce", "TICoE": "12_ticoe", "SET": "30_set",
               "NS-Net": "40_ns_net"}[paper]
    md(f'''
### {paper}

Chapter {{doc}}`{chapter}`{" and chapter {doc}`20_attacks` (the attacks)" if paper in ("Co-Erasing", "TRCE", "TICoE") else ""}.
''')
    code(f'''
# NBVAL_CHECK_OUTPUT
fig = summary.paper_vs_ours_figure("{paper}", root)
for line in summary.paper_lines("{paper}", claims):
    print(line)
''')

md(r'''
## The instrument: how far the toy world stands for Stable Diffusion

Chapter {doc}`00_toy_world` checks the toy world against facts of Stable Diffusion's baseline behaviour that the
papers take for granted (ESD-u erases nudity, UCE erases it about as well, attacks bring it back...). A claim that
rests on a fact the toy does not reproduce gets the verdict *limited by the toy world* in its chapter. The table lists
each fact, Stable Diffusion's value (from the specs), the toy's, and whether the toy reproduces it.
''')

code('''
# NBVAL_CHECK_OUTPUT
n_rep = int((calibration.reproduced == "yes").sum())
n_unmeasured = int((calibration.reproduced == "not measured").sum())
Markdown(f"The toy world reproduces **{n_rep} of {len(calibration)}** facts of Stable Diffusion's baseline "
         f"behaviour (not measured: {n_unmeasured}).")
''')

code('''
show_table(calibration[["fact", "sd_value", "toy_value", "reproduced"]], digits=2,
           caption="Chapter 00: Stable Diffusion's baseline facts on the toy world")
''')

md(r'''
## What this says, and what it does not

A claim that ends *limited by the toy world* compares with something the toy world does not reproduce. For the
erasure claims, that is a baseline fact of the calibration above; the facts the toy misses are listed below, computed
from its table. Where a claim measures a method against ESD-u and the toy's ESD-u does not erase, the difference,
however clear, is not the paper's difference. NS-Net's comparisons are limited for another reason, stated in chapter
{doc}`40_ns_net`: the chapter's rule asks that the baselines separate their own training generators, and on the toy
CLIP they barely do.

A *not confirmed* verdict means that the chapter's rule failed although nothing the chapter checks marks the toy
world as the limit (for chapter 20's TRCE claim, for example, UCE does erase before the attack).
These verdicts are listed after the facts. They say that the toy world, at its scale, does not show the effect; they
do not refute the paper on Stable Diffusion, where the sd14 profile ({doc}`95_sd14`) runs the same notebooks.
''')

code('''
# NBVAL_CHECK_OUTPUT
missed = calibration[calibration.reproduced == "no"]
print(f"Facts of Stable Diffusion the toy world does not reproduce ({len(missed)}):")
for r in missed.itertuples():
    print(f"- {r.fact} (SD: {r.sd_value}; toy: {r.toy_value:.2f})")
''')

code('''
# NBVAL_CHECK_OUTPUT
print("Claims not confirmed on the toy world:")
for r in outcomes[outcomes.outcome == "not confirmed"].itertuples():
    rows = claims[claims.claim == r.claim]
    parts = "; ".join(f"{c.comparison}: {c.ours:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] (predicted {c.predicts})"
                      for c in rows.itertuples())
    print(f"- {r.paper} (chapter {r.chapter[:2]}): {r.claim}. {parts}")
''')

code('''
# NBVAL_CHECK_OUTPUT
write_table(claims, "90_what_reproduces", "claims",
            provenance={"profile": profile, "sources": provenance,
                        "note": "read from the chapters' results tables by erasure_lib.summary; nothing recomputed "
                                "but chapter 10's seed-level t-interval of its per-seed differences"})
write_table(outcomes, "90_what_reproduces", "outcomes", provenance={"profile": profile})
write_table(calibration, "90_what_reproduces", "calibration", provenance={"profile": profile,
                                                                          "source": "00_toy_world/calibration.csv"})
print("written: results/90_what_reproduces/{claims,outcomes,calibration}.csv")
''')

book.write("90_what_reproduces", "wr")
