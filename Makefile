# erasure-book: one entry point for a fresh clone with only python3.11 on the PATH.
#   make book   -> .venv with the pinned stack, every notebook executed (toy profile), HTML in _build/html
#   make test   -> same .venv, unit tests + nbval regression of the notebooks
#   make check-book -> the rendered book opened page by page in headless Chromium: screenshots, and a failure on a
#                  broken link, a missing image, a MathJax error or an uncensored sensitive sd14 image
#   make clean  -> remove _build

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

# One OpenMP thread: with a second busy process on 2 cores torch's default slows small models ~100x.
RUNENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1

.PHONY: venv test book check-book clean

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

# The book root is the repo root. scripts/build_book.py executes the notebooks whose execution cache is stale (their
# cells, the library, the zoo or the pins changed; all of them on a fresh clone), independent ones in parallel with
# one torch thread each, then runs `jupyter-book build . -W --keep-going` (any Sphinx warning fails the build), which
# finds every notebook in the cache (_config.yml: execute_notebooks: cache).
book: venv
	$(RUNENV) $(VENV)/bin/python scripts/build_book.py

# Debian's chromium (installed when missing; a runner's Chrome will do), driven by Playwright from the .venv.
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome || echo /usr/bin/chromium)

check-book: book
	@test -x "$(CHROMIUM)" || (apt-get update -qq && apt-get install -y -qq chromium)
	$(RUNENV) $(VENV)/bin/python scripts/check_book.py _build/html --screenshots _build/screenshots --chromium "$(CHROMIUM)"

clean:
	rm -rf _build
