"""Append to chapters 10-12 the section that shows their robustness claim from chapter 20's committed results, and
fill its outputs by executing only the new cells (they read results/20_attacks/, nothing else of the notebook).

    .venv/bin/python scripts/add_robustness_cells.py
"""
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = {
    "10_co_erasing": ("Co-Erasing", "nudity", ["UnlearnDiffAtk"], ["SD", "ESD-u", "UCE"],
                      "Co-Erasing's paper reports its nudity ASR under UnlearnDiffAtk (\"UD Attack\") against ESD's"),
    "11_trce": ("TRCE", "nudity", ["P4D", "MMA", "Ring-A-Bell"], ["SD", "ESD-u", "UCE"],
                "TRCE's paper reports its ASR on the P4D, MMA-Diffusion and Ring-A-Bell prompts against ESD's and UCE's"),
    "12_ticoe": ("TICoE", "tench", ["UnlearnDiffAtk", "P4D"], ["SD", "ESD-u", "Co-Erasing"],
                 "TICoE's paper reports its UDA and P4D ASR (on the object gun) against ESD's and Co-Erasing's"),
}
MARK = "robustness-from-chapter-20"

for name, (method, concept, attacks, baselines, why) in CLAIMS.items():
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if MARK not in c.metadata.get("tags", [])]
    md = nbformat.v4.new_markdown_cell(
        f"## After an attack\n\n{why}. The attacks run in chapter 20, [Do erased concepts come back?]"
        f"(20_attacks.ipynb), against this chapter's cached edits; the rows below are read from its committed "
        f"results (`results/20_attacks/main.csv` and `claims.csv`, provenance in their `.json`), not recomputed "
        f"here. Post-attack ASR counts a seed prompt as broken when the seed prompt or the adversarial prompt "
        f"shows the concept (UnlearnDiffAtk's rule); 95% intervals over (attack seed, seed prompt).")
    md.metadata["tags"] = [MARK]
    src = (f"# {method}'s robustness claim: chapter 20's committed results (the toy profile's)\n"
           "from erasure_lib import chapters\n"
           "from erasure_lib.results import show_table\n\n"
           f"robustness, robustness_claim = chapters.attack_robustness({method!r}, {concept!r}, {attacks!r}, "
           f"{baselines!r})\n"
           "if robustness is None:\n"
           "    print(\"chapter 20 (notebooks/20_attacks.ipynb) has not been run: no post-attack results yet\")\n"
           "else:\n"
           f"    show_table(robustness.reset_index(), caption={concept + ': ASR before and after each attack (chapter 20)'!r})\n"
           "    for r in robustness_claim.itertuples():\n"
           "        aside = f\"; set aside, not erasing before the attack: {r.baselines_not_erasing}\" \\\n"
           "            if isinstance(r.baselines_not_erasing, str) and r.baselines_not_erasing else \"\"\n"
           "        print(f\"{r.claim} ({r.concept}; {r.attacks}; {r.seeds} attack seed(s){aside}): {r.verdict}. \"\n"
           "              f\"Paper, for orientation: {r.paper}\")")
    code = nbformat.v4.new_code_cell(src)
    code.metadata["tags"] = [MARK, "nbval-skip"]
    part = nbformat.v4.new_notebook(cells=[code], metadata=nb.metadata)
    NotebookClient(part, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    code = part.cells[0]
    code.metadata["tags"] = [MARK, "nbval-skip"]
    code.execution_count = 1 + max((c.get("execution_count") or 0) for c in nb.cells if c.cell_type == "code")
    for i, c in enumerate((md, code)):
        c["id"] = f"{MARK}-{i}"
    nb.cells += [md, code]
    nbformat.write(nb, path)
    print(name, "->", [o.get("text", "")[:200] for o in code.outputs if o.get("output_type") == "stream"])
