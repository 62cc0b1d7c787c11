"""ZS-SBIR datasets: Sketchy-Ext (splits 1 and 2), TU-Berlin-Ext, QuickDraw-Ext, the offline EmojiSketch.

``get_dataset(name, root, split, domain)`` is the one entry point, ``fetch_dataset(name)`` the one way to put
a dataset on disk; the pinned tables live in :mod:`.registry` (read from ``dsn_lab/resources/``), downloads
and archives in :mod:`.fetch`, the EmojiSketch builder in :mod:`.emojisketch`, transforms and the paired
sketch/photo batching in :mod:`.transforms` and :mod:`.batching`.

Inside the package the modules import one way: tables -> registry -> fetch -> emoji_sources -> emojisketch;
datasets uses fetch and registry; this file sits on top. Nothing here imports from dsn_lab outside
``dsn_lab.data`` except the leaf ``dsn_lab._cache``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dsn_lab._cache import cache_home
from dsn_lab.data import emojisketch
from dsn_lab.data.datasets import (
    CHECKS,
    ON_ERROR,
    DatasetImageError,
    DatasetLayoutError,
    SketchPhotoDataset,
    SplitError,
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
    import_archive,
)
from dsn_lab.data.registry import (
    ARCHIVES,
    DATASET_ARCHIVE,
    DATASET_NAMES,
    DOMAINS,
    EMOJISKETCH_VERSIONS,
    LAYOUTS,
    SPECS,
    default_root,
    is_emojisketch,
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
    "is_emojisketch",
    "download",
    "emojisketch",
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

    name: "sketchy-s1" | "sketchy-s2" | "tuberlin" | "quickdraw" | "emojisketch" | "emojisketch-v2"; split:
    "train" | "test" | "zero" (+ "val" for EmojiSketch; + "val_multi" / "zero_multi" for v2, the multi-style
    queries); domain: "sketch" | "photo". ``root=None`` uses :func:`default_root`.
    Real datasets read the official list files (pinned; see :func:`ensure_split_file`; ``splits_dir`` or
    ``$DSN_LAB_SPLITS`` points at a local copy). ``check``: "exists" (default) confirms every listed file is
    present, "decode" also decodes each image, "none" trusts the lists. ``on_error="skip"`` drops missing or
    unreadable images and reports them (``ds.skipped`` and a warning) instead of raising.
    ``build``: EmojiSketch only; None builds it on first use when ``root`` is None.
    """
    if name not in DATASET_NAMES:
        raise KeyError(f"Unknown dataset {name!r}. Known: {', '.join(DATASET_NAMES)}.")
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}.")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
    root_path = Path(root).expanduser() if root is not None else default_root(name)
    if is_emojisketch(name):
        if (build if build is not None else root is None) and not (root_path / "splits").is_dir():
            root_path = Path(emojisketch.ensure_emojisketch(root_path, version=EMOJISKETCH_VERSIONS[name]))
        return load_emojisketch(
            root_path,
            split,
            domain,
            transform=transform,
            check=check,
            on_error=on_error,
            verbose=verbose,
            name=name,
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


def fetch_dataset(
    name: str,
    root: Path | str | None = None,
    *,
    splits_only: bool = False,
    keep_archive: bool = False,
    progress: bool = True,
    splits_dir: Path | str | None = None,
) -> Path:
    """Download (when a public location is known) and install ``name``, plus its official split files.

    EmojiSketch is built instead (:func:`~dsn_lab.data.emojisketch.ensure_emojisketch`). A benchmark's images
    come from its archive (:data:`~dsn_lab.data.registry.ARCHIVES`); when they are already at ``root`` only
    the split files are checked.
    """
    if is_emojisketch(name):
        return Path(emojisketch.ensure_emojisketch(root, version=EMOJISKETCH_VERSIONS[name]))
    if name not in SPECS:
        raise KeyError(f"Unknown dataset {name!r}. Known: {', '.join(sorted(SPECS) + ['emojisketch'])}.")
    spec = SPECS[name]
    root = Path(root).expanduser() if root is not None else default_root(name)
    for key in spec.split_keys():
        ensure_split_file(key, splits_dir=splits_dir, roots=[root], progress=progress)
    if splits_only:
        return root
    if spec.image_root_ok(root):
        print(f"[dsn_lab] {name}: images already present at {root}")
        return root
    src = ARCHIVES[DATASET_ARCHIVE[name]]
    if src.url is None:
        raise RuntimeError(f"No public download for {name}. {src.note}")
    archive = cache_home() / "archives" / src.filename
    print(f"[dsn_lab] {name}: downloading {src.url}\n  {src.note}")
    download(src.url, archive, sha256=src.sha256, size=src.size, progress=progress)
    import_archive(archive, name, root, progress=progress)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return root
