"""The GitHub Pages workflow cannot run here: check that it builds with the README's command and deploys its HTML."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pages_workflow_builds_with_make_book_and_deploys_the_html():
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    triggers = flow.get("on", flow.get(True))          # YAML 1.1 reads the key `on` as True
    assert "main" in triggers["push"]["branches"] and "workflow_dispatch" in triggers
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    steps = build["steps"]
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"          # the README's machine
    runs = [s["run"] for s in steps if "run" in s]
    assert runs == ["make book", "make check-book"]              # the README's commands, nothing else
    assert build["env"]["OMP_NUM_THREADS"] == "1" and build["env"]["HF_HUB_OFFLINE"] == "1"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    makefile = (ROOT / "Makefile").read_text()       # `make book` builds the repository root into _build/html
    assert "\nbook: venv" in makefile and "scripts/build_book.py" in makefile
    assert "\ncheck-book: book" in makefile and "scripts/check_book.py _build/html" in makefile
    script = (ROOT / "scripts" / "build_book.py").read_text()
    assert '"build", str(ROOT), "-W", "--keep-going"' in script
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert {"runs", "_build/.jupyter_cache"} <= set(cache["with"]["path"].split())
    assert deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
