"""dsn_lab.provenance: the environment record of a run (git state, packages, devices) and its text form."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dsn_lab import provenance as P

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "checkout"
    (r / "pkg").mkdir(parents=True)
    (r / "pkg" / "a.py").write_text("x = 1\n")
    _git(r, "init", "-q")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "first")
    return r


@needs_git
def test_git_state_commit_and_dirty_flag(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert P.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "new_untracked.txt").write_text("not part of the code\n")
    assert P.git_state(repo)["dirty"] is False  # untracked files do not make it dirty
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert P.git_state(repo) == {"commit": head, "dirty": True}
    _git(repo, "commit", "-q", "-am", "second")
    state = P.git_state(repo)
    assert state["dirty"] is False and state["commit"] == _git(repo, "rev-parse", "HEAD") != head


@needs_git
def test_git_state_ignores_a_folder_inside_someone_elses_checkout(repo: Path, tmp_path: Path) -> None:
    # e.g. site-packages of a venv that sits inside a repository: that repository's commit is not ours
    assert P.git_state(repo / "pkg") == {"commit": None, "dirty": None}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert P.git_state(plain) == {"commit": None, "dirty": None}


def test_missing_or_failing_git_gives_none(repo: Path, monkeypatch) -> None:
    monkeypatch.setattr(P.shutil, "which", lambda name: None)
    assert P.git_state(repo) == {"commit": None, "dirty": None}
    rec = P.environment_record(repo)
    assert rec["git_commit"] is None and rec["git_dirty"] is None
    assert "not a git checkout" in P.format_environment(rec)

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 5)

    monkeypatch.setattr(P.shutil, "which", lambda name: "/usr/bin/git")
    monkeypatch.setattr(P.subprocess, "run", hangs)
    assert P.git_state(repo) == {"commit": None, "dirty": None}


def test_record_round_trips_through_json() -> None:
    rec = P.environment_record()
    back = json.loads(json.dumps(rec))
    assert back == rec
    assert P.format_environment(back) == P.format_environment(rec)
    assert P.environment_differences(rec, back) == []
    import numpy
    import torch

    assert rec["packages"]["torch"] is not None and rec["packages"]["numpy"] == numpy.__version__
    assert rec["cuda"] == torch.version.cuda and rec["cuda_available"] == torch.cuda.is_available()
    assert rec["torch_threads"] == torch.get_num_threads()
    assert rec["format"] == P.RECORD_FORMAT and rec["recorded_at"].endswith("+00:00")


def _fake(**changes) -> dict:
    rec = {
        "dsn_lab": "0.1.0",
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "python": "3.11.7",
        "platform": "Linux-x86_64",
        "packages": {"torch": "2.4.0", "numpy": "2.0.0", "timm": None},
        "cuda": "12.1",
        "cudnn": 90100,
        "gpus": ["NVIDIA A100", "NVIDIA A100", "NVIDIA T4"],
        "torch_threads": 8,
        "cpu_count": 16,
        "cpus_usable": 12,
        "env": {"CUDA_VISIBLE_DEVICES": "0,1,2"},
    }
    rec.update(changes)
    return rec


def test_format_environment_names_what_matters() -> None:
    text = P.format_environment(_fake())
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0].startswith("environment: dsn_lab 0.1.0 (git 0123456789, clean)")
    assert "torch 2.4.0 (CUDA 12.1, cuDNN 9.1.0)" in text and "numpy 2.0.0" in text
    assert "not installed: timm" in text
    assert "2x NVIDIA A100, 1x NVIDIA T4" in text and "12 of 16 CPUs usable, 8 torch threads" in text
    assert "CUDA_VISIBLE_DEVICES=0,1,2" in text
    assert "uncommitted changes" in P.format_environment(_fake(git_dirty=True))
    cpu = P.format_environment(_fake(cuda=None, gpus=[]))
    assert "(CPU build)" in cpu and "no GPU" in cpu
    assert P._cudnn_text(8902) == "8.9.2"


def test_environment_differences_lists_changed_fields_only() -> None:
    a = _fake()
    b = _fake(packages={"torch": "2.5.0", "numpy": "2.0.0", "timm": "1.0"}, gpus=[], recorded_at="later")
    assert P.environment_differences(a, b) == [
        "timm: None -> 1.0",
        "torch: 2.4.0 -> 2.5.0",
        "gpus: ['NVIDIA A100', 'NVIDIA A100', 'NVIDIA T4'] -> []",
    ]
    assert P.environment_differences(a, _fake(torch_threads=2, recorded_at="x")) == []
