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

WordNet 3.0 is needed (ImageNet ids are WordNet 3.0 offsets). Offline it comes from Debian's
``wordnet-base`` + ``wordnet-sense-index`` files, copied with a generated ``lexnames`` file into an
``nltk_data`` folder: see :func:`ensure_wordnet`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ensure_wordnet", "wordnet", "class_synsets", "resolve_synsets", "cid_mask", "cid_mask_for",
    "imagenet_wnids", "SIMILARITY_THRESHOLD", "NUM_IMAGENET_CLASSES", "DATASETS",
]

SIMILARITY_THRESHOLD = 0.2  # SAKE's similarity_thrh: path similarity must be strictly above it
NUM_IMAGENET_CLASSES = 1000
DATASETS = ("sketchy", "tuberlin", "quickdraw")  # packaged tables; see _TABLE_ALIASES for the other names
_TABLE_ALIASES = {
    "sketchy": "sketchy", "sketchy-s1": "sketchy", "sketchy-s2": "sketchy", "sketchy1": "sketchy",
    "sketchy2": "sketchy", "tuberlin": "tuberlin", "tu-berlin": "tuberlin", "quickdraw": "quickdraw",
    # EmojiSketch's unseen classes carry Sketchy names; its other concepts fall back to the name look-up.
    "emojisketch": "sketchy",
}
_DEBIAN_WORDNET = Path("/usr/share/wordnet")
# The files nltk's WordNetCorpusReader opens (index.sense for lemma keys, cntlist.rev for lemma counts).
_POS_NAMES = ("noun", "verb", "adj", "adv")
_WORDNET_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in _POS_NAMES) + tuple(
    f"{pos}.exc" for pos in _POS_NAMES
) + ("index.sense", "cntlist.rev")
_WORDNET_REQUIRED = ("data.noun", "index.noun", "data.verb", "index.verb", "data.adj", "index.adj",
                     "data.adv", "index.adv")
# lexnames(5WN): file number, name and syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb). Debian does
# not ship the database file itself, only the man page; nltk's reader needs it.
_LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1),
    ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1),
    ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1), ("noun.state", 1),
    ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2),
    ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2),
    ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
    ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)
# SAKE's hand-written exceptions for classes without WordNet ids in their photo names: name -> (lemma, index
# into wn.synsets(lemma)). Kept as the first step of the name look-up, so that any dataset gets them.
_NAME_OVERRIDES = {
    "present": ("present", 1), "teddy-bear": ("teddy", 0), "flying saucer": ("ufo", 0),
    "potted plant": ("pot_plant", 0), "santa claus": ("santa_claus", 0), "person walking": ("person", 0),
    "person sitting": ("person", 0), "fire hydrant": ("fire_hydrant", 0), "outlet": ("wall_socket", 0),
    "flower with stem": ("flower", 0), "human-skeleton": ("skeleton", 2),
}
# ImageNet index SAKE's synset list gets wrong (see the module docstring).
_SAKE_IMAGENET_QUIRKS = {134: "n03126707"}
_INSTALL_HINT = (
    "Install WordNet 3.0 with `apt-get install wordnet-base wordnet-sense-index` (Debian/Ubuntu; files in "
    "/usr/share/wordnet) or `python -m nltk.downloader wordnet`."
)
_lock = threading.Lock()


# ------------------------------------------------------------------------------------------- WordNet set-up
def default_cache_dir() -> Path:
    """Where the package caches derived files: ``$DSN_LAB_CACHE`` or ``~/.cache/dsn_lab``."""
    env = os.environ.get("DSN_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dsn_lab"


def _has_wordnet_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _WORDNET_REQUIRED)


def _add_nltk_path(nltk_data: Path) -> None:
    """Put ``nltk_data`` first on nltk's search path, here and (through NLTK_DATA) in child processes."""
    import nltk

    entry = str(nltk_data)
    if entry not in nltk.data.path:
        nltk.data.path.insert(0, entry)
    current = os.environ.get("NLTK_DATA", "")
    if entry not in current.split(os.pathsep):
        os.environ["NLTK_DATA"] = entry + (os.pathsep + current if current else "")


def _write_lexnames(path: Path) -> None:
    lines = [f"{i:02d}\t{name}\t{category}\n" for i, (name, category) in enumerate(_LEXNAMES)]
    path.write_text("".join(lines), encoding="ascii")


def _copy_debian_wordnet(source: Path, target: Path) -> None:
    """Copy the WordNet database files into ``target`` (an nltk ``corpora/wordnet`` folder), atomically."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".wordnet.lock")):
        if (target / "lexnames").is_file() and _has_wordnet_files(target):
            return  # another process finished it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
        try:
            for name in _WORDNET_FILES:
                if (source / name).is_file():
                    shutil.copyfile(source / name, tmp / name)
            _write_lexnames(tmp / "lexnames")
            if target.exists():  # a half-made folder from an older version: replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def ensure_wordnet(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Make WordNet 3.0 readable by nltk, offline, and return its folder.

    Tried in order: a folder made earlier in ``<cache_dir>/nltk_data/corpora/wordnet``; a WordNet corpus
    nltk already finds (``python -m nltk.downloader wordnet``); Debian's database in ``$WNSEARCHDIR`` or
    ``/usr/share/wordnet``, copied into the cache folder with the ``lexnames`` file nltk needs (Debian ships
    it only as the lexnames(5WN) man page), because nltk reads corpora only from its data path. The folder is
    put on ``nltk.data.path`` and ``NLTK_DATA``. Raises RuntimeError, saying what to install, if none exists.
    """
    import nltk

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
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
    candidates = [Path(p) for p in (os.environ.get("WNSEARCHDIR"), str(_DEBIAN_WORDNET)) if p]
    for source in candidates:
        if _has_wordnet_files(source):
            _copy_debian_wordnet(source, target)
            _add_nltk_path(nltk_data)
            return target
    looked = ", ".join(str(p) for p in candidates)
    raise RuntimeError(
        f"WordNet not found: nltk has no 'corpora/wordnet' on its path ({nltk.data.path}) and no WordNet "
        f"database files ({', '.join(_WORDNET_REQUIRED[:2])} ...) are in {looked}. {_INSTALL_HINT}"
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
    return reader


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
    tries = [raw, spaced.replace(" ", "_"), spaced.replace(" ", "_").replace("-", "_"),
             spaced.replace(" ", "").replace("-", ""), base.replace(" ", "_").replace("-", "_")]
    for lemma in tries:
        found = wn.synsets(lemma, pos="n") or wn.synsets(lemma)
        if found:
            return found[0]
    words = base.split()
    if len(words) > 1:  # head noun of a multi-word name: "standing bird" -> bird, "power outlet" -> outlet
        return lookup_synset(words[-1], wn)
    return None


def resolve_synsets(
    class_names: Sequence[str],
    synsets: Mapping[str, str | Sequence[str] | None] | None = None,
    *,
    wn: Any | None = None,
) -> list[tuple[Any, ...]]:
    """Synsets for each class: from ``synsets`` (class -> id / nltk name / list of them / None) when the class
    is there (matched by name, then by spelling-insensitive name), otherwise :func:`lookup_synset`."""
    wn = wn if wn is not None else wordnet()
    given = dict(synsets or {})
    by_norm = {_norm(k): v for k, v in given.items()}
    out: list[tuple[Any, ...]] = []
    missing: list[str] = []
    for name in class_names:
        if name in given or _norm(name) in by_norm:
            value = given[name] if name in given else by_norm[_norm(name)]
            ids = [] if value is None else [value] if isinstance(value, str) else list(value)
            out.append(tuple(_synset_from_id(wn, i) for i in ids))
            continue
        found = lookup_synset(name, wn)
        if found is None:
            missing.append(name)
        out.append(() if found is None else (found,))
    if missing:
        warnings.warn(f"No WordNet synset for {missing}: their cid_mask rows are zero.", stacklevel=2)
    return out


# --------------------------------------------------------------------------------------------------- ImageNet
def imagenet_wnids(imagenet: str = "sake") -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order, read from timm's ``imagenet_synsets.txt``.

    ``imagenet="sake"`` applies SAKE's one difference (index 134 read as the crane machine); ``"timm"``
    does not."""
    if imagenet not in ("sake", "timm"):
        raise ValueError(f"imagenet must be 'sake' or 'timm', not {imagenet!r}")
    try:
        text = resources.files("timm.data").joinpath("_info", "imagenet_synsets.txt").read_text()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise RuntimeError(
            f"Cannot read timm's ImageNet synset list (timm/data/_info/imagenet_synsets.txt): {err}. "
            "Install timm (`pip install timm`)."
        ) from err
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
    """
    with _lock:
        folder = str(ensure_wordnet(cache_dir))
        wn = _reader_for(folder)
        index = _imagenet_index(imagenet, folder)
    resolved = resolve_synsets(class_names, synsets, wn=wn)
    mask = np.zeros((len(class_names), NUM_IMAGENET_CLASSES), dtype=np.float32)
    for i, syns in enumerate(resolved):
        mask[i] = _row(syns, index)
    return mask


def cid_mask_for(
    dataset_name: str,
    class_names: Sequence[str],
    *,
    faithful: bool = True,
    imagenet: str = "sake",
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """:func:`cid_mask` with the dataset's packaged synset table, cached on disk (``<cache>/semantics/``).

    ``faithful=True`` reproduces SAKE's released masks (classes SAKE left without a synset get zero rows);
    ``False`` gives those classes the name look-up. Unknown dataset names (or classes not in the table) use
    the name look-up. The cache file name hashes everything that decides the result.
    """
    try:
        table: dict[str, tuple[str, ...]] = class_synsets(dataset_name)
    except KeyError:
        table = {}
    if not faithful:
        table = {k: v for k, v in table.items() if v}
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = repr((sorted(table.items()), list(class_names), imagenet, SIMILARITY_THRESHOLD, 1))
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
    from dsn_lab._atomic import atomic_path

    with atomic_path(path, prefix=".cid_mask-", suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, mask)
    return mask
