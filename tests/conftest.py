"""Session-wide test settings: one share of the CPU per pytest-xdist worker.

``make test`` runs two workers on a two-core machine. Each torch process (a worker, and every subprocess or
notebook kernel it starts) would otherwise use all cores, and two such processes on two cores stall in
OpenMP barriers: a full run took 23 min 41 s and 43 CPU-minutes, against 14 min 55 s and 25 CPU-minutes
with one thread per worker. The share is exported through OMP_NUM_THREADS / MKL_NUM_THREADS so child
processes inherit it; a value the user set is kept.
"""

from __future__ import annotations

import os


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
