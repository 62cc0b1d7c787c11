"""Tests for dsn_lab.semantics: WordNet set-up, SAKE's cid_mask rules, the class tables, the cache, and the
agreement with SAKE's released cid_mask.pickle files (exact for Sketchy split 1 and TU-Berlin)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from dsn_lab import semantics as S

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def wn_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("dsn_cache")
    try:
        S.ensure_wordnet(cache)
    except RuntimeError as err:
        pytest.skip(f"WordNet cannot be set up here: {err}")
    return cache


@pytest.fixture(scope="session")
def wn(wn_cache: Path):
    return S.wordnet(wn_cache)


def _sake_row_bruteforce(wn, synset_names: list[str], imagenet_wnids: list[str]) -> np.ndarray:
    """SAKE's rule written literally with nltk's own closure and path_similarity, in float64."""
    inet = [wn.synset_from_pos_and_offset("n", int(w[1:])) for w in imagenet_wnids]
    row = np.zeros(len(inet))
    for name in synset_names:
        ss = wn.synset(name)
        below = list(ss.closure(lambda s: s.hyponyms()))
        for k, iss in enumerate(inet):
            if ss == iss or iss in below or ss in list(iss.closure(lambda s: s.hyponyms())):
                row[k] = 1
            elif ss.path_similarity(iss) > 0.2:
                row[k] = ss.path_similarity(iss)
    return row


# ------------------------------------------------------------------------------------------------- set-up
def test_lexnames_file_lists_the_45_lexicographer_files(tmp_path: Path) -> None:
    S._write_lexnames(tmp_path / "lexnames")
    lines = (tmp_path / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    category = {"adj": "3", "adv": "4", "noun": "1", "verb": "2"}
    for i, line in enumerate(lines):
        number, name, cat = line.split("\t")
        assert number == f"{i:02d}"
        assert cat == category[name.split(".")[0]]
    assert lines[3].split("\t")[1] == "noun.Tops" and lines[44].split("\t")[1] == "adj.ppl"


@pytest.mark.skipif(not S._has_wordnet_files(S._DEBIAN_WORDNET), reason="Debian's wordnet-base not installed")
def test_ensure_wordnet_copies_debian_files_into_an_nltk_data_folder(tmp_path: Path, monkeypatch) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])  # nltk finds no corpus of its own: force the Debian copy
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    folder = S.ensure_wordnet(tmp_path)
    assert folder == tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (folder / "lexnames").is_file() and (folder / "data.noun").is_file()
    assert nltk.data.path[0] == str(tmp_path / "nltk_data")
    assert str(tmp_path / "nltk_data") in S.os.environ["NLTK_DATA"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".wordnet-")]  # no temp folder left
    wn = S.wordnet(tmp_path)
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").path_similarity(wn.synset("cat.n.01")) == pytest.approx(0.2)
    assert S.ensure_wordnet(tmp_path) == folder  # second call reuses the folder


def test_ensure_wordnet_without_any_wordnet_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setattr(S, "_DEBIAN_WORDNET", tmp_path / "no_wordnet_here")
    with pytest.raises(RuntimeError, match="apt-get install wordnet-base wordnet-sense-index") as err:
        S.ensure_wordnet(tmp_path / "cache")
    assert "nltk.downloader wordnet" in str(err.value)
    assert not (tmp_path / "cache" / "nltk_data" / "corpora" / "wordnet").exists()


def test_imagenet_wnids_follow_timm_except_sakes_crane() -> None:
    timm, sake = S.imagenet_wnids("timm"), S.imagenet_wnids("sake")
    assert len(timm) == len(sake) == 1000 and len(set(timm)) == 1000
    assert timm[0] == "n01440764" and timm[134] == "n02012849" and timm[517] == "n03126707"
    assert [i for i in range(1000) if timm[i] != sake[i]] == [134]
    assert sake[134] == "n03126707"
    with pytest.raises(ValueError, match="imagenet"):
        S.imagenet_wnids("imagenet21k")


# ---------------------------------------------------------------------------------------------- the rules
def test_cid_mask_matches_sakes_rule_written_with_nltk(wn, wn_cache: Path) -> None:
    # one leaf synset, a synset with many ImageNet hyponyms, and an ordered pair (later synset overwrites)
    cases = {"teddy": ["teddy.n.01"], "dog": ["dog.n.01"],
             "calc": ["calculator.n.02", "hand_calculator.n.01"]}
    for imagenet in ("sake", "timm"):
        mask = S.cid_mask(list(cases), synsets=cases, imagenet=imagenet, cache_dir=wn_cache)
        for i, names in enumerate(cases.values()):
            ref = _sake_row_bruteforce(wn, names, S.imagenet_wnids(imagenet))
            np.testing.assert_array_equal(mask[i], ref.astype(np.float32))


def test_cid_mask_hand_computed_entries(wn_cache: Path) -> None:
    mask = S.cid_mask(["tench", "dog"], synsets={"tench": "n01440764", "dog": "dog.n.01"}, cache_dir=wn_cache)
    assert mask.shape == (2, 1000) and mask.dtype == np.float32
    assert mask[0, 0] == 1.0  # the synset itself (ImageNet 0 is the tench)
    assert mask[0, 1] == np.float32(1 / 3)  # goldfish: tench -> cyprinid <- goldfish, two hops
    assert mask[1, 151] == 1.0 and mask[1, 268] == 1.0  # Chihuahua and Mexican hairless are dogs
    assert mask[1, 0] == 0.0  # a fish is far from a dog
    assert set(np.unique(mask)) <= {0.0, np.float32(0.25), np.float32(1 / 3), 1.0}


def test_later_synset_overwrites_where_its_rule_fires(wn_cache: Path) -> None:
    a, b = "calculator.n.02", "hand_calculator.n.01"
    rows = S.cid_mask(["a", "b", "ab", "ba"], synsets={"a": a, "b": b, "ab": [a, b], "ba": [b, a]},
                      cache_dir=wn_cache)
    np.testing.assert_array_equal(rows[2], np.where(rows[1] > 0, rows[1], rows[0]))
    np.testing.assert_array_equal(rows[3], np.where(rows[0] > 0, rows[0], rows[1]))
    assert not np.array_equal(rows[2], rows[3])


def test_degenerate_inputs(wn_cache: Path) -> None:
    assert S.cid_mask([], cache_dir=wn_cache).shape == (0, 1000)
    with pytest.warns(UserWarning, match="No WordNet synset"):
        mask = S.cid_mask(["qwzx blorp"], cache_dir=wn_cache)
    assert mask.shape == (1, 1000) and not mask.any()
    none_given = S.cid_mask(["dog"], synsets={"dog": None}, cache_dir=wn_cache)
    assert not none_given.any()


def test_name_lookup_fallback(wn) -> None:
    expect = {
        "dog": "dog.n.01", "alarm clock": "alarm_clock.n.01", "alarm_clock": "alarm_clock.n.01",
        "hot-air_balloon": "hot-air_balloon.n.01", "teddy-bear": "teddy.n.01", "present": "present.n.02",
        "human-skeleton": "skeletal_system.n.01", "power outlet": "wall_socket.n.01",
        "Ice Cream": "ice_cream.n.01",
        "wine-bottle": "wine_bottle.n.01", "pickup truck": "pickup.n.01", "standing bird": "bird.n.01",
    }
    got = {name: S.lookup_synset(name, wn) for name in expect}
    assert {k: v.name() for k, v in got.items()} == expect
    assert S.lookup_synset("qwzx blorp", wn) is None


def test_cid_mask_by_name_equals_cid_mask_by_synset(wn_cache: Path) -> None:
    by_name = S.cid_mask(["alarm clock", "teddy-bear"], cache_dir=wn_cache)
    by_id = S.cid_mask(["x", "y"], synsets={"x": "alarm_clock.n.01", "y": "teddy.n.01"}, cache_dir=wn_cache)
    np.testing.assert_array_equal(by_name, by_id)


# --------------------------------------------------------------------------------------------- the tables
def test_class_tables(wn) -> None:
    sizes = {"sketchy": 125, "sketchy-s1": 125, "sketchy-s2": 125, "tuberlin": 250, "quickdraw": 110}
    for name, size in sizes.items():
        assert len(S.class_synsets(name)) == size, name
    assert S.class_synsets("sketchy-s1") == S.class_synsets("sketchy-s2") == S.class_synsets("emojisketch")
    with pytest.raises(KeyError, match="No WordNet table"):
        S.class_synsets("imagenet")
    for table in S.DATASETS:
        text = (Path(S.__file__).parent / "resources" / f"wordnet_{table}.tsv").read_text()
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            cls, ids, names = line.split("\t")[:3]
            if ids == "-":
                assert names == "-"
                continue
            syns = [S._synset_from_id(wn, i) for i in ids.split(",")]
            assert [s.name() for s in syns] == names.split(","), (table, cls)
            assert all(s.pos() == "n" for s in syns)
    empty = sorted(k for k, v in S.class_synsets("tuberlin").items() if not v)
    assert empty == ["car (sedan)", "door handle", "palm tree", "pipe (for smoking)", "power outlet",
                     "sponge bob"]


def test_unfaithful_mode_fills_classes_sake_left_empty(wn_cache: Path) -> None:
    names = ["car (sedan)", "pig"]
    faithful = S.cid_mask_for("tuberlin", names, cache_dir=wn_cache)
    filled = S.cid_mask_for("tuberlin", names, faithful=False, cache_dir=wn_cache)
    assert not faithful[0].any() and filled[0].any()  # car.n.01 is close to many ImageNet vehicles
    np.testing.assert_array_equal(faithful[1], filled[1])


# ---------------------------------------------------------------------------------------------- the cache
def test_cid_mask_for_caches_atomically(tmp_path: Path, wn_cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(S, "default_cache_dir", lambda: wn_cache)  # WordNet from the session folder
    names = ["pig", "cup", "my new class"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = S.cid_mask_for("sketchy", names, cache_dir=tmp_path)
    files = list((tmp_path / "semantics").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and not files[0].name.startswith(".")
    assert first.shape == (3, 1000) and first.dtype == np.float32

    def boom(*args, **kwargs):
        raise AssertionError("cid_mask recomputed despite the cache")

    monkeypatch.setattr(S, "cid_mask", boom)
    np.testing.assert_array_equal(S.cid_mask_for("sketchy", names, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError, match="recomputed"):  # other names: another cache entry
        S.cid_mask_for("sketchy", names[:2], cache_dir=tmp_path)
    monkeypatch.undo()
    files[0].write_bytes(b"not a numpy file")  # a corrupt cache file is recomputed and replaced
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = S.cid_mask_for("sketchy", names, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(np.load(files[0]), first)


# ------------------------------------------------------------------------- agreement with SAKE's release
def _reference_masks(sub: str) -> tuple[list[str], np.ndarray]:
    folder = REFERENCE / "sake" / "dataset" / sub
    if not (folder / "cid_mask.pickle").is_file():
        pytest.skip(f"reference files not found at {folder} (only the dsn-lab workspace has them)")
    cid = {}
    for line in (folder / "cname_cid.txt").read_text().splitlines():
        if line.strip():
            name, index = line.rsplit(" ", 1)
            cid[name] = int(index)
    with open(folder / "cid_mask.pickle", "rb") as fh:  # trusted reference file, read only in this test
        released = pickle.load(fh)  # a dict class id -> 1000-vector (float64), for the seen classes
    names = sorted(cid, key=cid.get)
    return names, np.stack([np.asarray(released[cid[n]], dtype=np.float64) for n in names])


@pytest.mark.parametrize(
    ("sub", "dataset"), [("Sketchy/zeroshot1", "sketchy-s1"), ("TUBerlin/zeroshot", "tuberlin")]
)
def test_agreement_with_sakes_released_cid_mask(sub: str, dataset: str, wn_cache: Path, tmp_path: Path):
    names, released = _reference_masks(sub)
    ours = S.cid_mask(names, synsets=S.class_synsets(dataset), cache_dir=wn_cache)
    diff = np.abs(ours.astype(np.float64) - released.astype(np.float32).astype(np.float64))
    exact_rows = int((diff.max(axis=1) == 0).sum())
    print(f"{sub}: {exact_rows}/{len(names)} classes exact, max abs diff {diff.max():.3g}")
    # Documented tolerance: none. Every entry equals the released value (as float32), with imagenet="sake".
    assert exact_rows == len(names) and diff.max() == 0.0
    np.testing.assert_array_equal(S.cid_mask_for(dataset, names, cache_dir=tmp_path), ours)


def test_true_imagenet_order_changes_only_the_crane_column(wn_cache: Path) -> None:
    names, released = _reference_masks("Sketchy/zeroshot1")
    ours = S.cid_mask(names, synsets=S.class_synsets("sketchy"), imagenet="timm", cache_dir=wn_cache)
    rows, cols = np.nonzero(ours != released.astype(np.float32))
    assert set(cols.tolist()) == {134}
    # wading_bird's photo ids include the crane bird itself, but a later id (flamingo) overwrites: 1/3
    assert [names[r] for r in rows] == ["wading_bird"] and ours[rows[0], 134] == np.float32(1 / 3)
    assert released[rows[0], 134] == 0.0
