"""The one cache home of the package: ``$DSN_LAB_CACHE`` or ``~/.cache/dsn_lab``.

Split files, downloaded archives, npm tarballs, built datasets (unless ``$DSN_LAB_DATA`` says otherwise) and
derived files (WordNet, cid_mask) all live under it. A leaf module: it imports nothing from the package, so
every layer (the data layer first) may call it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$DSN_LAB_CACHE`` or ``~/.cache/dsn_lab``, read at each call (tests and notebooks set it late)."""
    env = os.environ.get("DSN_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dsn_lab"


def data_home() -> Path:
    """Where datasets live: ``$DSN_LAB_DATA`` or the cache home."""
    env = os.environ.get("DSN_LAB_DATA")
    return Path(env).expanduser() if env else cache_home()
