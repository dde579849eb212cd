"""Atomic writes: a finished block replaces the file, a failing one leaves it as it was, no temporary is left."""
import pytest

from erasure_lib._io import atomic_path, atomic_write_text


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    dest = tmp_path / "sub" / "table.csv"
    atomic_write_text(dest, "a\n1\n")
    assert dest.read_text() == "a\n1\n"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            assert tmp.parent == dest.parent and tmp != dest
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert dest.read_text() == "a\n1\n"
    with atomic_path(dest, suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz")
        tmp.write_text("a\n2\n")
    assert dest.read_text() == "a\n2\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["table.csv"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    """A result file must be readable by others like any new file (mkstemp alone makes it 0600)."""
    import os
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "t.csv", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "t.csv").stat().st_mode & 0o777 == 0o644
