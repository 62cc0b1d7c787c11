"""Tests for dsn_lab/_atomic.py: atomic writes keep the old file on failure and get normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dsn_lab._atomic import atomic_path, atomic_write_bytes, atomic_write_text


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_write_replaces_with_the_permissions_of_open(tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    target = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert _mode(target) == _mode(plain)  # not mkstemp's 0o600
    atomic_write_bytes(target, b"again", fsync=False)
    assert target.read_bytes() == b"again"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]  # no temporary left


def test_failure_keeps_previous_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.parent == target.parent and tmp.name.startswith(".keep.txt.tmp-")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_prefix_and_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "f.npz", prefix=".f-", suffix=".npz") as tmp:
        assert tmp.name.startswith(".f-") and tmp.name.endswith(".npz")
        tmp.write_bytes(b"1")
    assert (tmp_path / "f.npz").read_bytes() == b"1"


def test_write_text_is_utf8_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run" / "history.json"
    assert atomic_write_text(target, '{"loss": "\u00e9"}') == target
    assert target.read_bytes() == '{"loss": "\u00e9"}'.encode()
    assert os.listdir(target.parent) == ["history.json"]
