"""The JSON tables in dsn_lab/resources/: they load into the Python names callers use, and a broken edit fails
with the file, the entry and what was expected."""

from __future__ import annotations

import json
import re

import pytest

from dsn_lab.data import emoji_sources, emojisketch, registry, tables
from dsn_lab.data.tables import MapOf, ResourceError


def _edited(monkeypatch: pytest.MonkeyPatch, name: str, edit) -> None:
    """Serve ``dsn_lab/resources/<name>`` with ``edit(data)`` applied (the other files unchanged)."""
    real = tables.read_resource

    def fake(asked: str) -> bytes:
        if asked != name:
            return real(asked)
        data = json.loads(real(asked))
        edit(data)
        return json.dumps(data).encode()

    monkeypatch.setattr(tables, "read_resource", fake)


def _message(fn) -> str:
    with pytest.raises(ResourceError) as err:
        fn()
    return str(err.value)


def test_shipped_tables_load_into_the_old_names() -> None:
    assert len(registry.SPLIT_FILES) == 26 and set(registry.REPOS) == {"sake", "zse-sbir"}
    assert list(registry.SPECS) == ["sketchy-s1", "sketchy-s2", "tuberlin", "quickdraw"]
    s1 = registry.SPECS["sketchy-s1"]
    assert s1.lists[("zero", "photo")] in registry.SPLIT_FILES and len(s1.unseen) == 25 and s1.n_seen == 100
    assert s1.expected[("zero", "photo")] == 17101
    assert registry.DATASET_ARCHIVE["quickdraw"] == "zse-quickdraw"
    assert len(emoji_sources.ALL_PACKAGES) == 8 and emoji_sources.SKETCH_PACKAGE.key == "openmoji"
    assert len(emojisketch.SKETCHY_CLASSES) == 125
    assert emojisketch.NAME_MATCH_BLOCKLIST["streamline"] == {"turkey"}


@pytest.mark.parametrize(
    ("value", "schema", "message"),
    [
        ({"a": 1}, {"a": str}, "entry a: expected a string, got 1"),
        ({"a": True}, {"a": int}, "entry a: expected an integer, got true"),
        ({"a": [1, "x"]}, {"a": [int]}, 'entry a[1]: expected an integer, got "x"'),
        ({"a": {"k": None}}, {"a": MapOf(str)}, "entry a.k: expected a string, got null"),
        ({}, {"a": str}, "entry a: expected a string (the key is missing)"),
        ({"a": "x", "b": 1}, {"a": str}, "entry b: expected no such key (known: a)"),
        ({"a": 2}, {"a": (str, None)}, "entry a: expected a string or null, got 2"),
        ([], {"a": str}, "entry (top level): expected an object with keys a, got []"),
    ],
)
def test_schema_errors_name_the_entry_and_the_expectation(value, schema, message) -> None:
    with pytest.raises(ResourceError, match="^" + re.escape(f"x.json: {message}. Fix the file")):
        tables.check(value, schema, "x.json", "")


def test_optional_keys_and_numbers() -> None:
    tables.check({"a": 1}, {"a": float, "b?": str}, "x.json", "")  # an integer is a number; b may be absent
    with pytest.raises(ResourceError, match="entry b: expected a string"):
        tables.check({"a": 1.5, "b": 2}, {"a": float, "b?": str}, "x.json", "")


def test_invalid_json_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "read_resource", lambda name: b'{"about": [}')
    with pytest.raises(ResourceError, match=r"^dsn_lab/resources/datasets.json: not valid JSON"):
        tables.load_table("datasets.json", {"about": str})


def test_split_file_entry_with_a_bad_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    _edited(monkeypatch, "split_files.json", lambda d: d["files"][2].update(sha256="ABC"))
    with pytest.raises(ResourceError) as err:
        registry._load_split_files()
    msg = str(err.value)
    assert msg.startswith("dsn_lab/resources/split_files.json: entry files[2] (dataset/Sketchy/zeroshot1/")
    assert "sha256: expected 64 lower-case hex digits or null" in msg and "restore it from git" in msg


def test_dataset_spec_must_name_a_pinned_split_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def edit(d):
        d["datasets"]["tuberlin"]["lists"]["zero/photo"] = "sake/nowhere.txt"

    _edited(monkeypatch, "datasets.json", edit)
    assert _message(registry._load_datasets).startswith(
        "dsn_lab/resources/datasets.json: entry datasets.tuberlin.lists.zero/photo: expected a file of "
        'dsn_lab/resources/split_files.json, got "sake/nowhere.txt".'
    )


def test_dataset_spec_keys_are_split_and_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    _edited(
        monkeypatch, "datasets.json", lambda d: d["datasets"]["quickdraw"]["expected"].update({"zero/x": 3})
    )
    msg = _message(registry._load_datasets)
    assert "entry datasets.quickdraw.expected: expected a key '<split>/<domain>'" in msg and '"zero/x"' in msg


def test_emoji_recipe_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as mp:
        _edited(mp, "emojisketch.json", lambda d: d["photo_packages"][1].update(kind="svg"))
        msg = _message(emoji_sources._load_packages)
        assert msg.startswith(
            "dsn_lab/resources/emojisketch.json: entry photo_packages[1].kind: expected one of"
        )
    with monkeypatch.context() as mp:
        _edited(mp, "emojisketch.json", lambda d: d["near_duplicates"].update(kite=["bird"]))
        msg = _message(emojisketch._load_tables)
        assert "entry near_duplicates.kite: expected a class of sketchy_to_emoji" in msg
    with monkeypatch.context() as mp:
        _edited(mp, "emojisketch.json", lambda d: d["sketch_package"].pop("integrity"))
        msg = _message(emoji_sources._load_packages)
        assert "entry sketch_package.integrity: expected a string (the key is missing)" in msg
