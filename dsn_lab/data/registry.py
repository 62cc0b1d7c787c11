"""What the benchmarks are: pinned split files, image archives, dataset specs, folder layouts, default roots.

Why a module of its own: both the downloader (:mod:`.fetch`) and the loader (:mod:`.datasets`) need these
facts, and the EmojiSketch builder needs :func:`default_root`; kept here, below all three, the data layer
imports one way. The tables themselves are data: ``dsn_lab/resources/split_files.json`` (the official split
lists by upstream commit and hash) and ``dsn_lab/resources/datasets.json`` (which lists make each split, its
unseen classes, published sizes, archive), checked when this module is imported. The folder layouts stay
here: the loader's code depends on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dsn_lab._cache import data_home
from dsn_lab.data.tables import PROSE, MapOf, load_table, prose, resource_label, table_error

DOMAINS: dict[str, int] = {"sketch": 0, "photo": 1}

# ---------------------------------------------------------------------------------------------------
# split files

SPLIT_FILES_RESOURCE = "split_files.json"
_SHA256, _SHA1 = re.compile(r"^[0-9a-f]{64}$"), re.compile(r"^[0-9a-f]{40}$")
_SPLIT_FILES_SCHEMA = {
    "about": PROSE,
    "repos": MapOf({"repo": str, "commit": str}),
    "files": [{"source": str, "path": str, "sha256": (str, None), "size": (int, None), "git_blob": str}],
}


@dataclass(frozen=True)
class RemoteFile:
    """One file of an upstream repository at a pinned commit."""

    source: str  # key of REPOS
    path: str  # path inside the upstream repository
    sha256: str | None
    size: int | None
    git_blob: str  # the blob id recorded in the pinned commit's tree

    @property
    def key(self) -> str:
        """``<source>/<path>``: also the file's place in a local mirror of the split files."""
        return f"{self.source}/{self.path}"

    @property
    def url(self) -> str:
        repo, commit = REPOS[self.source]
        return f"https://raw.githubusercontent.com/{repo}/{commit}/{self.path}"


def _load_split_files() -> tuple[dict[str, tuple[str, str]], dict[str, RemoteFile]]:
    data = load_table(SPLIT_FILES_RESOURCE, _SPLIT_FILES_SCHEMA)
    label = resource_label(SPLIT_FILES_RESOURCE)
    repos = {k: (r["repo"], r["commit"]) for k, r in data["repos"].items()}
    for k, (_, commit) in repos.items():
        if not _SHA1.match(commit):
            raise table_error(label, f"repos.{k}.commit", "a full 40-hex-digit commit id", commit)
    files: dict[str, RemoteFile] = {}
    for i, f in enumerate(data["files"]):
        where = f"files[{i}] ({f['path']})"
        if f["source"] not in repos:
            raise table_error(label, f"{where}.source", f"one of the repos ({', '.join(repos)})", f["source"])
        if f["sha256"] is not None and not _SHA256.match(f["sha256"]):
            raise table_error(label, f"{where}.sha256", "64 lower-case hex digits or null", f["sha256"])
        if not _SHA1.match(f["git_blob"]):
            raise table_error(label, f"{where}.git_blob", "40 lower-case hex digits", f["git_blob"])
        rf = RemoteFile(f["source"], f["path"], f["sha256"], f["size"], f["git_blob"])
        if rf.key in files:
            raise table_error(label, where, "each file once", rf.key)
        files[rf.key] = rf
    return repos, files


REPOS: dict[str, tuple[str, str]]  # source -> (GitHub owner/name, pinned commit)
SPLIT_FILES: dict[str, RemoteFile]  # "<source>/<path>" -> the pinned file
REPOS, SPLIT_FILES = _load_split_files()

# ---------------------------------------------------------------------------------------------------
# layouts (folder trees)


@dataclass(frozen=True)
class Layout:
    """A dataset's folder tree: the folders that identify it and the domain folders holding class folders."""

    key: str
    markers: tuple[str, ...]
    domain_dirs: dict[str, tuple[str, ...]]
    tree: str


SKETCHY_TREE = """\
<root>/                          Sketchy-Ext, shared by sketchy-s1 and sketchy-s2
├── 256x256/
│   ├── sketch/tx_000000000000_ready/<class>/<photo id>-<n>.png     sketches (75,481 listed)
│   └── photo/tx_000000000000_ready/<class>/<photo id>.jpg          Sketchy photos (100 per class)
├── EXTEND_image_sketchy_ready/<class>/ext_<n>.jpg                  extended photos (73,002 listed)
└── zeroshot1/ (optional)        SAKE's list files, as its dataset.zip ships them"""

TUBERLIN_TREE = """\
<root>/                          TU-Berlin-Ext (class names contain spaces: "alarm clock")
├── png_ready/<class>/<n>.png                          sketches (80 per class, 250 classes)
├── ImageResized_ready/<class>/<wnid>_<n>.JPEG         extended photos (ImageNet)
└── zeroshot/ (optional)         SAKE's list files"""

QUICKDRAW_TREE = """\
<root>/                          QuickDraw-Ext as packed by ZSE-SBIR (110 classes)
├── sketches/<class>/<n>.png                           QuickDraw sketches
├── images/<class>/image_<n>.jpg                       photos
└── zeroshot/ (optional)         ZSE-SBIR's list files"""

EMOJISKETCH_TREE = """\
<root>/                          EmojiSketch (built by `python -m dsn_lab data fetch emojisketch`)
├── sketch/<class>/<file>.png                          line-art emoji (OpenMoji black)
├── photo/<class>/<file>.png                           colour renderings of the same concepts
├── splits/classes_<split>.txt                         one class name per line; label = line index
├── splits/<domain>_<split>.txt                        "relpath label", split in train | val | zero
├── ATTRIBUTION.md
└── manifest.json"""

LAYOUTS: dict[str, Layout] = {
    "sketchy": Layout(
        "sketchy",
        ("256x256",),
        {
            "sketch": ("256x256/sketch/tx_000000000000_ready",),
            "photo": ("256x256/photo/tx_000000000000_ready", "EXTEND_image_sketchy_ready"),
        },
        SKETCHY_TREE,
    ),
    "tuberlin": Layout(
        "tuberlin",
        ("png_ready",),
        {"sketch": ("png_ready",), "photo": ("ImageResized_ready",)},
        TUBERLIN_TREE,
    ),
    "quickdraw": Layout(
        "quickdraw", ("sketches", "images"), {"sketch": ("sketches",), "photo": ("images",)}, QUICKDRAW_TREE
    ),
    "emojisketch": Layout("emojisketch", (), {"sketch": ("sketch",), "photo": ("photo",)}, EMOJISKETCH_TREE),
    "emojisketch-v2": Layout(
        "emojisketch-v2", (), {"sketch": ("sketch",), "photo": ("photo",)}, EMOJISKETCH_TREE
    ),
}

# ---------------------------------------------------------------------------------------------------
# archives and dataset specs

DATASETS_RESOURCE = "datasets.json"
_DATASETS_SCHEMA = {
    "about": PROSE,
    "archives": MapOf(
        {
            "url": (str, None),
            "filename": str,
            "sha256": (str, None),
            "size": (int, None),
            "layouts": [str],
            "note": PROSE,
        }
    ),
    "datasets": MapOf(
        {
            "title": str,
            "layout": str,
            "archive": str,
            "lists": MapOf(str),
            "classes": MapOf(str),
            "unseen": [str],
            "n_seen": int,
            "expected": MapOf(int),
            "citation": str,
        }
    ),
}


@dataclass(frozen=True)
class ArchiveSource:
    """An image archive: where it is published, what it holds, and how to get it when we cannot."""

    key: str
    url: str | None
    filename: str
    sha256: str | None  # None: not pinned yet (we could not download it to hash it); printed after download
    size: int | None
    layouts: tuple[str, ...]  # dataset folders it contains ("sketchy", "tuberlin", "quickdraw")
    note: str


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark split: which official list files define it and what they should contain."""

    name: str
    title: str
    layout: str
    lists: dict[tuple[str, str], str]  # (split, domain) -> key in SPLIT_FILES
    classes: dict[str, str]  # split -> key of its cname_cid file
    unseen: tuple[str, ...]
    n_seen: int
    expected: dict[tuple[str, str], int] = field(default_factory=dict)  # published sizes
    citation: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for s, _ in self.lists))

    def split_keys(self) -> list[str]:
        return sorted(set(self.lists.values()) | set(self.classes.values()))

    def image_root_ok(self, root: Path) -> bool:
        lay = LAYOUTS[self.layout]
        return all((Path(root) / d).is_dir() for dirs in lay.domain_dirs.values() for d in dirs)


def _split_domain(label: str, where: str, key: str) -> tuple[str, str]:
    split, _, domain = key.partition("/")
    if not split or domain not in DOMAINS:
        raise table_error(label, where, f"a key '<split>/<domain>' with domain in {list(DOMAINS)}", key)
    return split, domain


def _load_datasets() -> tuple[dict[str, ArchiveSource], dict[str, str], dict[str, DatasetSpec]]:
    data = load_table(DATASETS_RESOURCE, _DATASETS_SCHEMA)
    label = resource_label(DATASETS_RESOURCE)
    archives = {}
    for key, a in data["archives"].items():
        for lay in a["layouts"]:
            if lay not in LAYOUTS:
                raise table_error(label, f"archives.{key}.layouts", f"layouts among {list(LAYOUTS)}", lay)
        archives[key] = ArchiveSource(
            key, a["url"], a["filename"], a["sha256"], a["size"], tuple(a["layouts"]), prose(a["note"])
        )
    specs: dict[str, DatasetSpec] = {}
    dataset_archive: dict[str, str] = {}
    for name, d in data["datasets"].items():
        where = f"datasets.{name}"
        if d["layout"] not in LAYOUTS:
            raise table_error(label, f"{where}.layout", f"one of {list(LAYOUTS)}", d["layout"])
        if d["archive"] not in archives:
            raise table_error(label, f"{where}.archive", f"one of {list(archives)}", d["archive"])
        refs = [(f"{where}.lists.{k}", v) for k, v in d["lists"].items()]
        refs += [(f"{where}.classes.{k}", v) for k, v in d["classes"].items()]
        for at, key in refs:
            if key not in SPLIT_FILES:
                raise table_error(label, at, f"a file of {resource_label(SPLIT_FILES_RESOURCE)}", key)
        lists = {_split_domain(label, f"{where}.lists", k): v for k, v in d["lists"].items()}
        expected = {_split_domain(label, f"{where}.expected", k): n for k, n in d["expected"].items()}
        for split in {s for s, _ in lists}:
            if split not in d["classes"]:
                raise table_error(label, f"{where}.classes.{split}", "the class file of each listed split")
        specs[name] = DatasetSpec(
            name,
            d["title"],
            d["layout"],
            lists,
            dict(d["classes"]),
            tuple(d["unseen"]),
            d["n_seen"],
            expected,
            d["citation"],
        )
        dataset_archive[name] = d["archive"]
    return archives, dataset_archive, specs


ARCHIVES: dict[str, ArchiveSource]  # archive key -> where to get it
DATASET_ARCHIVE: dict[str, str]  # dataset name -> archive key
SPECS: dict[str, DatasetSpec]  # dataset name -> its split definition
ARCHIVES, DATASET_ARCHIVE, SPECS = _load_datasets()

# The offline benchmark by version: v1 (one OpenMoji sketch per concept) and v2 (several per concept).
EMOJISKETCH_VERSIONS = {"emojisketch": 1, "emojisketch-v2": 2}
DATASET_NAMES = (*SPECS, *EMOJISKETCH_VERSIONS)


def is_emojisketch(name: str) -> bool:
    """``name`` is a version of EmojiSketch (built from npm packages, not fetched)."""
    return name in EMOJISKETCH_VERSIONS


def layout_of(name: str) -> str:
    if name in SPECS:
        return SPECS[name].layout
    if name in LAYOUTS:  # a layout key ("sketchy") names the same folder
        return name
    raise KeyError(f"Unknown dataset {name!r}. Known: {', '.join(DATASET_NAMES)}.")


def default_root(name: str) -> Path:
    """``$DSN_LAB_DATA/<folder>`` or ``~/.cache/dsn_lab/<folder>``.

    The folder is the dataset's image folder: ``sketchy`` for both Sketchy splits (they share the images),
    else the dataset name.
    """
    return data_home() / layout_of(name)
