"""Real faults for tests/test_faults.py: a server that cuts connections, a full disk, hostile pickles, kills.

Why a separate module: each helper produces a genuine failure (a TCP connection closed half-way, a write the
kernel refuses with ENOSPC, a pickle that runs code when unpickled, a SIGKILL), so the tests exercise the
package's real error paths instead of mocks of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# HTTP


class FaultyServer:
    """An HTTP server on 127.0.0.1 serving ``files`` (URL path -> bytes) with configurable faults.

    ``cut_after``: bytes of the body sent before the connection is closed, for the first ``cut_times``
    requests of a path (``None``: never cut; ``cut_times=-1``: every request). Range requests are honoured,
    so a client can resume. ``send_length=False`` omits Content-Length (the body then ends at close).
    ``log`` records ``(path, Range header)`` of every request.
    """

    def __init__(
        self,
        files: dict[str, bytes],
        *,
        cut_after: int | None = None,
        cut_times: int = 1,
        send_length: bool = True,
    ) -> None:
        self.files = dict(files)
        self.cut_after, self.cut_times, self.send_length = cut_after, cut_times, send_length
        self.cuts: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if server.send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                done = server.cuts.get(self.path, 0)
                cut = server.cut_after is not None and (server.cut_times < 0 or done < server.cut_times)
                if cut:
                    server.cuts[self.path] = done + 1
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    # a hard close: the client sees the connection end before Content-Length bytes
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return
                self.wfile.write(body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------------
# full disk


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size_kib: int) -> Iterator[Path | None]:
    """Mount a ``size_kib`` KiB tmpfs at ``path`` (needs root and mount rights); yields None when impossible.

    A real filesystem that fills up: writes past its size fail in the kernel with ENOSPC.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or sys.platform != "linux":
        yield None
        return
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class SizeLimitedFile:
    """A binary file object that raises ``OSError(ENOSPC)`` once more than ``limit`` bytes were written.

    The fallback when no tmpfs can be mounted: the same OSError a full disk raises, at a known byte count;
    bytes up to the limit really reach the file.
    """

    def __init__(self, fh: Any, limit: int) -> None:
        self._fh, self._limit = fh, limit

    def write(self, data: bytes) -> int:
        room = self._limit - self._fh.tell()
        if len(data) > room:
            if room > 0:
                self._fh.write(data[:room])
                self._fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._fh.name)
        return self._fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> SizeLimitedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def size_limited_open(limit: int, under: Path):
    """An ``open`` replacement: binary writes to files under ``under`` go through :class:`SizeLimitedFile`."""
    import builtins

    real_open = builtins.open

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        if ("w" in mode or "a" in mode) and "b" in mode and str(file).startswith(str(under)):
            return SizeLimitedFile(fh, limit)
        return fh

    return fake_open


# ---------------------------------------------------------------------------------------------------
# pickles


class CodeOnUnpickle:
    """Unpickling this object creates ``marker`` (``builtins.open(marker, "w")``): a stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        import builtins

        return (builtins.open, (self.marker, "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A torch.save file shaped like a checkpoint whose unpickling (weights_only=False) creates ``marker``."""
    import torch

    torch.save({"model": {"w": torch.zeros(2)}, "config": {}, "payload": CodeOnUnpickle(marker)}, path)
    return path


def write_foreign_pickle(path: Path) -> Path:
    """A plain-tensor torch file from someone else's project: safe to load, but not a dsn_lab checkpoint."""
    import torch

    torch.save({"state_dict": {"conv.weight": torch.randn(4, 3, 3, 3)}, "epoch": 7, "arch": "vgg16"}, path)
    return path


# ---------------------------------------------------------------------------------------------------
# a loss that diverges at a known batch


def nan_in_step(step: Any, term: str, at: int) -> Any:
    """A stand-in for ``dsn_lab.step.dsn_step`` whose ``at``-th call (counted from 1) returns loss term
    ``term`` as NaN, and a NaN total, as a diverging run would: patch it over ``dsn_lab.train.dsn_step``.

    The real step runs first, so the forward pass, the memory update and everything else the loop sees is
    genuine; only the value of one term is replaced.
    """
    calls = [0]

    def step_with_nan(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        calls[0] += 1
        if calls[0] != at or term not in out.terms:
            return out
        bad = out.terms[term] * float("nan")
        return out._replace(total=out.total + bad, terms={**out.terms, term: bad})

    return step_with_nan


def nan_on_call(fn: Any, at: int) -> Any:
    """``fn`` (a loss module's ``forward``, say) whose ``at``-th call (counted from 1) returns its value
    times NaN: the NaN then comes from inside the real step, which has to find and name the term."""
    calls = [0]

    def with_nan(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        calls[0] += 1
        return out * float("nan") if calls[0] == at else out

    return with_nan


# ---------------------------------------------------------------------------------------------------
# processes


def python_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python: the repository importable, one thread, no GPU, quiet tqdm."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        TQDM_DISABLE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def kill_when(proc: subprocess.Popen, condition: Any, *, timeout: float = 120.0, poll: float = 0.02) -> bool:
    """SIGKILL ``proc`` as soon as ``condition()`` is true; False if it exited (or timed out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    proc.kill()
    proc.wait()
    return False
