"""`make book` (scripts/build_book.py): which notebooks are stale, and the execution cache Jupyter Book reads."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(spec)
sys.modules["build_book"] = build_book
spec.loader.exec_module(build_book)


def test_every_notebook_is_in_the_toc_and_the_dependency_graph():
    names = build_book.toc_notebooks()
    assert sorted(names) == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert set(build_book.DEPENDS) == set(names) == set(build_book.EXPECTED_MINUTES)
    order = {n: i for i, n in enumerate(names)}
    for name, deps in build_book.DEPENDS.items():
        assert all(order[d] < order[name] for d in deps), name      # acyclic: dependencies come earlier
    # chapter 90 reads every chapter's results; the sd14 guide (95) computes its own from the library
    assert set(build_book.DEPENDS["90_what_reproduces"]) == set(names) - {"90_what_reproduces", "95_sd14"}


def _notebook(code):
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# t", "id": "m"},
                      {"cell_type": "code", "metadata": {}, "source": code, "outputs": [], "execution_count": None,
                       "id": "c"}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture()
def tiny_book(tmp_path, monkeypatch):
    """A book of two notebooks, b depending on a (names borrowed from the real graph)."""
    monkeypatch.setattr(build_book, "DEPENDS", {"a": (), "b": ("a",)})
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "erasure_lib").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "erasure_lib" / "x.py").write_text("X = 1\n")
    (tmp_path / "data" / "MANIFEST.json").write_text("{}")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    for name, code in (("a", "print(6 * 7)"), ("b", "print('b')")):
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text(json.dumps(_notebook(code)))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - chapters:\n"
                                       "      - file: notebooks/a\n      - file: notebooks/b\n")
    return tmp_path


def test_keys_follow_the_code_the_library_and_the_dependencies(tiny_book):
    keys = build_book.notebook_keys(["a", "b"], tiny_book)
    # markdown does not count
    nb = json.loads((tiny_book / "notebooks" / "a.ipynb").read_text())
    nb["cells"][0]["source"] = "# other title"
    (tiny_book / "notebooks" / "a.ipynb").write_text(json.dumps(nb))
    assert build_book.notebook_keys(["a", "b"], tiny_book) == keys
    # the library: every notebook
    (tiny_book / "erasure_lib" / "x.py").write_text("X = 2\n")
    lib = build_book.notebook_keys(["a", "b"], tiny_book)
    assert lib["a"] != keys["a"] and lib["b"] != keys["b"]
    # a's code: a and b, which depends on it
    (tiny_book / "notebooks" / "a.ipynb").write_text(json.dumps(_notebook("print(1)")))
    code = build_book.notebook_keys(["a", "b"], tiny_book)
    assert code["a"] != lib["a"] and code["b"] != lib["b"]
    # b's code: b only
    (tiny_book / "notebooks" / "b.ipynb").write_text(json.dumps(_notebook("print(2)")))
    assert build_book.notebook_keys(["a", "b"], tiny_book)["a"] == code["a"]


def test_an_executed_notebook_is_found_in_the_cache_until_the_library_changes(tiny_book):
    pytest.importorskip("jupyter_cache")
    assert build_book.toc_notebooks(tiny_book) == ["a", "b"]
    stale = build_book.stale_notebooks(["a", "b"], tiny_book)
    assert set(stale) == {"a", "b"}                                  # a fresh clone executes everything
    build_book.execute_one("a", stale["a"], tiny_book)
    executed = json.loads((tiny_book / "_build" / "executed" / "a.ipynb").read_text())
    assert "".join(executed["cells"][1]["outputs"][0]["text"]) == "42\n"
    assert set(build_book.stale_notebooks(["a", "b"], tiny_book)) == {"b"}
    # what Jupyter Book does in `execute_notebooks: cache`: match the source notebook, merge the cached outputs
    import nbformat
    from jupyter_cache import get_cache
    cache = get_cache(str(tiny_book / "_build" / ".jupyter_cache"))
    source = nbformat.read(tiny_book / "notebooks" / "a.ipynb", as_version=4)
    _, merged = cache.merge_match_into_notebook(source)
    assert merged.cells[1].outputs[0]["text"] == "42\n"
    (tiny_book / "erasure_lib" / "x.py").write_text("X = 3\n")
    assert set(build_book.stale_notebooks(["a", "b"], tiny_book)) == {"a", "b"}


class _FakeProcess:
    """A notebook run that ends after ``ticks`` polls with ``code``."""

    def __init__(self, log, name, ticks, code):
        self.log, self.name, self.ticks, self.code, self.returncode = log, name, ticks, code, None
        log.append(("start", name))

    def poll(self):
        self.ticks -= 1
        if self.ticks <= 0 and self.returncode is None:
            self.returncode = self.code
            self.log.append(("end", self.name))
        return self.returncode

    def terminate(self):
        self.log.append(("terminate", self.name))


def _schedule(monkeypatch, tmp_path, depends, fail=(), jobs=2):
    monkeypatch.setattr(build_book, "DEPENDS", depends)
    monkeypatch.setattr(build_book, "LOG", tmp_path / "build.log")
    log = []
    failed = build_book.run_parallel({n: "k" for n in depends}, jobs,
                                     launch=lambda n, k, w: _FakeProcess(log, n, 3, 1 if n in fail else 0))
    return log, failed


def test_schedule_respects_dependencies_and_the_job_limit(monkeypatch, tmp_path):
    depends = {"a": (), "b": ("a",), "c": ("b",), "d": (), "e": ("a", "d")}
    log, failed = _schedule(monkeypatch, tmp_path, depends)
    assert failed == []
    when = {(what, n): i for i, (what, n) in enumerate(log)}
    for n, deps in depends.items():
        assert all(when["end", d] < when["start", n] for d in deps), n
    running = peak = 0
    for what, _ in log:
        running += 1 if what == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_a_failed_notebook_skips_everything_downstream_and_nothing_else(monkeypatch, tmp_path):
    depends = {"a": (), "b": ("a",), "c": ("b",), "d": (), "e": ("d",)}
    log, failed = _schedule(monkeypatch, tmp_path, depends, fail={"a"})
    started = {n for what, n in log if what == "start"}
    assert started == {"a", "d", "e"}                 # b and c (through b) never start
    assert sorted(failed) == ["a", "b", "c"]
    assert "skip c: it depends on a" in (tmp_path / "build.log").read_text()
