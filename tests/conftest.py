"""Session-wide test settings: one share of the CPU per pytest-xdist worker.

``make test`` runs two workers on a two-core machine. Each torch process (a worker, and every subprocess or
notebook kernel it starts) would otherwise use all cores, and two such processes on two cores stall in
OpenMP barriers: a full run took 23 min 41 s and 43 CPU-minutes, against 14 min 55 s and 25 CPU-minutes
with one thread per worker. The share is exported through OMP_NUM_THREADS / MKL_NUM_THREADS so child
processes inherit it; a value the user set is kept.

Every test has a time limit (pytest-timeout, ``[tool.pytest.ini_options]`` in pyproject.toml: 300 s by
default, larger marks on the demo and notebook runs), so a hang fails instead of stalling the run. Method
"thread" ends the process, which works even when the test is stuck in C code; its own stack dump is written
to the terminal writer, which an xdist worker discards, so :func:`pytest_timeout_set_timer` below writes
the stacks of every thread to stderr, where ``make test`` and CI show them, before ending the worker.

It also holds :func:`isolated_cache`, the one isolation fixture: the modules that download, cache or
build datasets opt into it with ``pytestmark = pytest.mark.usefixtures("isolated_cache")``. It is not
autouse: other tests (the notebooks, the EmojiSketch builds, the demo) use the real data and weights
caches, which an empty temporary cache would make them download again.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

import pytest


def _threads_per_worker() -> int | None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return None  # a single process may use every core
    return max(1, (os.cpu_count() or 1) // workers)


def pytest_configure(config) -> None:
    threads = _threads_per_worker()
    if threads is None:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic EmojiSketch (3 images per class, 32 px) for the training-loop tests of a module."""
    from dsn_lab.data.fixtures import make_synthetic_emojisketch

    return make_synthetic_emojisketch(tmp_path_factory.mktemp("data") / "synth", per_class=3, size=32)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> None:
    """No test touches the user's cache, data folder or the network: DSN_LAB_CACHE and DSN_LAB_DATA in
    tmp_path, split downloads to a dead local port (a test serving files sets its own mirror), no
    $DSN_LAB_SPLITS, and no retry back-off (a refused connection fails at once)."""
    monkeypatch.setenv("DSN_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DSN_LAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DSN_LAB_SPLITS_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.delenv("DSN_LAB_SPLITS", raising=False)
    monkeypatch.setattr("dsn_lab.data.fetch.RETRY_BACKOFF", 0.0)


_TIMER = pytest.StashKey[threading.Timer]()


def _dump_stacks_and_exit(item: pytest.Item, limit: float) -> None:
    """The timer's action: name the test, print every other thread's stack and the captured output's
    tail to the real stderr, then end the process (xdist reports the test as failed and starts a new
    worker)."""
    capman = item.config.pluginmanager.getplugin("capturemanager")
    out = err = ""
    try:
        if capman is not None:
            capman.suspend_global_capture(in_=True)  # fd 2 is the real stderr again
            out, err = capman.read_global_capture()
    finally:
        names = {t.ident: t.name for t in threading.enumerate()}
        parts = [f"\n{'+' * 24} Timeout: {item.nodeid} ran over {limit:g} s {'+' * 24}\n"]
        for ident, frame in sys._current_frames().items():
            if ident != threading.get_ident():
                parts.append(
                    f"~~~ thread {names.get(ident, ident)} ~~~\n" + "".join(traceback.format_stack(frame))
                )
        for name, text in (("stdout", out), ("stderr", err)):
            if text:
                parts.append(f"~~~ captured {name} (last 4000 characters) ~~~\n{text[-4000:]}\n")
        parts.append(f"{'+' * 24} Timeout: {item.nodeid} {'+' * 24}\n")
        sys.stderr.write("".join(parts))
        sys.stderr.flush()
        os._exit(1)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings) -> bool | None:
    """pytest-timeout's "thread" method with the stack dump sent to stderr (see the module docstring);
    the "signal" method is left to the plugin."""
    if settings.method != "thread":
        return None
    timer = threading.Timer(settings.timeout, _dump_stacks_and_exit, (item, settings.timeout))
    timer.name, timer.daemon = f"timeout of {item.nodeid}", True
    item.stash[_TIMER] = timer
    timer.start()
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    timer = item.stash.get(_TIMER, None)
    if timer is None:
        return None  # not ours (or never set: a skip raised in setup)
    del item.stash[_TIMER]
    timer.cancel()
    timer.join()
    return True
