"""Build the book (``make book``): execute the stale notebooks in parallel, then render with Jupyter Book.

A notebook is *fresh* when Jupyter Book's execution cache (``_build/.jupyter_cache``, jupyter-cache) holds an
execution of its current code cells whose record also carries this script's key of everything else its outputs depend
on: the library's code (``erasure_lib/**/*.py``), every committed data file (``data/``: the zoo, the toy prompt banks),
the pinned stack (``pyproject.toml``) and the keys of the notebooks it reads from (:data:`DEPENDS`). The results tables
a notebook reads are covered by the keys of the notebooks that write them; results that no notebook of the book
writes (measurements made elsewhere, such as ``results/12_ticoe/gpu_memory_sd14_measured.csv``) are not keyed. Jupyter-cache alone keys on the
code cells only, so a change of the library would not re-execute a chapter; here it does.

Stale notebooks are executed one per process, each with one torch thread, at most ``--jobs`` at a time (default:
the cores this process may use), in an order that respects :data:`DEPENDS`: a chapter that reuses another's cached
edits starts after it, so that nothing is trained twice. Each executed notebook goes into the cache; Jupyter Book then
builds with ``execute_notebooks: cache`` and finds every notebook there. A fresh clone has no cache and executes every
notebook; a rebuild with nothing changed executes none. The committed notebooks are never modified.

Progress goes to the terminal and to ``_build/build_book.log``; a failed notebook keeps its error in the log and
fails the build (the others still run).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "_build" / "build_book.log"
# what each chapter reads from another's run: cached edits and images (runs/edits), or committed results tables
DEPENDS = {
    "00_toy_world": (),
    "01_evaluation": (),
    "10_co_erasing": ("00_toy_world",),                 # chapter 00's ESD baselines
    "11_trce": ("10_co_erasing",),                      # chapter 10's baselines and images
    "12_ticoe": ("10_co_erasing", "11_trce"),
    "20_attacks": ("10_co_erasing", "11_trce", "12_ticoe"),  # attacks every erased model
    "30_set": (),
    "40_ns_net": ("10_co_erasing",),                    # chapter 10's UCE edit as a generator
    "90_what_reproduces": ("00_toy_world", "01_evaluation", "10_co_erasing", "11_trce", "12_ticoe", "20_attacks",
                           "30_set", "40_ns_net"),      # reads every chapter's results
    "95_sd14": (),                                      # the sd14 guide: computed from the library (and chapter 12's
                                                        # H200 measurement, which no notebook writes)
}
# the longest first among the ready ones, so that the long chains start early (minutes on 2 cores, measured)
EXPECTED_MINUTES = {"00_toy_world": 21, "01_evaluation": 6, "10_co_erasing": 37, "11_trce": 9, "12_ticoe": 29,
                    "20_attacks": 40, "30_set": 63, "40_ns_net": 11, "90_what_reproduces": 1,
                    "95_sd14": 2}
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def toc_notebooks(root: Path = ROOT) -> list[str]:
    """The notebooks of ``_toc.yml``, in its order (names without folder or suffix)."""
    import yaml
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [Path(f).name for f in files if f.startswith("notebooks/")]


def _digest(paths, root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def environment_key(root: Path = ROOT) -> str:
    """The key of what every notebook depends on besides its own cells: the library's code, every committed data
    file (the zoo, its manifest, the toy prompt banks, the training logs) and the pins."""
    files = sorted((root / "erasure_lib").rglob("*.py")) + sorted(p for p in (root / "data").rglob("*") if p.is_file())
    return _digest([f for f in files + [root / "pyproject.toml"] if f.exists()], root)


def execution_cache(root: Path = ROOT) -> Path:
    """Jupyter Book's execution cache of the book at ``root`` (its default place, which _config.yml keeps)."""
    return root / "_build" / ".jupyter_cache"


def _notebooks(root: Path):
    """``name -> notebook``, each read from ``root/notebooks/`` once, when first asked for."""
    import nbformat
    read: dict = {}

    def get(name):
        if name not in read:
            read[name] = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        return read[name]
    return get


def notebook_keys(names, root: Path = ROOT, notebook=None) -> dict[str, str]:
    """Each notebook's key: its code cells, the environment key and its dependencies' keys. ``notebook(name)``
    gives a notebook (default: read from ``root``)."""
    notebook = notebook or _notebooks(root)
    env = environment_key(root)
    keys: dict[str, str] = {}

    def key(name):
        if name not in keys:
            code = json.dumps([c.source for c in notebook(name).cells if c.cell_type == "code"])
            deps = [key(d) for d in DEPENDS.get(name, ()) if (root / "notebooks" / f"{d}.ipynb").exists()]
            keys[name] = hashlib.sha256("\0".join([code, env, *deps]).encode()).hexdigest()
        return keys[name]

    for n in names:
        key(n)
    return {n: keys[n] for n in names}


def cached_key(cache, nb) -> str | None:
    """The key recorded with the cached execution of notebook ``nb``'s current cells, ``None`` if there is none."""
    try:
        record = cache.match_cache_notebook(nb)
    except KeyError:
        return None
    return (record.data or {}).get("erasure_book_key")


def stale_notebooks(names, root: Path = ROOT, cache_dir: Path | None = None) -> dict[str, str]:
    """``{name: key}`` of the notebooks whose cached execution is missing or was made with another key."""
    from jupyter_cache import get_cache
    cache = get_cache(str(cache_dir if cache_dir is not None else execution_cache(root)))
    notebook = _notebooks(root)
    keys = notebook_keys(names, root, notebook)
    return {n: k for n, k in keys.items() if cached_key(cache, notebook(n)) != k}


def execute_one(name: str, key: str, root: Path = ROOT, cache_dir: Path | None = None) -> None:
    """Execute ``notebooks/<name>.ipynb`` (working directory ``notebooks/``) and store it in the cache with ``key``."""
    import nbformat
    from jupyter_cache import get_cache
    from nbclient import NotebookClient
    src = root / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(src, as_version=4)
    # record_timing off: jupyter-cache hashes the cells' metadata, and timings would make the hash differ
    NotebookClient(nb, timeout=7200, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(src.parent)}}).execute()
    out = root / "_build" / "executed" / f"{name}.ipynb"
    cache_dir = cache_dir if cache_dir is not None else execution_cache(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir.parent / ".jupyter_cache.lock", "w") as lock:  # one writer at a time (SQLite)
        fcntl.flock(lock, fcntl.LOCK_EX)
        get_cache(str(cache_dir)).cache_notebook_file(str(out), uri=str(src), data={"erasure_book_key": key},
                                                      check_validity=False, overwrite=True)


def _log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as f:
        f.write(line + "\n")


def run_parallel(stale: dict[str, str], jobs: int, launch=None) -> list[str]:
    """Execute ``stale`` notebooks, ``jobs`` at a time, in :data:`DEPENDS` order: a notebook starts once every
    stale notebook it depends on has finished; when one fails, everything that depends on it, directly or not, is
    skipped. ``launch(name, key, workers)`` starts one (default: a process running :func:`execute_one`) and returns
    an object with ``poll()``, ``returncode`` and ``terminate()``. Returns the failed and skipped notebooks."""
    launch = launch or _launch
    pending, running, done, failed = dict(stale), {}, set(), []
    try:
        while pending or running:
            ready = [n for n in pending if all(d in done or d not in stale for d in DEPENDS.get(n, ()))]
            ready.sort(key=lambda n: -EXPECTED_MINUTES.get(n, 10))
            while ready and len(running) < jobs:
                name = ready.pop(0)
                key = pending.pop(name)
                # sampling threads (sampling.sample_workers): this notebook's share of the cores among those that
                # run at once now
                workers = max(1, jobs // min(jobs, len(running) + 1 + len(ready)))
                running[name] = (launch(name, key, workers), time.time())
                _log(f"start {name} ({workers} sampling thread(s); {len(running)} running, {len(pending)} waiting)")
            if not running:  # what is left waits on a notebook that failed
                break
            time.sleep(0.05 if launch is not _launch else 2)
            for name, (proc, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                minutes = (time.time() - t0) / 60
                if proc.returncode == 0:
                    done.add(name)
                    _log(f"done  {name} in {minutes:.1f} min")
                else:
                    failed.append(name)
                    _log(f"FAIL  {name} after {minutes:.1f} min (exit {proc.returncode}; _build/executed/{name}.log)")
                    for n in _dependents(name, pending):
                        pending.pop(n)
                        failed.append(n)
                        _log(f"skip {n}: it depends on {name}")
    finally:
        for proc, _ in running.values():  # interrupted: stop the notebooks still running
            proc.terminate()
    for name in pending:
        failed.append(name)
        _log(f"skip {name}: a notebook it depends on failed")
    return failed


def _dependents(name: str, among) -> list[str]:
    """The notebooks of ``among`` that depend on ``name``, directly or through others."""
    out, frontier = [], {name}
    while frontier:
        nxt = {n for n in among if n not in out and frontier & set(DEPENDS.get(n, ()))}
        out += sorted(nxt)
        frontier = nxt
    return out


def _launch(name: str, key: str, workers: int):
    env = {**os.environ, **THREAD_ENV, "ERASURE_BOOK_SAMPLE_WORKERS": str(workers)}
    log = ROOT / "_build" / "executed" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, __file__, "--execute-one", name, "--key", key], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else (os.cpu_count() or 1))
    ap.add_argument("--execute-only", action="store_true", help="execute the stale notebooks, do not render")
    ap.add_argument("--dry-run", action="store_true", help="list the stale notebooks and stop")
    ap.add_argument("--execute-one", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.execute_one:
        execute_one(args.execute_one, args.key)
        return 0
    t0 = time.time()
    names = toc_notebooks()
    stale = stale_notebooks(names)
    _log(f"{len(stale)} of {len(names)} notebooks to execute: {', '.join(stale) or 'none'}")
    if args.dry_run:
        return 0
    failed = run_parallel(stale, max(1, args.jobs)) if stale else []
    t1 = time.time()
    _log(f"executed in {(t1 - t0) / 60:.1f} min")
    if failed:
        _log(f"failed: {', '.join(failed)}")
        return 1
    if args.execute_only:
        return 0
    env = {**os.environ, **THREAD_ENV}
    rc = subprocess.call([str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "-W", "--keep-going"],
                         cwd=ROOT, env=env)
    _log(f"rendered in {(time.time() - t1) / 60:.1f} min (exit {rc}); whole build {(time.time() - t0) / 60:.1f} min")
    return rc


if __name__ == "__main__":
    sys.exit(main())
