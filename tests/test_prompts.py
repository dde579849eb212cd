"""Prompt-set loader: the real benchmark CSVs, per-row seeds and guidance, checksums, offline errors, toy sets.

The sd14 sets are read from the project's reference copies (``../shared/benchmarks/``, or
``$ERASURE_BOOK_BENCHMARKS``) placed in a temporary cache, so no test touches the network: the
downloader is replaced by one that fails the test if it is ever called, except where a test replaces it
on purpose.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import erasure_lib
from erasure_lib import prompts
from erasure_lib.prompts import (
    TABLE_COLUMNS, PromptChecksumError, PromptDownloadError, PromptFileError, check_prompt_table,
    install_prompt_file, load_prompts, prompt_set_names,
)
from erasure_lib.toyworld import captions

BENCHMARKS = Path(os.environ.get("ERASURE_BOOK_BENCHMARKS")
                  or Path(erasure_lib.__file__).resolve().parents[2] / "shared" / "benchmarks")
SETS = prompts.sd14_manifest()["sets"]
ROWS = {"i2p": 4703, "i2p_sexual": 931, "unlearndiff": 142, "p4d": 151, "ringabell": 79, "mma": 1000,
        "coco_3k": 3000, "big_artists": 100, "niche_artists": 100, "coco_10k": 10000}


def _file(name: str) -> str:
    entry = SETS[name]
    return SETS[entry["derived_from"]]["file"] if "derived_from" in entry else entry["file"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv_rows(file: str) -> list[dict[str, str]]:
    """The rows of a benchmark CSV read with the csv module (independent of the loader's pandas path)."""
    with open(BENCHMARKS / file, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def benchmarks() -> Path:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark reference copies not found at {BENCHMARKS} (set ERASURE_BOOK_BENCHMARKS)")
    return BENCHMARKS


@pytest.fixture(scope="module")
def cache(benchmarks, tmp_path_factory) -> Path:
    """A prompt cache pre-populated with every reference copy that exists (coco_10k.csv is not among them)."""
    root = tmp_path_factory.mktemp("prompt_cache")
    for entry in SETS.values():
        if "file" in entry and (benchmarks / entry["file"]).exists():
            shutil.copyfile(benchmarks / entry["file"], root / entry["file"])
    return root


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(url, dest, timeout=None):
        raise AssertionError(f"a test tried to download {url}")
    monkeypatch.setattr(prompts, "_download", refuse)
    monkeypatch.delenv("ERASURE_BOOK_CACHE", raising=False)


def _need(benchmarks: Path, name: str) -> None:
    if not (benchmarks / _file(name)).exists():
        pytest.skip(f"{_file(name)} is not among the reference copies in {benchmarks}")


# --- the manifest ----------------------------------------------------------------------------------------

def test_manifest_pins_urls_and_matches_the_reference_copies(benchmarks):
    assert set(ROWS) == set(prompt_set_names("sd14"))
    for name, entry in SETS.items():
        assert entry["rows"] == ROWS[name]
        if "derived_from" in entry:
            continue
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name
        for url in [entry["url"], *entry["mirrors"]]:  # raw GitHub URLs pinned to a 40-hex commit
            assert re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/", url), url
        copy = benchmarks / entry["file"]
        if copy.exists():
            assert _sha256(copy) == entry["sha256"], entry["file"]
            assert copy.stat().st_size == entry["bytes"]


# --- the real sets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ROWS))
def test_sd14_sets_load_with_their_row_counts(name, benchmarks, cache):
    _need(benchmarks, name)
    df = load_prompts(name, "sd14", cache_dir=cache, download=False)
    assert len(df) == ROWS[name]
    assert tuple(df.columns[:5]) == TABLE_COLUMNS
    assert df["seed"].dtype == np.int64 and df["guidance"].dtype == np.float64
    assert (df["source"] == name).all()
    assert df["case_id"].is_unique
    check_prompt_table(df)


def test_i2p_per_row_seed_guidance_and_extra_columns(benchmarks, cache):
    df = load_prompts("i2p", cache_dir=cache).set_index("case_id")
    first = df.loc[0]
    assert first["seed"] == 4261553411 and first["guidance"] == 13.0
    assert first["categories"] == "violence, self-harm"
    assert {"nudity_percentage", "inappropriate_percentage", "lexica_url"} <= set(df.columns)
    assert not {"evaluation_seed", "evaluation_guidance", "case_number", "Unnamed: 0"} & set(df.columns)
    rows = _csv_rows("I2P_prompts_4703.csv")
    for row in (rows[i] for i in (1, 777, 2260, 4702)):
        got = df.loc[int(row["case_number"])]
        assert got["prompt"] == row["prompt"]
        assert got["seed"] == int(row["evaluation_seed"])
        assert got["guidance"] == float(row["evaluation_guidance"])
        assert got["nudity_percentage"] == float(row["nudity_percentage"])
    # the whole columns, too
    assert df["seed"].tolist() == [int(r["evaluation_seed"]) for r in rows]
    assert df["guidance"].tolist() == [float(r["evaluation_guidance"]) for r in rows]
    # case 2260's prompt is empty in the file: an empty string, never NaN
    assert df.loc[2260, "prompt"] == ""


def test_i2p_sexual_is_the_sexual_category_subset(cache):
    full = load_prompts("i2p", cache_dir=cache)
    sexual = load_prompts("i2p_sexual", cache_dir=cache)
    assert len(sexual) == 931
    assert sexual["categories"].str.contains("sexual").all()
    expected = full[full["categories"].str.contains("sexual")]
    assert sexual["case_id"].tolist() == expected["case_id"].tolist()
    assert sexual["seed"].tolist() == expected["seed"].tolist()
    assert sexual.iloc[0][["case_id", "seed", "guidance"]].tolist() == [103, 1867756129, 7.0]


def test_unlearndiff_and_p4d_per_row_values(benchmarks, cache):
    ud = load_prompts("unlearndiff", cache_dir=cache)
    assert ud.iloc[-1][["case_id", "seed", "guidance"]].tolist() == [4519, 1851630848, 7.0]
    assert ud["seed"].tolist() == [int(r["evaluation_seed"]) for r in _csv_rows("nudity-unlearndiff.csv")]

    p4d = load_prompts("p4d", cache_dir=cache)
    rows = _csv_rows("nudity-p4d.csv")
    # case_number repeats in P4D, so case_id is the row index and case_number is kept
    assert p4d["case_id"].tolist() == list(range(151))
    assert not p4d["case_number"].is_unique
    assert p4d.iloc[0][["seed", "guidance", "case_number", "safe_model", "safe_level"]].tolist() == [
        206205177, 7.0, 1172, "sld", "MAX"]
    assert p4d["prompt"].tolist() == [r["prompt"] for r in rows]
    assert p4d["seed"].tolist() == [int(r["evaluation_seed"]) for r in rows]
    assert p4d["safe_model"].value_counts().to_dict() == {"esd": 120, "std": 23, "sld": 8}


def test_mma_uses_adv_prompt_seed_42_cfg_75_and_keeps_columns(cache):
    df = load_prompts("mma", cache_dir=cache)
    rows = _csv_rows("nudity-mma-diffusion.csv")
    assert df["prompt"].tolist() == [r["adv_prompt"] for r in rows]
    assert (df["seed"] == 42).all() and (df["guidance"] == 7.5).all()
    assert {"target_prompt", "adv_prompt", "sanitized_adv_prompt", "clean_prompt"} <= set(df.columns)
    assert df["clean_prompt"].iloc[0] == rows[0]["clean_prompt"]


def test_ringabell_sensitive_prompts_with_default_seeds(cache):
    df = load_prompts("ringabell", cache_dir=cache, base_seed=1000)
    rows = _csv_rows("nudity-ring-a-bell.csv")
    assert df["prompt"].tolist() == [r["sensitive prompt"] for r in rows]
    assert df["normal_prompt"].tolist() == [r["normal prompt"] for r in rows]
    assert df["seed"].tolist() == list(range(1000, 1079))  # unseeded in TRCE: base_seed + row index
    assert (df["guidance"] == 7.5).all()
    assert (load_prompts("ringabell", cache_dir=cache, default_guidance=3.0)["guidance"] == 3.0).all()


def test_coco_and_artist_sets(cache):
    coco = load_prompts("coco_3k", cache_dir=cache)
    first = coco.iloc[0]
    assert [first["case_id"], first["seed"], first["guidance"], first["coco_id"]] == [2308, 99949, 7.5, 78748]
    assert first["prompt"] == "A group of motorcycles on display for a crowd."
    assert (coco["orig_source"] == "coco-30k").all()  # the file's own `source` column, renamed
    assert (coco["source"] == "coco_3k").all()

    big = load_prompts("big_artists", cache_dir=cache)
    assert big.iloc[0][["case_id", "seed", "guidance", "artist"]].tolist() == [0, 3721, 7.5, "Pablo Picasso"]
    niche = load_prompts("niche_artists", cache_dir=cache)
    assert niche.iloc[-1][["case_id", "seed", "artist"]].tolist() == [99, 3590, "Ajin: Demi Human"]
    assert niche["artist"].nunique() == 5


# --- checksums, local copies, downloads ------------------------------------------------------------------

def _tampered_copy(benchmarks: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray((benchmarks / "nudity-p4d.csv").read_bytes())
    data[-2] ^= 1
    path = folder / "nudity-p4d.csv"
    path.write_bytes(bytes(data))
    return path


def test_checksum_fires_on_a_modified_cached_file(benchmarks, tmp_path):
    path = _tampered_copy(benchmarks, tmp_path / "cache")
    with pytest.raises(PromptChecksumError) as err:
        load_prompts("p4d", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(path) in message and SETS["p4d"]["sha256"] in message and _sha256(path) in message


def test_local_copy_via_path_and_install_is_checked(benchmarks, tmp_path):
    cache = tmp_path / "empty_cache"
    df = load_prompts("p4d", path=benchmarks / "nudity-p4d.csv", cache_dir=cache)
    assert len(df) == 151 and not cache.exists()
    bad = _tampered_copy(benchmarks, tmp_path / "elsewhere")
    with pytest.raises(PromptChecksumError, match="nudity-p4d.csv"):
        load_prompts("p4d", path=bad)
    with pytest.raises(PromptChecksumError):
        install_prompt_file("p4d", bad, cache_dir=cache)
    assert not (cache / "nudity-p4d.csv").exists()
    installed = install_prompt_file("p4d", benchmarks / "nudity-p4d.csv", cache_dir=cache)
    assert installed == cache / "nudity-p4d.csv"
    assert len(load_prompts("p4d", cache_dir=cache, download=False)) == 151


def test_offline_error_names_the_urls_and_the_manual_fix(monkeypatch, tmp_path):
    tried = []

    def offline(url, dest, timeout=None):
        tried.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(prompts, "_download", offline)
    with pytest.raises(RuntimeError) as err:
        load_prompts("i2p", cache_dir=tmp_path)
    assert isinstance(err.value, PromptDownloadError)
    entry = SETS["i2p"]
    assert tried == [entry["url"], *entry["mirrors"]]
    message = str(err.value)
    assert all(url in message for url in tried)
    assert str(tmp_path / entry["file"]) in message and "by hand" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_writes_the_cache_atomically_and_checks_the_hash(benchmarks, monkeypatch, tmp_path):
    def serve(url, dest, timeout=None):  # a fake server with the reference copy
        shutil.copyfile(benchmarks / "nudity-p4d.csv", dest)
    monkeypatch.setattr(prompts, "_download", serve)
    assert len(load_prompts("p4d", cache_dir=tmp_path)) == 151
    assert [p.name for p in tmp_path.iterdir()] == ["nudity-p4d.csv"]

    def serve_html(url, dest, timeout=None):  # e.g. a captive portal's page
        Path(dest).write_text("<html>login</html>")
    monkeypatch.setattr(prompts, "_download", serve_html)
    with pytest.raises(PromptChecksumError, match=SETS["mma"]["sha256"]):
        load_prompts("mma", cache_dir=tmp_path)
    assert not (tmp_path / "nudity-mma-diffusion.csv").exists()


def test_no_download_when_asked_and_env_cache(benchmarks, monkeypatch, tmp_path):
    with pytest.raises(PromptFileError, match="download=False"):
        load_prompts("p4d", cache_dir=tmp_path, download=False)
    monkeypatch.setenv("ERASURE_BOOK_CACHE", str(tmp_path / "book"))
    assert prompts.default_cache_dir() == tmp_path / "book" / "prompts"
    install_prompt_file("p4d", benchmarks / "nudity-p4d.csv")
    assert len(load_prompts("p4d", download=False)) == 151


def test_unverified_sets_need_explicit_consent(benchmarks, monkeypatch, tmp_path):
    manifest = prompts.sd14_manifest()
    manifest["sets"]["p4d"]["sha256"] = None
    monkeypatch.setattr(prompts, "sd14_manifest", lambda: manifest)
    shutil.copyfile(benchmarks / "nudity-p4d.csv", tmp_path / "nudity-p4d.csv")
    with pytest.raises(PromptFileError, match="allow_unverified"):
        load_prompts("p4d", cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="unverified"):
        assert len(load_prompts("p4d", cache_dir=tmp_path, allow_unverified=True)) == 151


# --- names and profiles ----------------------------------------------------------------------------------

def test_unknown_names_and_wrong_profiles_raise():
    with pytest.raises(ValueError, match=r"unknown prompt set 'i2p_nudity'.*sensitive_implicit.*i2p_sexual"):
        load_prompts("i2p_nudity")
    with pytest.raises(ValueError, match="belongs to profile 'sd14', not 'toy'"):
        load_prompts("i2p", profile="toy")
    with pytest.raises(ValueError, match="belongs to profile 'toy', not 'sd14'"):
        load_prompts("benign", profile="sd14")
    with pytest.raises(ValueError, match="unknown profile"):
        load_prompts("benign", profile="sdxl")
    with pytest.raises(ValueError, match="takes no path"):
        load_prompts("benign", path="x.csv")


@pytest.mark.parametrize("name", captions.PROMPT_SETS)
def test_toy_sets_load_without_any_file(name, tmp_path):
    df = load_prompts(name, "toy", cache_dir=tmp_path / "nothing_here", base_seed=7)
    toy = captions.prompt_set(name)
    assert df["prompt"].tolist() == toy["prompt"].tolist()
    assert df["case_id"].tolist() == toy["case_id"].tolist()
    assert df["seed"].tolist() == list(range(7, 7 + len(toy)))
    assert (df["guidance"] == 5.0).all() and (df["source"] == name).all()
    assert df["target"].tolist() == toy["target"].tolist()
    assert not (tmp_path / "nothing_here").exists()


# --- the table check -------------------------------------------------------------------------------------

def _table(**overrides) -> pd.DataFrame:
    data = {"prompt": ["a", "b"], "seed": [0, 1], "guidance": [7.5, 7.5], "case_id": [0, 1], "source": "x"}
    data.update(overrides)
    return pd.DataFrame(data)


def test_check_prompt_table_errors():
    assert check_prompt_table(_table()) is not None
    with pytest.raises(ValueError, match="lacks column.*seed"):
        check_prompt_table(_table().drop(columns="seed"))
    with pytest.raises(ValueError, match=r"1 prompt\(s\) are missing"):
        check_prompt_table(_table(prompt=["a", None]))
    with pytest.raises(ValueError, match=r"unique.*\[3\]"):
        check_prompt_table(_table(case_id=[3, 3]))
    with pytest.raises(ValueError, match="seed must be an integer"):
        check_prompt_table(_table(seed=[0.5, 1.0]))
