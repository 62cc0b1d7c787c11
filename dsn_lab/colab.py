"""Where a notebook keeps its files, on Colab and everywhere else: the one call after the install cell.

Why: Colab's local disk is wiped when the runtime goes, and every notebook of the course gets its own
runtime. So runs and figures go to Google Drive when the notebook asks for it (``USE_DRIVE``), where
notebook 04 finds the run notebook 03 wrote, even after a disconnect. Datasets stay on the local disk:
reading tens of thousands of small images from a mounted Drive is far slower than one copy of an archive
(:func:`import_dataset_archive` makes that copy). Outside Colab, local folders are used: the clone's
``runs/`` and ``figures/`` when the notebook runs inside a clone, else the working directory's.
``$DSN_LAB_RUNS``, ``$DSN_LAB_FIGURES`` and ``$DSN_LAB_RESULTS`` override them (CI points them at
temporary folders).

Full runs (``QUICK = False``) of notebooks 03-06 were run once and their figures and results committed in the
clone's ``figures/`` and ``results/`` (``scripts/course_full_runs.py``); :meth:`Workspace.show_full_run`
puts them beside a QUICK run's own output.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsn_lab import __version__
from dsn_lab._atomic import atomic_path
from dsn_lab._cache import data_home
from dsn_lab.data import get_dataset
from dsn_lab.data.datasets import SPECS, default_root
from dsn_lab.data.fetch import colab_import_from_drive, import_archive

DEFAULT_DRIVE_DIR = "/content/drive/MyDrive/dsn_lab"
#: Where a kernel without a clone (Colab after a pip install) finds the committed full-run figures.
FULL_RUN_URL = "https://raw.githubusercontent.com/dsn-lab/dsn-lab/main"
#: The command that made the committed full-run figures and results.
FULL_RUN_COMMAND = "python scripts/course_full_runs.py"
# The folders drive.mount() shows under its mount point: "My Drive" and the shared drives.
_DRIVE_TOP = ("MyDrive", "Shareddrives")
_NAMES_PROJECT = re.compile(r"""^name\s*=\s*["']dsn-lab["']""", re.M)  # in a pyproject.toml


def in_colab() -> bool:
    """True inside a Colab kernel (Colab imports ``google.colab`` into every kernel it starts)."""
    return "google.colab" in sys.modules


def find_checkout(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The clone of this project that holds ``start`` (default: the working directory), or None.

    A clone is a folder with a ``pyproject.toml`` naming the ``dsn-lab`` project, in ``start`` or above it.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _NAMES_PROJECT.search(pyproject.read_text("utf-8", errors="ignore")):
            return folder
    return None


def drive_mount_point(drive_dir: str | os.PathLike[str]) -> Path:
    """The folder to mount Drive at for ``drive_dir``: the part before ``MyDrive`` (or ``Shareddrives``)."""
    path = Path(drive_dir)
    for i, part in enumerate(path.parts):
        if part in _DRIVE_TOP and i > 0:
            return Path(*path.parts[:i])
    raise ValueError(
        f"DRIVE_DIR = {str(drive_dir)!r} is not inside a Google Drive mount. Expected a folder under "
        f"<mount point>/MyDrive/ (or /Shareddrives/), e.g. {DEFAULT_DRIVE_DIR!r}. Fix: change DRIVE_DIR in "
        "the parameters cell."
    )


def mount_drive(drive_dir: str | os.PathLike[str]) -> Path:
    """Mount Google Drive (Colab only) where ``drive_dir`` needs it, create ``drive_dir``, return it."""
    if not in_colab():
        raise RuntimeError("Google Drive can be mounted only from Colab (google.colab is not loaded here).")
    mount_point = drive_mount_point(drive_dir)
    top = Path(drive_dir).relative_to(mount_point).parts[0]
    if not (mount_point / top).is_dir():  # not mounted yet in this runtime (mounting again only prints)
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(mount_point))
    folder = Path(drive_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Workspace:
    """The folders a notebook uses (see the module docstring for where each one lives)."""

    root: Path  # the clone, or the working directory
    data: Path  # datasets: $DSN_LAB_DATA or the cache, always on the local disk
    runs: Path  # checkpoints and histories
    figures: Path  # figures that carry a result
    in_colab: bool
    drive: Path | None = None  # DRIVE_DIR when runs and figures are on Google Drive
    quick: bool = True
    results: Path | None = None  # result JSON files (default: ``results/`` beside ``figures/``)

    def fig_path(self, name: str) -> Path:
        """``<figures>/<name>.png``; QUICK runs write ``<name>-quick.png`` so they never replace a full-run
        figure."""
        return self.figures / (f"{name}-quick.png" if self.quick else f"{name}.png")

    def result_path(self, name: str) -> Path:
        """``<results>/<name>.json`` (``<name>-quick.json`` for QUICK runs, as :meth:`fig_path`)."""
        folder = self.results if self.results is not None else self.figures.parent / "results"
        return folder / (f"{name}-quick.json" if self.quick else f"{name}.json")

    def save_result(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` (JSON-able; numpy numbers become floats) to :meth:`result_path`, atomically, with
        ``quick`` and the package version added."""
        path = self.result_path(name)
        payload = {"quick": self.quick, "dsn_lab": __version__, **data}
        text = json.dumps(payload, indent=1, default=_json_default) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    def full_run_result(self, name: str) -> dict[str, Any] | None:
        """The committed full-run result ``results/<name>.json`` of the clone, or None outside a clone."""
        path = self.root / "results" / f"{name}.json"
        return json.loads(path.read_text("utf-8")) if path.is_file() else None

    def show_full_run(
        self, *names: str, command: str = FULL_RUN_COMMAND, made_here: bool = True, width: int = 900
    ) -> None:
        """Show the committed full-run figures ``figures/<name>.png`` under a heading that says so, for a
        QUICK run to be read beside them. From the clone when there is one, else from GitHub (Colab after a
        pip install). ``command`` made them; ``made_here=False`` for figures another command made (the demo,
        a benchmark), which are shown in every mode. Otherwise, in a full run (``QUICK = False``) the figures
        just drawn are the full run: nothing is shown twice. A clone that lacks one says so (it has not been
        made yet)."""
        if made_here and not self.quick:
            print(
                "This notebook ran in full (QUICK = False): the figures above are the full run "
                f"({', '.join(f'figures/{n}.png' for n in names)} in a clone)."
            )
            return
        from IPython.display import HTML, Image, display

        which = "QUICK = False, " if made_here else ""
        mine = "this QUICK run's" if self.quick else "this run's"
        display(
            HTML(
                f"<p><b>Full run</b> ({which}committed in <code>figures/</code>, made by "
                f"<code>{command}</code> on a 2-core CPU); the outputs above are {mine}.</p>"
            )
        )
        in_clone = find_checkout(self.root) is not None
        for name in names:
            local = self.root / "figures" / f"{name}.png"
            if local.is_file():
                display(Image(filename=str(local), width=width))
            elif in_clone:  # a clone without it: not made yet, and GitHub would not have it either
                print(f"figures/{name}.png is not in this clone (yet): `make course-results` makes it.")
            else:
                url = f"{FULL_RUN_URL}/figures/{name}.png"
                display(Image(url=url, width=width))

    def run_dir(self, name: str) -> Path:
        """``<runs>/<name>``, a run folder named by hand. The course notebooks name theirs after the
        configuration instead (:func:`dsn_lab.course.run_folder`), so that they share one run per config."""
        if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
            raise ValueError(f"run name {name!r} must be a plain folder name, e.g. a preset name.")
        return self.runs / name

    def describe(self) -> str:
        where = f"Google Drive ({self.drive})" if self.drive else "local"
        return "\n".join(
            [
                f"Colab: {self.in_colab} | runs and figures: {where}",
                f"  data    -> {self.data}  (local disk)",
                f"  runs    -> {self.runs}",
                f"  figures -> {self.figures}",
                f"  results -> {self.result_path('x').parent}",
            ]
        )


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, paths: what result dictionaries hold besides plain numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"save_result: {type(value).__name__} is not JSON-able")


def setup(
    use_drive: bool = False,
    drive_dir: str | os.PathLike[str] = DEFAULT_DRIVE_DIR,
    *,
    quick: bool = True,
    verbose: bool = True,
) -> Workspace:
    """Decide (and create) the folders of a notebook; on Colab with ``use_drive``, mount Drive first.

    Runs and figures: ``$DSN_LAB_RUNS`` / ``$DSN_LAB_FIGURES`` when set; else ``<drive_dir>/runs`` and
    ``<drive_dir>/figures`` on Colab with ``use_drive``; else ``runs/`` and ``figures/`` in the clone (or the
    working directory). Datasets: ``$DSN_LAB_DATA`` or the package cache, on the local disk in every case.
    """
    colab = in_colab()
    drive = None
    if use_drive and colab:
        drive = mount_drive(drive_dir)
    elif use_drive and verbose:
        print("USE_DRIVE only applies on Colab; using local folders.")
    root = find_checkout() or Path.cwd().resolve()
    base = drive if drive is not None else root
    runs = Path(os.environ.get("DSN_LAB_RUNS") or base / "runs").expanduser()
    figures = Path(os.environ.get("DSN_LAB_FIGURES") or base / "figures").expanduser()
    results = Path(os.environ.get("DSN_LAB_RESULTS") or figures.parent / "results").expanduser()
    for folder in (runs, figures, results):
        folder.mkdir(parents=True, exist_ok=True)
    ws = Workspace(
        root=root,
        data=data_home(),
        runs=runs,
        figures=figures,
        in_colab=colab,
        drive=drive,
        quick=quick,
        results=results,
    )
    if verbose:
        print(f"dsn_lab {__version__} | " + ws.describe())
    return ws


# ---------------------------------------------------------------------------------------- a user's archive
def _on_drive(path: Path) -> bool:
    """True for a path under a Drive mount point; on Colab, Drive is mounted for it when it is not yet."""
    try:
        mount_point = drive_mount_point(path)
    except ValueError:
        return False
    if in_colab() and not any((mount_point / top).is_dir() for top in _DRIVE_TOP):
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(mount_point))
    return True


def import_dataset_archive(
    archive: str | os.PathLike[str],
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    splits_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Install dataset ``name`` from an archive you have, then count it against the official file lists.

    An archive on Google Drive is copied to the local disk first, then extracted there (once: a dataset
    already installed at ``root`` is only counted). Returns one row per official (split, domain) list:
    ``listed`` (lines in the official list), ``found`` (files present), ``missing``, ``expected`` (the
    published size, where there is one) and ``note`` (why a row has no counts, or that they differ from the
    published size).
    """
    if name not in SPECS:
        raise KeyError(f"Unknown dataset {name!r}: an archive can install one of {', '.join(SPECS)}.")
    spec = SPECS[name]
    target = Path(root).expanduser() if root is not None else default_root(name)
    archive = Path(archive).expanduser()
    if spec.image_root_ok(target):
        print(f"[dsn_lab] {name}: already installed at {target}; counting it (archive not read again)")
    elif _on_drive(archive):
        local = Path(local_dir) if local_dir is not None else data_home() / "archives"
        colab_import_from_drive(archive, target, name=name, local_dir=local, progress=progress)
    else:
        import_archive(archive, name, target, progress=progress)
    rows = []
    for split, domain in spec.lists:
        row = {
            "dataset": name,
            "split": split,
            "domain": domain,
            "listed": None,
            "found": None,
            "missing": None,
            "expected": spec.expected.get((split, domain)),
            "note": "",
        }
        try:
            with warnings.catch_warnings():  # missing images are this table's "missing" column
                warnings.simplefilter("ignore")
                ds = get_dataset(
                    name,
                    target,
                    split=split,
                    domain=domain,
                    splits_dir=splits_dir,
                    check="exists",
                    on_error="skip",
                    verbose=False,
                )
        except (OSError, RuntimeError, ValueError) as exc:  # e.g. a list neither in the archive nor reachable
            row["note"] = str(exc).splitlines()[0]
        else:
            found, missing = len(ds), len(ds.skipped)
            row.update(listed=found + missing, found=found, missing=missing)
            if row["expected"] is not None and found != row["expected"]:
                row["note"] = f"differs from the official {row['expected']:,}"
        rows.append(row)
    return rows
