"""Tests for digitrec.fileio: atomic writes never leave half-written or temporary files."""

from __future__ import annotations

import os
import stat

import pytest

from digitrec.fileio import atomic_write


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as fh:
        fh.write(b"new content")
        assert target.read_bytes() == b"old"  # not visible until the block ends
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_atomic_write_failure_keeps_original_and_no_temp(tmp_path, error):
    target = tmp_path / "out.bin"
    target.write_bytes(b"original")
    with pytest.raises(type(error)), atomic_write(target) as fh:
        fh.write(b"half of the new")
        raise error
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_failure_creates_nothing(tmp_path):
    target = tmp_path / "sub" / "new.txt"
    with pytest.raises(ValueError), atomic_write(target, "w") as fh:
        fh.write("partial")
        raise ValueError("stop")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_gives_plain_open_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "atomic.txt", "w") as fh:
            fh.write("x")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644


def test_errors_name_the_target_not_the_temp_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info, atomic_write(blocker / "under-a-file.png") as fh:
        fh.write(b"never")
    assert info.value.filename == str(blocker / "under-a-file.png")


def test_check_writable(tmp_path):
    from digitrec.fileio import check_writable

    assert check_writable(tmp_path / "new" / "out.png") == tmp_path / "new" / "out.png"
    assert list((tmp_path / "new").iterdir()) == []  # probed, nothing left behind
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        check_writable(blocker / "x.png")
    assert info.value.filename == str(blocker / "x.png")
