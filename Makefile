# erasure-book: one entry point for a fresh clone with only python3.11 on the PATH.
#   make book   -> .venv with the pinned stack, every notebook executed (toy profile), HTML in _build/html
#   make test   -> same .venv, unit tests + nbval regression of the notebooks
#   make clean  -> remove _build

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

# One OpenMP thread: with a second busy process on 2 cores torch's default slows small models ~100x.
RUNENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1

.PHONY: venv test book clean

venv: $(STAMP)

# torch goes first, alone, so pip settles on the CPU wheel before anything else can ask for torch.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e ".[dev]"
	touch $@

# `tests` is collected as usual; nbval (--nbval-lax) collects every .ipynb under notebooks/.
test: venv
	$(RUNENV) $(VENV)/bin/python -m pytest tests --nbval-lax --nbval-current-env notebooks -p no:cacheprovider

# The book root is the repo root; _config.yml forces execution of every notebook as committed
# (their parameters cells default to the toy profile). -W: any Sphinx warning fails the build.
book: venv
	$(RUNENV) $(VENV)/bin/jupyter-book build . -W --keep-going

clean:
	rm -rf _build
