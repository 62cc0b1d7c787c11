"""ZS-SBIR datasets: Sketchy-Ext (splits 1 and 2), TU-Berlin-Ext, QuickDraw-Ext, the offline EmojiSketch.

``get_dataset(name, root, split, domain)`` is the one entry point; fetchers, transforms and the paired
sketch/photo batching live in the submodules (:mod:`.fetch`, :mod:`.transforms`, :mod:`.batching`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dsn_lab.data.datasets import (
    DATASET_NAMES,
    DOMAINS,
    LAYOUTS,
    SPECS,
    DatasetImageError,
    DatasetLayoutError,
    SketchPhotoDataset,
    SplitError,
    default_root,
    load_emojisketch,
    load_real,
    read_class_file,
    read_list_file,
)
from dsn_lab.data.fetch import (
    ChecksumError,
    DownloadError,
    colab_import_from_drive,
    download,
    ensure_split_file,
    fetch_dataset,
    import_archive,
)

__all__ = [
    "DATASET_NAMES",
    "DOMAINS",
    "LAYOUTS",
    "SPECS",
    "ChecksumError",
    "DatasetImageError",
    "DatasetLayoutError",
    "DownloadError",
    "SketchPhotoDataset",
    "SplitError",
    "colab_import_from_drive",
    "default_root",
    "download",
    "ensure_split_file",
    "fetch_dataset",
    "get_dataset",
    "import_archive",
    "read_class_file",
    "read_list_file",
]


def get_dataset(
    name: str,
    root: Path | str | None = None,
    split: str = "zero",
    domain: str = "sketch",
    transform: Callable | None = None,
    *,
    splits_dir: Path | str | None = None,
    check: str = "exists",
    on_error: str = "raise",
    verbose: bool = True,
    build: bool | None = None,
) -> SketchPhotoDataset:
    """One split and domain of a dataset: ``ds[i] -> (image, label, domain)``, ``ds.samples``, ``ds.classes``.

    name: "sketchy-s1" | "sketchy-s2" | "tuberlin" | "quickdraw" | "emojisketch"; split: "train" | "test" |
    "zero" (+ "val" for EmojiSketch); domain: "sketch" | "photo". ``root=None`` uses :func:`default_root`.
    Real datasets read the official list files (pinned; see :func:`ensure_split_file`; ``splits_dir`` or
    ``$DSN_LAB_SPLITS`` points at a local copy). ``check``: "exists" (default) confirms every listed file is
    present, "decode" also decodes each image, "none" trusts the lists. ``on_error="skip"`` drops missing or
    unreadable images and reports them (``ds.skipped`` and a warning) instead of raising.
    ``build``: EmojiSketch only; None builds it on first use when ``root`` is None.
    """
    from dsn_lab.data.datasets import CHECKS, ON_ERROR

    if name not in DATASET_NAMES:
        raise KeyError(f"Unknown dataset {name!r}. Known: {', '.join(DATASET_NAMES)}.")
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}.")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
    root_path = Path(root).expanduser() if root is not None else default_root(name)
    if name == "emojisketch":
        if (build if build is not None else root is None) and not (root_path / "splits").is_dir():
            from dsn_lab.data.emojisketch import ensure_emojisketch

            root_path = Path(ensure_emojisketch(root_path))
        return load_emojisketch(
            root_path, split, domain, transform=transform, check=check, on_error=on_error, verbose=verbose
        )
    return load_real(
        name,
        root_path,
        split,
        domain,
        splits_dir=splits_dir,
        transform=transform,
        check=check,
        on_error=on_error,
        verbose=verbose,
    )
