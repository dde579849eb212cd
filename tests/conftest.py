"""Test-session setup: one CPU thread and no hub access.

With another busy process on the 2 cores, torch's default 2 OpenMP threads slow the tiny models
about 100x (specs/stack.md section 6), so every test runs single-threaded. The environment
variables are set before torch is imported anywhere in the session.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"

try:
    import torch
except ImportError:  # collection must still work, e.g. for tests that need no torch
    pass
else:
    torch.set_num_threads(1)
