"""dsn_lab.colab: the notebooks' folders on Colab (a stand-in ``google.colab`` package) and elsewhere.

The stand-in is written to disk by :func:`write_fake_colab`, so the same package serves these unit tests
and the Colab-like execution of every notebook (tests/test_notebooks.py, whose kernels import it).
``drive.mount(point)`` makes ``point/MyDrive`` a link to ``$FAKE_COLAB_DRIVE``, a folder that outlives the
"runtime", as Google Drive does; every call is appended to ``$FAKE_COLAB_LOG`` (JSON lines) when set.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dsn_lab import colab

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference"

_DRIVE_PY = '''\
"""Stand-in for google.colab.drive (dsn-lab tests): the "cloud" is the folder $FAKE_COLAB_DRIVE."""
import json
import os
from pathlib import Path


def _record(call, **kw):
    log = os.environ.get("FAKE_COLAB_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"call": call, **kw}) + "\\n")


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    store = Path(os.environ["FAKE_COLAB_DRIVE"])
    store.mkdir(parents=True, exist_ok=True)
    point = Path(mountpoint)
    point.mkdir(parents=True, exist_ok=True)
    if not (point / "MyDrive").exists():
        (point / "MyDrive").symlink_to(store, target_is_directory=True)
    _record("drive.mount", mountpoint=str(mountpoint))
    print(f"Mounted at {mountpoint}")
'''

_OUTPUT_PY = '''\
"""Stand-in for google.colab.output (dsn-lab tests)."""
from google.colab.drive import _record


def enable_custom_widget_manager():
    _record("output.enable_custom_widget_manager")
'''


def write_fake_colab(folder: Path) -> Path:
    """Write the stand-in ``google.colab`` package under ``folder`` (put ``folder`` on sys.path / PYTHONPATH).

    ``google`` gets no ``__init__.py``: it stays a namespace package, so a real ``google.protobuf`` still
    imports next to it."""
    pkg = folder / "google" / "colab"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        '"""Stand-in for Colab\'s google.colab (dsn-lab tests)."""\n'
        "from google.colab import drive, output  # noqa: F401\n"
    )
    (pkg / "drive.py").write_text(_DRIVE_PY)
    (pkg / "output.py").write_text(_OUTPUT_PY)
    return folder


def read_fake_colab_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture
def no_env(monkeypatch):
    for key in ("DSN_LAB_RUNS", "DSN_LAB_FIGURES", "DSN_LAB_DATA"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def fake_colab(tmp_path, monkeypatch, no_env):
    """google.colab imported (as in a Colab kernel), Drive's store at tmp/cloud, calls logged."""
    write_fake_colab(tmp_path / "fake")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.setenv("FAKE_COLAB_DRIVE", str(tmp_path / "cloud"))
    monkeypatch.setenv("FAKE_COLAB_LOG", str(tmp_path / "colab.log"))
    before = set(sys.modules)
    import google.colab  # noqa: F401

    yield tmp_path
    for name in set(sys.modules) - before:
        if name == "google" or name.startswith("google."):
            del sys.modules[name]


def test_in_colab_follows_google_colab_module(fake_colab):
    assert colab.in_colab()
    del sys.modules["google.colab"]
    assert not colab.in_colab()


def test_find_checkout(tmp_path):
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "dsn-lab"\nversion = "0.1.0"\n')
    assert colab.find_checkout(clone / "notebooks") == clone.resolve()
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "something-else"\ndependencies = ["dsn-lab"]\n')
    assert colab.find_checkout(other / "sub") is None
    assert colab.find_checkout(ROOT / "notebooks") == ROOT


@pytest.mark.parametrize(
    ("drive_dir", "mount_point"),
    [
        ("/content/drive/MyDrive/dsn_lab", "/content/drive"),
        ("/mnt/g/Shareddrives/lab/runs", "/mnt/g"),
        ("/content/drive/MyDrive", "/content/drive"),
    ],
)
def test_drive_mount_point(drive_dir, mount_point):
    assert colab.drive_mount_point(drive_dir) == Path(mount_point)


@pytest.mark.parametrize("drive_dir", ["/content/dsn_lab", "MyDrive/dsn_lab", ""])
def test_drive_mount_point_rejects_paths_outside_drive(drive_dir):
    with pytest.raises(ValueError, match="DRIVE_DIR.*MyDrive"):
        colab.drive_mount_point(drive_dir)


def test_setup_outside_colab_uses_the_working_directory(tmp_path, monkeypatch, no_env, capsys):
    monkeypatch.chdir(tmp_path)
    ws = colab.setup(use_drive=True, quick=True)  # USE_DRIVE is ignored outside Colab, with a message
    assert "only applies on Colab" in capsys.readouterr().out
    assert (ws.root, ws.runs, ws.figures, ws.drive, ws.in_colab) == (
        tmp_path.resolve(),
        tmp_path.resolve() / "runs",
        tmp_path.resolve() / "figures",
        None,
        False,
    )
    assert ws.runs.is_dir() and ws.figures.is_dir()
    assert ws.fig_path("gap") == ws.figures / "gap-quick.png"
    assert colab.setup(quick=False, verbose=False).fig_path("gap") == ws.figures / "gap.png"


def test_setup_in_a_clone_uses_its_folders_and_env_overrides_win(tmp_path, monkeypatch, no_env):
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "dsn-lab"\n')
    monkeypatch.chdir(clone / "notebooks")
    ws = colab.setup(verbose=False)
    assert ws.root == clone.resolve() and ws.runs == clone.resolve() / "runs"
    monkeypatch.setenv("DSN_LAB_RUNS", str(tmp_path / "ci-runs"))
    monkeypatch.setenv("DSN_LAB_DATA", str(tmp_path / "ci-data"))
    ws = colab.setup(verbose=False)
    assert ws.runs == tmp_path / "ci-runs" and ws.figures == clone.resolve() / "figures"
    assert ws.data == tmp_path / "ci-data"


def test_run_dir_is_one_folder_under_runs(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    ws = colab.setup(verbose=False)
    assert ws.run_dir("emoji-quick") == ws.runs / "emoji-quick"
    for bad in ("", ".", "..", "a/b", "a\\b"):
        with pytest.raises(ValueError, match="plain folder name"):
            ws.run_dir(bad)


def test_colab_without_drive_mounts_nothing(fake_colab, monkeypatch):
    monkeypatch.chdir(fake_colab)
    ws = colab.setup(use_drive=False, drive_dir=str(fake_colab / "content/drive/MyDrive/dsn_lab"))
    assert ws.in_colab and ws.drive is None and ws.runs == fake_colab.resolve() / "runs"
    assert read_fake_colab_log(fake_colab / "colab.log") == []


def test_colab_with_drive_keeps_runs_on_drive_across_runtimes(fake_colab, monkeypatch):
    """Notebook 03 writes a run in one runtime; notebook 04, in a new runtime (another local disk), finds
    it through Drive."""
    runtime1, runtime2 = fake_colab / "runtime1", fake_colab / "runtime2"
    runtime1.mkdir()
    runtime2.mkdir()
    monkeypatch.chdir(runtime1)
    drive_dir = runtime1 / "content/drive/MyDrive/dsn_lab"
    ws = colab.setup(use_drive=True, drive_dir=str(drive_dir))
    assert ws.drive == drive_dir and ws.runs == drive_dir / "runs" and ws.figures == drive_dir / "figures"
    (ws.run_dir("emoji-quick") / "last.pt").parent.mkdir(parents=True)
    (ws.run_dir("emoji-quick") / "last.pt").write_bytes(b"checkpoint")
    colab.setup(use_drive=True, drive_dir=str(drive_dir), verbose=False)  # already mounted: no second mount
    assert read_fake_colab_log(fake_colab / "colab.log") == [
        {"call": "drive.mount", "mountpoint": str(runtime1 / "content/drive")}
    ]
    assert (fake_colab / "cloud/dsn_lab/runs/emoji-quick/last.pt").read_bytes() == b"checkpoint"

    monkeypatch.chdir(runtime2)
    drive_dir2 = runtime2 / "content/drive/MyDrive/dsn_lab"
    ws2 = colab.setup(use_drive=True, drive_dir=str(drive_dir2), verbose=False)
    assert (ws2.run_dir("emoji-quick") / "last.pt").read_bytes() == b"checkpoint"
    assert drive_dir2.parent not in [ws2.data, *ws2.data.parents]  # datasets are never on Drive


def test_mount_drive_outside_colab_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="only from Colab"):
        colab.mount_drive(tmp_path / "drive/MyDrive/x")


def test_import_dataset_archive_rejects_unknown_dataset(tmp_path):
    with pytest.raises(KeyError, match="emojisketch|Unknown dataset"):
        colab.import_dataset_archive(tmp_path / "x.zip", "emojisketch")


def _tuberlin_zero_sketch_archive(path: Path) -> int:
    """A zip with TU-Berlin's folders and exactly the official unseen-class sketches (empty files)."""
    lines = (REF / "sake/dataset/TUBerlin/zeroshot/png_ready_filelist_zero.txt").read_text().splitlines()
    rels = [line.rpartition(" ")[0] for line in lines if line.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for rel in rels:
            zf.writestr(f"TUBerlin/{rel}", b"")
        zf.writestr("TUBerlin/ImageResized_ready/banana/n07753592_1.JPEG", b"")
    return len(rels)


@pytest.mark.skipif(not REF.is_dir(), reason=f"official split lists not at {REF} (a user's clone has none)")
def test_import_dataset_archive_from_drive_counts_against_official_lists(fake_colab, monkeypatch):
    monkeypatch.setenv("DSN_LAB_CACHE", str(fake_colab / "cache"))
    monkeypatch.setenv("DSN_LAB_SPLITS_MIRROR", "http://127.0.0.1:9/")  # lists missing from REF fail fast
    monkeypatch.setattr("dsn_lab.data.fetch.RETRY_BACKOFF", 0)
    archive = fake_colab / "content/drive/MyDrive/datasets/TUBerlin.zip"
    n_sketches = _tuberlin_zero_sketch_archive(fake_colab / "cloud/datasets/TUBerlin.zip")
    root = fake_colab / "data" / "tuberlin"
    rows = colab.import_dataset_archive(
        archive, "tuberlin", root=root, splits_dir=REF, local_dir=fake_colab / "local", progress=False
    )
    assert read_fake_colab_log(fake_colab / "colab.log")[0]["call"] == "drive.mount"  # mounted for the path
    assert not list((fake_colab / "local").iterdir())  # the local copy is removed after extraction
    by = {(r["split"], r["domain"]): r for r in rows}
    assert set(by) == {
        ("train", "sketch"),
        ("train", "photo"),
        ("test", "sketch"),
        ("zero", "sketch"),
        ("zero", "photo"),
    }
    zero = by["zero", "sketch"]
    assert (zero["listed"], zero["found"], zero["missing"], zero["expected"], zero["note"]) == (
        n_sketches,
        2400,
        0,
        2400,
        "",
    )
    photos = by["zero", "photo"]
    assert (photos["found"], photos["listed"], photos["expected"]) == (0, 27989, 27989)
    assert "differs from the official 27,989" in photos["note"]
    assert by["train", "sketch"]["found"] == 0 and by["train", "sketch"]["listed"] == 15400

    archive.unlink()  # installed once: a second call only counts
    again = colab.import_dataset_archive(archive, "tuberlin", root=root, splits_dir=REF, progress=False)
    assert again == rows


def test_results_and_the_committed_full_run(tmp_path, monkeypatch, no_env, capsys):
    """QUICK results never replace full ones (as figures); the full-run files are read from the clone, and
    shown from GitHub where there is no clone; a full run shows nothing twice."""
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "dsn-lab"\n')
    monkeypatch.chdir(clone / "notebooks")
    monkeypatch.delenv("DSN_LAB_RESULTS", raising=False)
    ws = colab.setup(verbose=False)
    assert ws.result_path("x") == clone.resolve() / "results" / "x-quick.json"
    path = ws.save_result("x", {"mAP@all": np.float32(0.25), "classes": np.array([1, 2]), "run": Path("a")})
    assert json.loads(path.read_text()) == {
        "quick": True,
        "dsn_lab": colab.__version__,
        "mAP@all": 0.25,
        "classes": [1, 2],
        "run": "a",
    }
    assert ws.full_run_result("x") is None  # no results/x.json committed
    full = colab.setup(verbose=False, quick=False)
    full.save_result("x", {"mAP@all": 0.5})
    assert ws.full_run_result("x")["mAP@all"] == 0.5 and full.result_path("x").name == "x.json"
    with pytest.raises(TypeError, match="not JSON-able"):
        ws.save_result("bad", {"object": object()})
    assert not list((clone / "results").glob(".*"))  # nothing half-written left behind

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    (clone / "figures" / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    def images() -> list[str]:  # where each Image shown came from
        return [getattr(o, "filename", None) or o.url for o in shown if type(o).__name__ == "Image"]

    ws.show_full_run("curves", "missing")
    assert images() == [str(clone.resolve() / "figures" / "curves.png")]  # in a clone: missing = not made yet
    assert colab.FULL_RUN_COMMAND in shown[0].data and "Full run" in shown[0].data
    assert "figures/missing.png is not in this clone (yet)" in capsys.readouterr().out
    shown.clear()
    full.show_full_run("curves")
    assert shown == [] and "ran in full" in capsys.readouterr().out
    # figures another command made (the demo's) show in every mode, under that command
    full.show_full_run("curves", command="make figures", made_here=False)
    assert images() == [str(clone.resolve() / "figures" / "curves.png")]
    assert "make figures" in shown[0].data and "QUICK = False" not in shown[0].data
    shown.clear()
    elsewhere = tmp_path / "content"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # Colab after a pip install: no clone, the figures come from GitHub
    colab.setup(verbose=False).show_full_run("curves")
    assert images() == [f"{colab.FULL_RUN_URL}/figures/curves.png"]
    monkeypatch.setenv("DSN_LAB_RESULTS", str(tmp_path / "ci-results"))
    assert colab.setup(verbose=False).result_path("x") == tmp_path / "ci-results" / "x-quick.json"
