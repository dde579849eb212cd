"""The packaging stays consistent: one set of pins for pip and conda, no forbidden packages,
and a table of contents that only names pages that exist."""

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

# torchvision and torch-fidelity drag in a CUDA torch (specs/stack.md section 2).
FORBIDDEN = {"torchvision", "torch-fidelity"}


def _pins(lines):
    """{canonical name: requirement} for requirement strings; duplicates are an error."""
    pins = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} is listed twice"
        pins[name] = req
    return pins


def _as_comparable(pins):
    return {name: (str(r.specifier), sorted(r.extras), str(r.marker or "")) for name, r in pins.items()}


@pytest.fixture(scope="module")
def pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"] + project["optional-dependencies"]["dev"])


@pytest.fixture(scope="module")
def environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def environment_pins(environment):
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    lines = [line for line in pip_sections[0] if not line.startswith("-e ")]
    return _pins(lines)


def test_environment_pins_match_pyproject(pyproject_pins, environment_pins):
    assert _as_comparable(environment_pins) == _as_comparable(pyproject_pins)


def test_environment_installs_the_project_and_python_311(environment):
    conda_deps = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda_deps
    assert "pip" in conda_deps
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_no_forbidden_dependencies(environment_pins):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # the opt-in `gpu` extra (Inception FID on a Colab GPU) is the one place torch-fidelity may appear
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "gpu"}
    lines = project["dependencies"] + [r for extra in extras.values() for r in extra]
    reqs = [Requirement(line) for line in lines] + list(environment_pins.values())
    names = {canonicalize_name(r.name) for r in reqs}
    assert not names & FORBIDDEN
    # torchmetrics[image] pulls in torch-fidelity too
    assert not any(canonicalize_name(r.name) == "torchmetrics" and "image" in r.extras for r in reqs)


def test_gpu_extra_is_opt_in():
    """Nothing CI installs (the dev extra) reaches the gpu extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "gpu" in project["optional-dependencies"]
    assert not any("gpu" in Requirement(r).extras for r in project["optional-dependencies"]["dev"])
    assert "gpu" not in (ROOT / "Makefile").read_text()


def _toc_files(node):
    """Every `root` and `file` entry of a jb-book table of contents, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file"):
                yield value
            else:
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_toc_files_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    files = list(_toc_files(toc))
    assert files and files[0] == toc["root"]
    missing = [
        f for f in files
        if not any((ROOT / (f + suffix)).is_file() for suffix in ("", ".md", ".ipynb"))
    ]
    assert not missing, f"_toc.yml names pages that do not exist: {missing}"


def test_colab_install_script_uses_the_pyproject_pins(pyproject_pins):
    """scripts/colab_install.sh (run by every notebook's first cell on Colab) installs the same versions as
    pyproject.toml, and leaves Colab's own torch alone."""
    import re
    text = (ROOT / "scripts" / "colab_install.sh").read_text()
    named = dict(re.findall(r"\b([a-z][a-z0-9_-]*)==([0-9][0-9a-z.]*)", text))
    assert {"diffusers", "transformers", "nudenet", "torchmetrics"} <= set(named)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {**pyproject_pins, **_pins(project["optional-dependencies"]["gpu"])}
    for name, version in named.items():
        assert str(pins[canonicalize_name(name)].specifier) == f"=={version}", name
    assert "torch==" not in text and "--no-deps" in text
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert "scripts/colab_install.sh" in nb.read_text(), f"{nb.name} has no Colab install cell"
