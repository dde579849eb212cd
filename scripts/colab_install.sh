#!/usr/bin/env bash
# Install erasure_lib into Google Colab's own Python (the first cell of every notebook runs this on Colab only).
#
# Colab's Python and its CUDA build of torch differ from the CPU machines' pins (pyproject.toml: Python 3.11,
# torch 2.13.0 CPU), so the package goes in without its dependencies and the libraries the book needs are
# installed at the versions pyproject.toml pins (tests/test_packaging.py checks that they agree), keeping Colab's
# torch, numpy, pandas, pillow and matplotlib. Optional: ERASURE_BOOK_GPU_EXTRA=1 adds torch-fidelity (Inception FID).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pip install -q --no-deps --ignore-requires-python -e "$here"
pip install -q diffusers==0.42.1 transformers==5.24.0 accelerate==1.15.0 safetensors==0.8.0 tokenizers==0.23.3 \
    torchmetrics==1.9.0 nudenet==3.4.2 peft==0.21.2 seaborn==0.13.2 tqdm
if [ "${ERASURE_BOOK_GPU_EXTRA:-0}" = "1" ]; then
    pip install -q --no-deps torch-fidelity==0.3.0 scipy
fi
