"""What the notebook generators (scripts/make_nb*.py) share: cells, the Colab install cell, the writer."""
import json
from pathlib import Path

SKIP = ["nbval-skip"]
COLAB = '''
# On Colab only: install the book's library and its pinned dependencies (skipped everywhere else)
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run("test -d erasure-book || git clone --depth 1 https://github.com/erasure-book/erasure-book; "
                   "bash erasure-book/scripts/colab_install.sh", shell=True, check=True)
    sys.path.insert(0, "erasure-book")
'''


class Notebook:
    """Cells in order; :meth:`write` gives them ids ``<prefix>-NN`` and writes ``notebooks/<name>.ipynb``."""

    def __init__(self):
        self.cells = []

    def md(self, text):
        self.cells.append({"cell_type": "markdown", "metadata": {}, "source": text.strip("\n")})

    def code(self, text, tags=None):
        meta = {"tags": tags} if tags else {}
        self.cells.append({"cell_type": "code", "metadata": meta, "source": text.strip("\n"), "outputs": [],
                           "execution_count": None})

    def colab(self):
        self.code(COLAB)

    def write(self, name: str, prefix: str, final_newline: bool = True) -> Path:
        nb = {"cells": self.cells,
              "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                           "language_info": {"name": "python", "version": "3.11"}},
              "nbformat": 4, "nbformat_minor": 5}
        for i, c in enumerate(nb["cells"]):
            c["id"] = f"{prefix}-{i:02d}"
        out = Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb"
        out.write_text(json.dumps(nb, indent=1) + ("\n" if final_newline else ""))
        print(len(self.cells), "cells ->", out)
        return out
