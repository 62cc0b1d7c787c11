"""The four ZS-SBIR benchmarks and the offline EmojiSketch set, as one kind of torch ``Dataset``.

Why: each published split is a pair of file lists, and papers silently differ in which one they use. Here
every split is named, its unseen classes are written out in the package (``dsn_lab/resources/datasets.json``,
read by :mod:`dsn_lab.data.registry`), its list files are the official ones (pinned there too), and loading
checks the lists against those classes and the images on disk, printing the counts and warning when they
differ from the published sizes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from dsn_lab.data.fetch import ensure_split_file
from dsn_lab.data.registry import DOMAINS, LAYOUTS, SPECS, Layout, is_emojisketch, layout_of
from dsn_lab.data.registry import default_root as default_root  # re-exported: callers import it from here

ON_ERROR = ("raise", "skip")
CHECKS = ("none", "exists", "decode")


class DatasetLayoutError(FileNotFoundError):
    """The dataset root, a domain folder or class folders are missing."""


class DatasetImageError(OSError):
    """An image that is listed cannot be read (missing, unreadable, truncated)."""


class SplitError(ValueError):
    """Unknown split/domain, or an official list that disagrees with the split definition."""


# ---------------------------------------------------------------------------------------------------
# list files


def read_class_file(path: Path) -> list[str]:
    """A ``cname_cid`` file ("class name<space>id" per line; names may contain spaces) -> names by id."""
    pairs = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, _, cid = line.strip().rpartition(" ")
        if not name or not cid.lstrip("-").isdigit():
            raise SplitError(f"{path}, line {n}: expected 'class name<space>id', got {line!r}.")
        pairs.append((int(cid), name))
    ids = sorted(i for i, _ in pairs)
    if ids != list(range(len(pairs))):
        raise SplitError(f"{path}: class ids are not 0..{len(pairs) - 1}.")
    return [name for _, name in sorted(pairs)]


def read_list_file(path: Path) -> list[tuple[str, int]]:
    """A file list ("relative/path label" per line; paths may contain spaces: split at the LAST space)."""
    samples = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            rel, _, label = line.rpartition(" ")
            if not rel or not label.isdigit():
                raise SplitError(f"{path}, line {n}: expected 'relative/path label', got {line!r}.")
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise SplitError(f"{path}, line {n}: path {rel!r} must be relative and stay inside the root.")
            samples.append((rel, int(label)))
    return samples


# ---------------------------------------------------------------------------------------------------
# images


def load_rgb(path: Path | str) -> Image.Image:
    """Open an image fully as RGB; transparent pixels go onto white (sketches are dark strokes on white)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        return img.convert("RGB")


class SketchPhotoDataset(Dataset):
    """Images of one domain of one split: ``ds[i] -> (image, label, domain)`` (domain 0 sketch, 1 photo).

    ``samples`` is the list of ``(path relative to root, label)``; ``classes[label]`` is the class name.
    ``on_error="skip"``: an image that cannot be read is replaced by the next readable one and reported in
    ``skipped`` (and by a warning), instead of stopping a long run.
    """

    def __init__(
        self,
        root: Path | str,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        *,
        domain: str,
        name: str = "",
        split: str = "",
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        if domain not in DOMAINS:
            raise SplitError(f"Unknown domain {domain!r}: use 'sketch' or 'photo'.")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
        self.root = Path(root)
        self.samples = list(samples)
        self.classes = list(classes)
        self.domain = domain
        self.domain_id = DOMAINS[domain]
        self.name, self.split = name, split
        self.transform = transform
        self.on_error = on_error
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def path(self, index: int) -> Path:
        return self.root / self.samples[index][0]

    def _read(self, index: int) -> Image.Image:
        path = self.path(index)
        try:
            return load_rgb(path)
        except FileNotFoundError:
            reason = "file not found"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            reason = f"unreadable or truncated image ({exc})"
        raise DatasetImageError(
            f"{path}: {reason}. It is listed in the {self.name} {self.split}/{self.domain} split. "
            "Fix: re-extract "
            "the dataset archive (python -m dsn_lab data import ARCHIVE --name NAME --overwrite), or pass "
            "on_error='skip' to skip unreadable images and report them."
        )

    def load_image(self, index: int) -> tuple[Image.Image, int]:
        """(RGB PIL image, label) of ``index``; with ``on_error='skip'`` the next readable sample instead."""
        for offset in range(len(self.samples)):
            j = (index + offset) % len(self.samples)
            try:
                return self._read(j), self.samples[j][1]
            except DatasetImageError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped.append((self.samples[j][0], str(exc).split(". It is listed")[0]))
                warnings.warn(f"skipping {exc}".split(". It is listed")[0], stacklevel=2)
        raise DatasetImageError(
            f"No readable image at all in {self.root} for {self.name} {self.split}/{self.domain}."
        )

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, label = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, label, self.domain_id

    def subset(self, indices: Iterable[int]) -> SketchPhotoDataset:
        """A dataset of the selected samples (same classes, transform and error policy)."""
        return SketchPhotoDataset(
            self.root,
            [self.samples[i] for i in indices],
            self.classes,
            domain=self.domain,
            name=self.name,
            split=self.split,
            transform=self.transform,
            on_error=self.on_error,
        )

    def __repr__(self) -> str:
        return (
            f"SketchPhotoDataset({self.name} {self.split}/{self.domain}: {len(self):,} images, "
            f"{len(self.classes)} classes, root={str(self.root)!r})"
        )


# ---------------------------------------------------------------------------------------------------
# checks


def _layout_message(layout: Layout, root: Path) -> str:
    return f"Expected layout under {root}:\n{layout.tree}"


def _fix_message(name: str, root: Path) -> str:
    if is_emojisketch(name):
        return f"Fix: python -m dsn_lab data fetch {name} --root {root}"
    return (
        f"Fix: python -m dsn_lab data fetch {name} --root {root}  (or, with an archive you have: "
        f"python -m dsn_lab data import ARCHIVE --name {name} --root {root}); "
        "or pass root= / set $DSN_LAB_DATA."
    )


def absent_message(name: str, root: Path, domain: str | None = None) -> str | None:
    """None when ``root`` holds images of benchmark ``name`` (of ``domain``, or of either domain); else the
    message a newcomer needs first: the dataset is not there, and the two ways to get it.

    Checked before any split list is fetched, so a missing dataset is never reported as a failed download.
    EmojiSketch (built, not fetched) is not checked here.
    """
    if is_emojisketch(name):
        return None
    layout = LAYOUTS[layout_of(name)]
    dirs = layout.domain_dirs
    folders = dirs[domain] if domain else tuple(f for v in dirs.values() for f in v)
    if root.is_dir() and any((root / f).is_dir() for f in folders):
        return None
    listed = ", ".join(str(root / f) for f in folders)
    where = "does not exist" if not root.is_dir() else f"holds none of {listed}"
    return (
        f"{name} is not at {root} (that folder {where}). Get it one of two ways:\n"
        f"  python -m dsn_lab data fetch {name} --root {root}\n"
        f"  python -m dsn_lab data import ARCHIVE --name {name} --root {root}   (an archive you have)\n"
        "or point --data-root (root=) or $DSN_LAB_DATA at the copy you have.\n"
        f"{_layout_message(layout, root)}"
    )


def _check_tree(
    name: str, root: Path, domain: str, samples: list[tuple[str, int]], check: str, on_error: str
) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """Check root, class folders and (check='exists'/'decode') files; return kept samples and skips."""
    layout = LAYOUTS[layout_of(name)]
    skipped: list[tuple[str, str]] = []
    if check == "none":  # trust the lists (e.g. `data info` before the images are installed)
        return samples, skipped
    if not root.is_dir():
        raise DatasetLayoutError(
            f"Dataset root {root} does not exist.\n{_layout_message(layout, root)}\n"
            f"{_fix_message(name, root)}"
        )
    for folder in layout.domain_dirs[domain]:
        if not (root / folder).is_dir() and any(rel.startswith(folder + "/") for rel, _ in samples[:1000]):
            raise DatasetLayoutError(
                f"{root / folder} is missing ({name} {domain} images).\n"
                f"{_layout_message(layout, root)}\n{_fix_message(name, root)}"
            )
    folders: dict[str, set[str] | None] = {}
    for rel, _ in samples:
        parent = rel.rpartition("/")[0]
        if parent not in folders:
            try:
                folders[parent] = set(os.listdir(root / parent))
            except (FileNotFoundError, NotADirectoryError):
                folders[parent] = None
    missing_dirs = sorted(p for p, names in folders.items() if names is None)
    if missing_dirs and on_error == "raise":
        shown = "\n  ".join(str(root / p) for p in missing_dirs[:10])
        more = f"\n  ... and {len(missing_dirs) - 10} more" if len(missing_dirs) > 10 else ""
        raise DatasetLayoutError(
            f"{len(missing_dirs)} class folder(s) missing for {name} {domain}:\n  {shown}{more}\n"
            f"{_layout_message(layout, root)}\n{_fix_message(name, root)} "
            "Or pass on_error='skip' to use the classes present."
        )
    kept = []
    for rel, label in samples:
        parent, _, fname = rel.rpartition("/")
        names = folders[parent]
        if names is None:
            skipped.append((rel, "class folder missing"))
        elif fname not in names:
            skipped.append((rel, "file not found"))
        else:
            kept.append((rel, label))
    if skipped and on_error == "raise":
        shown = "\n  ".join(str(root / rel) for rel, _ in skipped[:5])
        raise DatasetImageError(
            f"{len(skipped):,} listed {name} {domain} image(s) missing, e.g.:\n  {shown}\n"
            f"{_layout_message(layout, root)}\n{_fix_message(name, root)} Or pass "
            "on_error='skip' to skip them (they are reported)."
        )
    if check == "decode":
        good = []
        for rel, label in tqdm(kept, desc=f"verify {name} {domain}", unit="img", leave=False):
            try:
                load_rgb(root / rel)
                good.append((rel, label))
            except (OSError, SyntaxError, ValueError) as exc:
                if on_error == "raise":
                    raise DatasetImageError(
                        f"{root / rel}: unreadable or truncated image ({exc}). Fix: re-extract "
                        "the archive, or pass on_error='skip'."
                    ) from exc
                skipped.append((rel, f"unreadable ({exc})"))
        kept = good
    return kept, skipped


def _report(
    ds: SketchPhotoDataset, expected: int | None, skipped: list[tuple[str, str]], verbose: bool
) -> None:
    n = len(ds)
    exp = f" (expected {expected:,})" if expected is not None else ""
    if verbose:
        print(
            f"[dsn_lab] {ds.name} {ds.split}/{ds.domain}: {n:,} images, {len(set(ds.labels)):,} of "
            f"{len(ds.classes)} classes{exp}"
        )
    if skipped:
        examples = "; ".join(f"{rel} ({why})" for rel, why in skipped[:3])
        warnings.warn(
            f"{ds.name} {ds.split}/{ds.domain}: skipped {len(skipped):,} listed image(s), e.g. {examples}. "
            "The full list is in dataset.skipped.",
            stacklevel=3,
        )
    if expected is not None and n != expected:
        warnings.warn(
            f"{ds.name} {ds.split}/{ds.domain} has {n:,} images; the official split has {expected:,}. "
            "Results will not be comparable with published numbers.",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------------
# entry point


def _check_split(name: str, split: str, domain: str, available: Iterable[tuple[str, str]]) -> None:
    available = list(available)
    if domain not in DOMAINS:
        raise SplitError(f"Unknown domain {domain!r} for {name}: use 'sketch' or 'photo'.")
    if (split, domain) not in available:
        have = ", ".join(f"{s}/{d}" for s, d in available)
        hint = ""
        if split == "val" and ("test", domain) in available:
            hint = " (the released code calls SAKE's seen-class 'test' sketches 'val')"
        elif split == "test" and domain == "photo":
            hint = (
                " (held-out seen-class tests pair the 'test' sketches with the 'train' photos, as released)"
            )
        raise SplitError(f"{name} has no {split}/{domain} split{hint}. Available: {have}.")


def load_real(
    name: str,
    root: Path,
    split: str,
    domain: str,
    *,
    splits_dir: Path | str | None,
    transform: Callable | None,
    check: str,
    on_error: str,
    verbose: bool,
) -> SketchPhotoDataset:
    spec = SPECS[name]
    _check_split(name, split, domain, spec.lists)
    absent = absent_message(name, root, domain) if check != "none" else None
    if absent is not None:  # before fetching split lists: "not there" is what a newcomer must hear first
        raise DatasetLayoutError(absent)
    list_path = ensure_split_file(spec.lists[(split, domain)], splits_dir=splits_dir, roots=[root])
    class_path = ensure_split_file(spec.classes[split], splits_dir=splits_dir, roots=[root])
    classes = read_class_file(class_path)
    samples = read_list_file(list_path)
    if split == "zero" and tuple(classes) != spec.unseen:
        raise SplitError(
            f"{class_path} does not list the {len(spec.unseen)} unseen classes of {name} written in "
            "dsn_lab/resources/datasets.json (in label order). Is it the official file?"
        )
    if split != "zero":
        leaked = sorted(set(classes) & set(spec.unseen))
        if leaked or len(classes) != spec.n_seen:
            raise SplitError(
                f"{class_path}: expected {spec.n_seen} seen classes with no unseen one; got "
                f"{len(classes)} classes, unseen among them: {leaked}."
            )
    bad = [
        (rel, lab)
        for rel, lab in samples
        if not 0 <= lab < len(classes) or rel.split("/")[-2] != classes[lab]
    ]
    if bad:
        raise SplitError(
            f"{list_path}: {len(bad):,} line(s) whose class folder does not match the label's class "
            f"in {class_path}, e.g. {bad[0]}."
        )
    kept, skipped = _check_tree(name, root, domain, samples, check, on_error)
    ds = SketchPhotoDataset(
        root, kept, classes, domain=domain, name=name, split=split, transform=transform, on_error=on_error
    )
    ds.skipped = skipped
    _report(ds, spec.expected.get((split, domain)), skipped, verbose)
    return ds


def emojisketch_splits(root: Path) -> list[tuple[str, str]]:
    """(split, domain) pairs present in an EmojiSketch-layout folder."""
    out = []
    for split in ("train", "val", "zero", "test", "val_multi", "zero_multi"):  # *_multi: EmojiSketch v2
        for domain in DOMAINS:
            if (root / "splits" / f"{domain}_{split}.txt").is_file() and (
                root / "splits" / f"classes_{split}.txt"
            ).is_file():
                out.append((split, domain))
    return out


def load_emojisketch(
    root: Path,
    split: str,
    domain: str,
    *,
    transform: Callable | None,
    check: str,
    on_error: str,
    verbose: bool,
    name: str = "emojisketch",
) -> SketchPhotoDataset:
    layout = LAYOUTS[name]
    if not (root / "splits").is_dir():
        raise DatasetLayoutError(
            f"{root / 'splits'} not found: {root} is not an EmojiSketch folder.\n"
            f"{_layout_message(layout, root)}\n{_fix_message(name, root)}"
        )
    if domain in DOMAINS:  # a split that exists in part: name the missing list file, not "no such split"
        needed = [root / "splits" / f"classes_{split}.txt", root / "splits" / f"{domain}_{split}.txt"]
        related = [*needed, *(root / "splits" / f"{d}_{split}.txt" for d in DOMAINS)]
        missing = [p for p in needed if not p.is_file()]
        if missing and (split in ("train", "zero") or any(p.is_file() for p in related)):
            raise DatasetLayoutError(
                f"Split file {', '.join(map(str, missing))} is missing ({name} {split}/{domain}).\n"
                f"{_layout_message(layout, root)}\nFix: the folder is incomplete; move it aside and rebuild "
                f"it (python -m dsn_lab data fetch {name} --root {root}), or restore the file from a copy."
            )
    _check_split(name, split, domain, emojisketch_splits(root))
    class_file = root / "splits" / f"classes_{split}.txt"
    classes = [line.strip() for line in class_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    list_file = root / "splits" / f"{domain}_{split}.txt"
    samples = read_list_file(list_file)
    bad = [s for s in samples if not 0 <= s[1] < len(classes)]
    if bad:
        raise SplitError(f"{list_file}: label {bad[0][1]} outside 0..{len(classes) - 1} ({class_file}).")
    kept, skipped = _check_tree(name, root, domain, samples, check, on_error)
    ds = SketchPhotoDataset(
        root, kept, classes, domain=domain, name=name, split=split, transform=transform, on_error=on_error
    )
    ds.skipped = skipped
    _report(ds, emojisketch_expected(root).get((split, domain)), skipped, verbose)
    return ds


def emojisketch_expected(root: Path) -> dict[tuple[str, str], int]:
    """The image counts an EmojiSketch build recorded in its manifest, ``{(split, domain): n}`` (empty when
    there is no readable manifest): what loading checks against and ``data info`` shows as expected."""
    manifest = Path(root) / "manifest.json"
    try:
        counts = json.loads(manifest.read_text(encoding="utf-8")).get("counts", {})
        return {
            (split, domain): int(n)
            for split, per_domain in counts.items()
            if isinstance(per_domain, dict)
            for domain, n in per_domain.items()
            if domain in DOMAINS and n is not None
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return {}
