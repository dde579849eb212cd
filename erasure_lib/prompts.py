"""Evaluation prompt sets as one tidy table, for both profiles.

Every set loads with :func:`load_prompts` as a pandas DataFrame whose first columns are

``prompt`` (str), ``seed`` (int64), ``guidance`` (float64), ``case_id`` (int or str, unique within the set),
``source`` (the set's name),

followed by the source file's other columns (``categories``, ``nudity_percentage``, ``artist``, ``coco_id``,
``adv_prompt``...; spaces in names become ``_``, and a name that clashes with the five above gets an ``orig_``
prefix). ``seed`` and ``guidance`` are per row where the source has them, otherwise the protocol's value
(MMA: seed 42), otherwise ``base_seed + row index`` and the profile's default CFG (7.5 for sd14, 5.0 for
toy). Columns consumed into ``seed``, ``guidance`` or ``case_id`` are not repeated.

Toy profile (no file, no network)
    ``explicit_object``, ``style``, ``sensitive_explicit``, ``sensitive_implicit``, ``lookalike``,
    ``benign``: the held-out sets of :mod:`erasure_lib.toyworld.captions`.

sd14 profile (downloaded on first use, checked against ``data/prompts/MANIFEST_sd14.json``)
    - ``i2p`` (4,703) and ``i2p_sexual`` (931, the rows whose ``categories`` contain "sexual"): I2P,
      Schramowski et al., "Safe Latent Diffusion", CVPR 2023 (arXiv 2211.05105); HF ``AIML-TUDA/i2p``,
      code ``ml-research/i2p``; file: ESD's ``unsafe-prompts4703.csv`` (``rohitgandikota/erasing``) as
      republished by TRCE. Case 2260's prompt is the empty string (kept: it is an unconditional generation).
    - ``unlearndiff`` (142): UnlearnDiffAtk, Zhang et al., ECCV 2024 (arXiv 2310.11868);
      ``OPTML-Group/Diffusion-MU-Attack`` ``prompts/nudity.csv``; also used by AdvUnlearn.
    - ``p4d`` (151): P4D, Chin et al., "Prompting4Debugging", ICML 2024 (arXiv 2309.06135); HF
      ``joycenerd/p4d``. ``case_number`` repeats, so ``case_id`` is the row index.
    - ``ringabell`` (79): Ring-A-Bell, Tsai et al., ICLR 2024 (arXiv 2310.10012); ``chiayi-hsu/Ring-A-Bell``.
      The prompt is ``sensitive prompt``; TRCE runs it unseeded, here ``base_seed + row index``.
    - ``mma`` (1,000): MMA-Diffusion, Yang et al., CVPR 2024 (arXiv 2311.17516); HF
      ``YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark``. The prompt is ``adv_prompt``, seed 42 and
      CFG 7.5 as in TRCE.
    - ``coco_3k`` (3,000): TRCE's ``coco_30k_val.csv``, a subset of the COCO-30k caption list (MS-COCO 2014).
    - ``coco_10k`` (10,000): AdvUnlearn (Zhang et al., NeurIPS 2024, arXiv 2405.15234),
      ``OPTML-Group/AdvUnlearn`` ``data/prompts/coco_10k.csv``; ``case_id`` is the zero-padded COCO id (str).
    - ``big_artists``, ``niche_artists`` (100 each): artist-style prompts of ESD (Gandikota et al., ICCV 2023,
      arXiv 2303.07345) and UCE (WACV 2024, arXiv 2308.14761).

    All but ``coco_10k`` are fetched from TRCE's release (``ddgoodgood/TRCE``, arXiv 2503.07389, ``data/``),
    with the byte-identical ESD / UCE / Diffusion-MU-Attack copies as mirrors; every URL is pinned to a
    commit. See ``specs/evaluation.md`` section 2 and the manifest's ``origin`` / ``license`` fields.

Files are cached in ``cache_dir``, else ``$ERASURE_BOOK_CACHE/prompts``, else ``~/.cache/erasure-book/prompts``,
under the manifest's ``file`` name, written atomically, and their sha256 is checked on every load. Without
network, place the file there by hand, or pass ``path=`` to :func:`load_prompts`, or copy it in with
:func:`install_prompt_file` (both check the hash too).

Content warning: the nudity sets contain sexually explicit text.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._hashing import sha256_file as _sha256
from ._io import atomic_path
from .toyworld import captions

StrPath = str | os.PathLike[str]

TABLE_COLUMNS = ("prompt", "seed", "guidance", "case_id", "source")
TOY_SETS = captions.PROMPT_SETS
TOY_GUIDANCE = 5.0
MANIFEST_PATH = Path(__file__).resolve().parents[1] / "data" / "prompts" / "MANIFEST_sd14.json"
DOWNLOAD_TIMEOUT_S = 60.0

# Read as missing in every column but the prompt one (a prompt "None" or "" stays a string).
_NA_STRINGS = ("", "#N/A", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "<NA>")

log = logging.getLogger(__name__)


class PromptFileError(RuntimeError):
    """A prompt file cannot be used: missing, not downloadable, unverified or corrupt."""


class PromptChecksumError(PromptFileError):
    """A prompt file's sha256 differs from the manifest (truncated, edited, an HTML error page...)."""


class PromptDownloadError(PromptFileError):
    """No URL of a prompt set could be downloaded (offline, or the host is unreachable)."""


# --- the manifest ---------------------------------------------------------------------------------------

def sd14_manifest() -> dict[str, Any]:
    """The committed manifest of the sd14 prompt sets (``data/prompts/MANIFEST_sd14.json``)."""
    return json.loads(MANIFEST_PATH.read_text())


def _sd14_sets() -> dict[str, dict[str, Any]]:
    return sd14_manifest()["sets"]


def prompt_set_names(profile: str | None = None) -> tuple[str, ...]:
    """The names :func:`load_prompts` accepts: those of ``profile`` (``"toy"`` or ``"sd14"``), or all."""
    names = {"toy": tuple(TOY_SETS), "sd14": tuple(_sd14_sets())}
    if profile is None:
        return names["toy"] + names["sd14"]
    if profile not in names:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(names)}")
    return names[profile]


def _profile_of(name: str) -> str:
    if name in TOY_SETS:
        return "toy"
    if name in _sd14_sets():
        return "sd14"
    raise ValueError(f"unknown prompt set {name!r}; valid: toy: {', '.join(prompt_set_names('toy'))}; "
                     f"sd14: {', '.join(prompt_set_names('sd14'))}")


def _file_entry(name: str) -> dict[str, Any]:
    """The manifest entry that describes ``name``'s file (a derived set's parent entry)."""
    sets = _sd14_sets()
    if name not in sets:
        _profile_of(name)  # raises the unknown-name error
        raise ValueError(f"prompt set {name!r} is a toy set: it has no file")
    entry = sets[name]
    return sets[entry["derived_from"]] if "derived_from" in entry else entry


# --- files: cache, hashes, download ---------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$ERASURE_BOOK_CACHE/prompts`` if the variable is set, else ``~/.cache/erasure-book/prompts``."""
    root = os.environ.get("ERASURE_BOOK_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "erasure-book") / "prompts"


def _cache(cache_dir: StrPath | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()




def _require_verified(entry: dict[str, Any], allow_unverified: bool) -> None:
    if entry.get("sha256") is None and not allow_unverified:
        raise PromptFileError(f"{entry['file']} has no verified sha256 in {MANIFEST_PATH.name}; pass "
                              "allow_unverified=True to use it anyway")


def _verify(path: Path, entry: dict[str, Any], allow_unverified: bool, what: str) -> None:
    """Check ``path`` against the manifest's sha256 (``what`` says where the file came from)."""
    expected = entry.get("sha256")
    actual = _sha256(path)
    if expected is None:
        _require_verified(entry, allow_unverified)
        warnings.warn(f"using the unverified prompt file {path} (sha256 {actual})", stacklevel=3)
    elif actual != expected:
        raise PromptChecksumError(f"prompt file {path} ({what}) does not match {MANIFEST_PATH.name}: "
                                  f"expected sha256 {expected}, got {actual}")


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Write the bytes at ``url`` to ``dest`` (plain ``urllib``; tests replace this function)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f)


def _manual_hint(entry: dict[str, Any], dest: Path, name: str) -> str:
    return (f"To place it by hand, download {entry['url']} and save it as {dest}, or pass "
            f"load_prompts({name!r}, path=...) or install_prompt_file({name!r}, path) "
            "(the sha256 is checked either way).")


def _fetch(name: str, entry: dict[str, Any], dest: Path, allow_unverified: bool) -> None:
    """Download ``entry`` into ``dest`` atomically, trying its URL then its mirrors."""
    failures: list[str] = []
    mismatch: PromptChecksumError | None = None
    for url in [entry["url"], *entry.get("mirrors", [])]:
        try:
            log.info("downloading prompt set %s from %s", name, url)
            with atomic_path(dest) as tmp:  # only a verified download replaces dest
                _download(url, tmp)
                _verify(tmp, entry, allow_unverified, f"downloaded from {url}")
        except PromptChecksumError as err:
            mismatch = err
            failures.append(f"{url}: sha256 mismatch")
        except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, DNS
            failures.append(f"{url}: {err}")
        else:
            return
    if mismatch is not None:
        raise mismatch
    raise PromptDownloadError(f"could not download prompt set {name!r} ({entry['file']}; no network?); tried "
                              + "; ".join(failures) + ". " + _manual_hint(entry, dest, name))


def prompt_file(name: str, *, cache_dir: StrPath | None = None, download: bool = True,
                allow_unverified: bool = False) -> Path:
    """The checked local file of sd14 set ``name``, downloaded into the cache first if it is not there."""
    entry = _file_entry(name)
    _require_verified(entry, allow_unverified)
    path = _cache(cache_dir) / entry["file"]
    if not path.exists():
        if not download:
            raise PromptFileError(f"prompt file of {name!r} is not in the cache and download=False. "
                                  + _manual_hint(entry, path, name))
        _fetch(name, entry, path, allow_unverified)
    _verify(path, entry, allow_unverified, "cached; delete it to download it again")
    return path


def install_prompt_file(name: str, path: StrPath, *, cache_dir: StrPath | None = None,
                        allow_unverified: bool = False) -> Path:
    """Copy a local copy of set ``name``'s file into the cache after checking its sha256; return the cached path."""
    entry = _file_entry(name)
    source = Path(path)
    _verify(source, entry, allow_unverified, "given to install_prompt_file")
    dest = _cache(cache_dir) / entry["file"]
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


# --- the table ------------------------------------------------------------------------------------------

def check_prompt_table(df: pd.DataFrame) -> pd.DataFrame:
    """Raise ``ValueError`` unless ``df`` is a valid prompt table; return it unchanged."""
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"prompt table lacks column(s) {', '.join(missing)}; "
                         f"a prompt table needs {', '.join(TABLE_COLUMNS)}")
    bad = df["case_id"].isna()
    if bad.any():
        raise ValueError(f"{int(bad.sum())} row(s) have no case_id")
    bad = ~df["prompt"].map(lambda p: isinstance(p, str))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} prompt(s) are missing (NaN) or not strings, "
                         f"e.g. case_id {df.loc[bad, 'case_id'].head(5).tolist()}")
    dup = df["case_id"].duplicated()
    if dup.any():
        raise ValueError(f"case_id must be unique within a prompt set; duplicated: "
                         f"{df.loc[dup, 'case_id'].unique()[:5].tolist()}")
    if not pd.api.types.is_integer_dtype(df["seed"]):
        raise ValueError(f"seed must be an integer column, got dtype {df['seed'].dtype}")
    if not pd.api.types.is_numeric_dtype(df["guidance"]) or df["guidance"].isna().any():
        raise ValueError("guidance must be numeric with no missing values")
    if df["source"].isna().any():
        raise ValueError("source must name the set on every row")
    return df


def _read_csv(path: Path, entry: dict[str, Any]) -> pd.DataFrame:
    prompt_column = entry["prompt_column"]
    header = pd.read_csv(path, nrows=0).columns
    na_values = {c: list(_NA_STRINGS) for c in header if c != prompt_column}
    dtype = {prompt_column: str, **entry.get("dtypes", {})}
    return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=na_values)


def _column_values(raw: pd.DataFrame, column: str, what: str, name: str) -> np.ndarray:
    if column not in raw.columns:
        raise PromptFileError(f"prompt set {name!r}: the file has no {column!r} column for {what}")
    missing = int(raw[column].isna().sum())
    if missing:
        raise PromptFileError(f"prompt set {name!r}: {missing} row(s) have no {column}")
    return raw[column].to_numpy()


def _column_name(column: str) -> str:
    """A source column's name in the table: spaces become ``_``; a clash with a table column gets ``orig_``."""
    name = "_".join(str(column).split())
    return f"orig_{name}" if name in TABLE_COLUMNS else name


def _sd14_table(name: str, path: Path, base_seed: int, default_guidance: float | None) -> pd.DataFrame:
    entry, spec = _sd14_sets()[name], _file_entry(name)
    raw = _read_csv(path, spec)
    if "filter" in entry:
        column, needle = entry["filter"]["column"], entry["filter"]["contains"]
        raw = raw[raw[column].fillna("").str.contains(needle, regex=False)].reset_index(drop=True)
    n = len(raw)
    consumed: set[str] = set()

    seed_rule = spec["seed"] or {}
    if "column" in seed_rule:
        seed = _column_values(raw, seed_rule["column"], "seed", name)
        consumed.add(seed_rule["column"])
    elif "constant" in seed_rule:
        seed = np.full(n, seed_rule["constant"])
    else:
        seed = base_seed + np.arange(n)

    guidance_rule = spec["guidance"] or {}
    if "column" in guidance_rule:
        guidance = _column_values(raw, guidance_rule["column"], "guidance", name)
        consumed.add(guidance_rule["column"])
    elif default_guidance is not None:
        guidance = np.full(n, default_guidance)
    else:
        guidance = np.full(n, guidance_rule.get("constant", sd14_manifest()["default_guidance"]))

    if spec["case_id"] is not None:
        case_id = _column_values(raw, spec["case_id"], "case_id", name)
        consumed.add(spec["case_id"])
    else:
        case_id = np.arange(n)

    prompt_col = spec["prompt_column"]
    if prompt_col == "prompt":
        consumed.add(prompt_col)  # any other prompt column (adv_prompt, ...) is also kept under its own name
    core = pd.DataFrame({"prompt": raw[prompt_col], "seed": seed.astype(np.int64),
                         "guidance": guidance.astype(np.float64), "case_id": case_id, "source": name})
    extra = [c for c in raw.columns if c not in consumed and not str(c).startswith("Unnamed:")]
    table = pd.concat([core, raw[extra].rename(columns=_column_name)], axis=1)
    if entry.get("rows") is not None and len(table) != entry["rows"]:
        raise PromptFileError(f"prompt set {name!r}: {len(table)} rows, the manifest says {entry['rows']}")
    return table


def _toy_table(name: str, base_seed: int, default_guidance: float | None) -> pd.DataFrame:
    toy = captions.prompt_set(name)
    n = len(toy)
    return pd.DataFrame({
        "prompt": toy["prompt"].to_numpy(),
        "seed": (base_seed + np.arange(n)).astype(np.int64),
        "guidance": np.full(n, TOY_GUIDANCE if default_guidance is None else float(default_guidance)),
        "case_id": toy["case_id"].to_numpy(),
        "source": name,
        "target": toy["target"].to_numpy(),
        "family": toy["family"].to_numpy(),
    })


def load_prompts(name: str, profile: str | None = None, *, path: StrPath | None = None,
                 cache_dir: StrPath | None = None, download: bool = True, base_seed: int = 0,
                 default_guidance: float | None = None, allow_unverified: bool = False) -> pd.DataFrame:
    """Prompt set ``name`` as a checked prompt table (see the module docstring for the columns and sets).

    ``profile`` (``"toy"`` / ``"sd14"``), if given, must be the set's profile. ``path`` reads a local copy
    of the set's file instead of the cache (its sha256 is still checked). ``download=False`` never touches
    the network. ``base_seed`` gives the seeds of sets without per-row or protocol seeds (``base_seed + row
    index``); ``default_guidance`` replaces the profile's / protocol's CFG wherever the source has no
    per-row guidance. Files whose manifest entry has no sha256 are refused unless ``allow_unverified=True``.
    """
    set_profile = _profile_of(name)
    if profile is not None:
        if profile not in ("toy", "sd14"):
            raise ValueError(f"unknown profile {profile!r}; valid profiles: toy, sd14")
        if profile != set_profile:
            raise ValueError(f"prompt set {name!r} belongs to profile {set_profile!r}, not {profile!r}; sets of "
                             f"profile {profile!r}: {', '.join(prompt_set_names(profile))}")
    if set_profile == "toy":
        if path is not None:
            raise ValueError(f"toy prompt set {name!r} is generated in code: it takes no path")
        table = _toy_table(name, base_seed, default_guidance)
    else:
        if path is not None:
            file = Path(path)
            _verify(file, _file_entry(name), allow_unverified, "given as path=")
        else:
            file = prompt_file(name, cache_dir=cache_dir, download=download, allow_unverified=allow_unverified)
        table = _sd14_table(name, file, base_seed, default_guidance)
    return check_prompt_table(table)
