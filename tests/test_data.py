"""Datasets: official split enumeration (against ../shared/reference), EmojiSketch layout, bad input, CLI."""

from __future__ import annotations

import io
import os
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

from dsn_lab.cli import main as cli_main
from dsn_lab.data import (
    SPECS,
    DatasetImageError,
    DatasetLayoutError,
    SplitError,
    default_root,
    get_dataset,
)
from dsn_lab.data.datasets import LAYOUTS
from dsn_lab.data.fetch import ChecksumError, DownloadError
from dsn_lab.data.fixtures import make_synthetic_emojisketch

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
needs_ref = pytest.mark.skipif(
    not REF.is_dir(),
    reason=f"reference split files not found at {REF} (a user's clone has none; the lead's workspace does)",
)


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/conftest.py


def _ref_file(key: str) -> Path:
    return REF / key


def _parse_reference(path: Path) -> list[tuple[str, int]]:
    """The reference reading of a list file: 'path label', path may contain spaces."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rel, label = line.rsplit(" ", 1)
            rows.append((rel, int(label)))
    return rows


def _parse_classes(path: Path) -> list[str]:
    pairs = [line.rsplit(" ", 1) for line in path.read_text().splitlines() if line.strip()]
    return [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]


def _placeholder(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 255, 255)).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _placeholder("PNG"), _placeholder("JPEG")


def _write_tree(root: Path, rows: list[tuple[str, int]], every: int = 1) -> list[tuple[str, int]]:
    """Class folders for every row; placeholder images for every ``every``-th row (returned)."""
    for folder in {rel.rpartition("/")[0] for rel, _ in rows}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    written = rows[::every]
    for rel, _ in written:
        data = PNG if rel.lower().endswith(".png") else JPEG
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    return written


ALL_LISTS = [(name, split, domain) for name, spec in SPECS.items() for split, domain in spec.lists]


# ---------------------------------------------------------------------------------------------------
# official splits


@needs_ref
@pytest.mark.parametrize(("name", "split", "domain"), ALL_LISTS)
def test_enumerates_official_lists(name, split, domain, tmp_path):
    spec = SPECS[name]
    ref_list, ref_classes = _ref_file(spec.lists[(split, domain)]), _ref_file(spec.classes[split])
    if not ref_list.is_file():
        # upstream file known only by its git blob id: no copy to compare with, and no network here
        with pytest.raises(DownloadError, match="not available locally"):
            get_dataset(
                name, tmp_path, split=split, domain=domain, splits_dir=REF, check="none", verbose=False
            )
        return
    ds = get_dataset(name, tmp_path, split=split, domain=domain, splits_dir=REF, check="none", verbose=False)
    assert ds.samples == _parse_reference(ref_list)
    assert ds.classes == _parse_classes(ref_classes)
    assert ds.domain_id == (0 if domain == "sketch" else 1)
    if split == "zero":
        assert tuple(ds.classes) == spec.unseen
    else:
        assert not set(ds.classes) & set(spec.unseen)
    expected = spec.expected.get((split, domain))
    if expected is not None:
        assert len(ds) == expected


@needs_ref
def test_reference_facts_hold():
    """Facts the loaders rely on: mixed S1 photo folders, spaces in TU-Berlin names, per-split labels."""
    s1 = _parse_reference(REF / "sake/dataset/Sketchy/zeroshot1/all_photo_filelist_zero.txt")
    tops = {rel.split("/")[0] for rel, _ in s1}
    assert tops == {"256x256", "EXTEND_image_sketchy_ready"}
    assert sum(rel.startswith("256x256/") for rel, _ in s1) == 2500
    assert sum(rel.startswith("EXTEND") for rel, _ in s1) == 14601
    tu = _parse_reference(REF / "sake/dataset/TUBerlin/zeroshot/png_ready_filelist_zero.txt")
    assert any(" " in rel for rel, _ in tu)
    assert min(lab for _, lab in tu) == 0 and max(lab for _, lab in tu) == 29


@needs_ref
def test_full_tree_sketchy_s1_zero(tmp_path, capsys):
    """Every official S1 zero-shot file on disk: the dataset finds exactly the official (path, label)s."""
    root = tmp_path / "sketchy"
    for domain in ("sketch", "photo"):
        rows = _parse_reference(REF / SPECS["sketchy-s1"].lists[("zero", domain)])
        _write_tree(root, rows)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the count matches: no warning
            ds = get_dataset("sketchy-s1", root, split="zero", domain=domain, splits_dir=REF)
        assert ds.samples == rows
        assert ds.skipped == []
    out = capsys.readouterr().out
    assert "15,229 images" in out and "17,101 images" in out and "(expected 17,101)" in out
    image, label, dom = ds[len(ds) - 1]
    assert image.size == (1, 1) and label == rows[-1][1] and dom == 1


@needs_ref
@pytest.mark.parametrize(
    ("name", "domain", "every"),
    [
        ("sketchy-s2", "sketch", 7),
        ("sketchy-s2", "photo", 7),
        ("tuberlin", "sketch", 3),
        ("tuberlin", "photo", 11),
        ("quickdraw", "sketch", 41),
        ("quickdraw", "photo", 29),
    ],
)
def test_sampled_tree_skip_and_report(name, domain, every, tmp_path):
    """A partial tree: on_error=skip keeps exactly the files present, reports the rest, warns on the count."""
    spec = SPECS[name]
    rows = (
        _parse_reference(REF / spec.lists[("zero", domain)]) if REF.is_dir() else pytest.skip("no reference")
    )
    root = tmp_path / "root"
    written = _write_tree(root, rows, every)
    with pytest.warns(UserWarning, match="official split has"):
        ds = get_dataset(
            name, root, split="zero", domain=domain, splits_dir=REF, on_error="skip", verbose=False
        )
    assert ds.samples == written
    assert len(ds.skipped) == len(rows) - len(written)
    assert {rel for rel, _ in ds.skipped} == {rel for rel, _ in rows} - {rel for rel, _ in written}
    with pytest.raises(DatasetImageError, match="missing") as err:
        get_dataset(name, root, split="zero", domain=domain, splits_dir=REF, verbose=False)
    assert str(root) in str(err.value) and "Expected layout" in str(err.value)


@needs_ref
def test_split_lists_inside_dataset_root_are_used(tmp_path):
    """SAKE's archive ships its lists in <root>/zeroshot1: they are found there (and verified)."""
    root = tmp_path / "sketchy"
    shutil.copytree(REF / "sake/dataset/Sketchy/zeroshot1", root / "zeroshot1")
    ds = get_dataset("sketchy-s1", root, split="test", domain="sketch", check="none", verbose=False)
    assert len(ds) == 5000 and len(ds.classes) == 100


@needs_ref
def test_tampered_split_file_is_refused(tmp_path):
    splits = tmp_path / "splits"
    shutil.copytree(REF / "sake/dataset/Sketchy/zeroshot1", splits / "sake/dataset/Sketchy/zeroshot1")
    target = splits / "sake/dataset/Sketchy/zeroshot1/cname_cid_zero.txt"
    target.chmod(0o644)
    target.write_text(target.read_text().replace("cup 0", "mug 0"))
    with pytest.raises(ChecksumError, match="cname_cid_zero.txt"):
        get_dataset("sketchy-s1", tmp_path, split="zero", splits_dir=splits, check="none", verbose=False)


# ---------------------------------------------------------------------------------------------------
# bad input


@needs_ref
def test_wrong_root_names_path_layout_and_fix(tmp_path):
    wrong = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError) as err:
        get_dataset("tuberlin", wrong, split="zero", domain="sketch", splits_dir=REF)
    msg = str(err.value)
    assert str(wrong) in msg and "png_ready/<class>" in msg and "python -m dsn_lab data fetch tuberlin" in msg


@needs_ref
def test_missing_class_folder(tmp_path):
    rows = _parse_reference(REF / SPECS["tuberlin"].lists[("zero", "sketch")])
    root = tmp_path / "tu"
    _write_tree(root, rows)
    shutil.rmtree(root / "png_ready" / "hot air balloon")
    with pytest.raises(DatasetLayoutError, match="hot air balloon") as err:
        get_dataset("tuberlin", root, split="zero", splits_dir=REF, verbose=False)
    assert "Expected layout" in str(err.value) and "on_error='skip'" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 80"):
        ds = get_dataset("tuberlin", root, split="zero", splits_dir=REF, on_error="skip", verbose=False)
    assert len(ds) == 2400 - 80 and "hot air balloon" not in {rel.split("/")[1] for rel, _ in ds.samples}


def test_unknown_split_domain_name(tmp_path):
    root = make_synthetic_emojisketch(tmp_path / "e")
    with pytest.raises(SplitError, match="Available: train/sketch"):
        get_dataset("emojisketch", root, split="holdout")
    with pytest.raises(SplitError, match="sketch' or 'photo"):
        get_dataset("emojisketch", root, split="train", domain="cartoon")
    with pytest.raises(KeyError, match="sketchy-s1"):
        get_dataset("sketchy", root)
    with pytest.raises(SplitError, match="'test' sketches"):
        get_dataset("sketchy-s1", tmp_path, split="test", domain="photo")
    with pytest.raises(ValueError, match="on_error"):
        get_dataset("emojisketch", root, split="train", on_error="ignore")


# ---------------------------------------------------------------------------------------------------
# EmojiSketch layout and the synthetic fixture


def test_synthetic_emojisketch_layout(tmp_path):
    import time

    t0 = time.perf_counter()
    root = make_synthetic_emojisketch(tmp_path / "e", n_train=6, n_val=2, n_zero=4, per_class=3, size=32)
    assert time.perf_counter() - t0 < 5.0
    assert (
        make_synthetic_emojisketch(tmp_path / "e", n_train=6, n_val=2, n_zero=4, per_class=3, size=32) == root
    )
    with pytest.raises(FileExistsError):
        make_synthetic_emojisketch(tmp_path / "e", n_train=5)
    seen: set[str] = set()
    for split, n_cls in (("train", 6), ("val", 2), ("zero", 4)):
        classes = (root / "splits" / f"classes_{split}.txt").read_text().split()
        assert len(classes) == n_cls and not seen & set(classes)
        seen |= set(classes)
        for domain, dom_id in (("sketch", 0), ("photo", 1)):
            ds = get_dataset("emojisketch", root, split=split, domain=domain, verbose=False)
            assert ds.classes == classes and len(ds) == 3 * n_cls
            for rel, label in ds.samples:
                assert rel.split("/")[:2] == [domain, classes[label]]
            image, label, d = ds[0]
            assert image.mode == "RGB" and image.size == (32, 32) and d == dom_id
    sketch = get_dataset("emojisketch", root, split="zero", domain="sketch", verbose=False)[0][0]
    photo = get_dataset("emojisketch", root, split="zero", domain="photo", verbose=False)[0][0]
    assert all(r == g == b for r, g, b in sketch.getdata())  # black line art on white
    assert (0, 0, 0) in set(sketch.getdata()) and sketch.getpixel((0, 0)) == (255, 255, 255)
    assert any(max(px) - min(px) > 60 for px in photo.getdata())  # a coloured shape


def test_subset_keeps_classes(tmp_path):
    ds = get_dataset("emojisketch", make_synthetic_emojisketch(tmp_path / "e"), split="train", verbose=False)
    sub = ds.subset([0, 5])
    assert sub.samples == [ds.samples[0], ds.samples[5]] and sub.classes == ds.classes


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DSN_LAB_DATA", str(tmp_path))
    assert default_root("sketchy-s1") == default_root("sketchy-s2") == tmp_path / "sketchy"
    assert default_root("emojisketch") == tmp_path / "emojisketch"
    assert default_root("emojisketch-v2") == tmp_path / "emojisketch-v2"  # v1 and v2 never share a folder
    monkeypatch.delenv("DSN_LAB_DATA")
    monkeypatch.setenv("DSN_LAB_CACHE", str(tmp_path / "c"))
    assert default_root("tuberlin") == tmp_path / "c" / "tuberlin"
    assert set(LAYOUTS) == {"sketchy", "tuberlin", "quickdraw", "emojisketch", "emojisketch-v2"}


# ---------------------------------------------------------------------------------------------------
# CLI


@needs_ref
def test_cli_info_table(tmp_path, capsys):
    assert (
        cli_main(["data", "info", "sketchy-s1", "--root", str(tmp_path / "none"), "--splits-dir", str(REF)])
        == 0
    )
    out = capsys.readouterr().out
    for token in ("split", "domain", "images", "zero", "15,229", "17,101", "55,252", "lists only"):
        assert token in out
    root = make_synthetic_emojisketch(tmp_path / "e")
    assert cli_main(["data", "info", "emojisketch", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "val" in out and "ok" in out


@pytest.mark.parametrize("action", ["fetch", "import", "info", "sources"])
def test_cli_help(action, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["data", action, "--help"])
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_data_layer_imports_only_itself_and_leaves():
    """dsn_lab.data sits at the bottom of the package: besides its own modules it may import only leaf
    modules (the one cache home, atomic writes, the config dataclass), so nothing above can be pulled in."""
    import ast

    allowed = {"dsn_lab._cache", "dsn_lab._atomic", "dsn_lab.config"}
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "dsn_lab" / "data").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] == "dsn_lab" and not name.startswith("dsn_lab.data"):
                    if name not in allowed:
                        found.append(f"{path.name}:{node.lineno} imports {name}")
    assert not found, found
