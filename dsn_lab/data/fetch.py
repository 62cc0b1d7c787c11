"""The package's one downloader (resumes, verifies, lands atomically); official split files; image archives.

Why this module exists: the most common complaint about ZS-SBIR benchmarks is data (dead links, unnamed
splits). Every remote file we use is pinned (:mod:`.registry`, from ``dsn_lab/resources/``): the official
split lists by upstream commit and sha256 (or, for the few files no copy of which we could hash, the git blob
id the pinned commit records, which is just as binding), the image archives by URL, EmojiSketch's npm
tarballs by their sha512 integrity string. :func:`download` serves them all: a download goes to
``<dest>.part``, resumes with an HTTP ``Range`` request after an interruption, is verified, and only then
renamed to its final name, so a final path never holds a half-written or unverified file; a pin that does not
match raises the one :class:`ChecksumError`.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from dsn_lab._cache import cache_home
from dsn_lab.data.registry import LAYOUTS, REPOS, SPLIT_FILES, RemoteFile, default_root, layout_of

USER_AGENT = "dsn-lab/0.1 (+https://github.com/haowang1992/DSN)"
RETRY_BACKOFF = 1.0  # seconds before the first retry (doubling); tests set it to 0


class DownloadError(RuntimeError):
    """A transfer failed (network, HTTP status); partial data, if any, is kept in ``<dest>.part``."""


class ChecksumError(RuntimeError):
    """A file's size, sha256, git blob id or npm integrity string is not the pinned one."""


# ---------------------------------------------------------------------------------------------------
# paths


def splits_cache_dir() -> Path:
    return cache_home() / "splits"


def _cached_split_path(rf: RemoteFile, cache_dir: Path | None = None) -> Path:
    commit = REPOS[rf.source][1]
    return (cache_dir or splits_cache_dir()) / f"{rf.source}@{commit[:12]}" / rf.path


# ---------------------------------------------------------------------------------------------------
# verification


def file_digests(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) of a file, in one pass."""
    path = Path(path)
    size = path.stat().st_size
    sha = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % size)  # noqa: S324 - git's object id, not a security hash
    with open(path, "rb") as fh:
        for buf in iter(lambda: fh.read(1 << 20), b""):
            sha.update(buf)
            blob.update(buf)
    return size, sha.hexdigest(), blob.hexdigest()


INTEGRITY_ALGORITHMS = ("sha512", "sha384", "sha256", "sha1")  # what npm's dist.integrity may use


def integrity_of(path: Path, algorithm: str = "sha512") -> str:
    """The npm-style integrity string (``sha512-<base64 digest>``) of a file."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for buf in iter(lambda: fh.read(1 << 20), b""):
            h.update(buf)
    return f"{algorithm}-{base64.b64encode(h.digest()).decode('ascii')}"


def verify_file(
    path: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    git_blob: str | None = None,
    integrity: str | None = None,
    label: str | None = None,
) -> None:
    """Raise :class:`ChecksumError` naming the file and both values unless every given pin matches.

    ``integrity`` is an npm ``dist.integrity`` string, ``<algorithm>-<base64 digest>`` (``sha512-...``).
    """
    what = label or str(path)
    if (sha256, size, git_blob) != (None, None, None):
        got_size, got_sha, got_blob = file_digests(path)
        if size is not None and got_size != size:
            raise ChecksumError(f"{what}: size {got_size:,} bytes, expected {size:,} (pinned).")
        if sha256 is not None and got_sha != sha256.lower():
            raise ChecksumError(f"{what}: sha256 {got_sha}, expected {sha256} (pinned).")
        if git_blob is not None and got_blob != git_blob.lower():
            raise ChecksumError(f"{what}: git blob id {got_blob}, expected {git_blob} (pinned commit).")
    if integrity is not None:
        algorithm = integrity.split("-", 1)[0]
        if algorithm not in INTEGRITY_ALGORITHMS:
            raise ValueError(f"Unsupported integrity algorithm in {integrity!r}: use {INTEGRITY_ALGORITHMS}.")
        got = integrity_of(path, algorithm)
        if got != integrity:
            raise ChecksumError(f"{what}: integrity {got}, expected {integrity} (pinned).")


# ---------------------------------------------------------------------------------------------------
# download


_TRANSIENT = (OSError, http.client.HTTPException, socket.timeout)
# A write the disk refuses: retrying cannot help, the user has to make room (or point the cache elsewhere).
NO_SPACE_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if e)


def is_no_space(exc: BaseException) -> bool:
    """True for the OSError of a full disk, an exhausted quota or a file-size limit."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def _free_bytes(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free:,} bytes free there now"
    except OSError:
        return "free space unknown"


def no_space_message(what: str, target: Path, exc: OSError, need: int | None = None) -> str:
    """What happened and what to do when ``target``'s disk filled up while writing ``what``."""
    folder = target if target.is_dir() else target.parent
    needs = f"; {need:,} bytes are needed" if need else ""
    return (
        f"No space left while writing {what} ({exc.strerror}; {_free_bytes(folder)}{needs}). "
        f"Fix: free space on the disk holding {folder}, or choose a folder on another disk "
        "(--root, or $DSN_LAB_CACHE / $DSN_LAB_DATA), then run the same command again."
    )


def _transfer(
    url: str, part: Path, *, size: int | None, timeout: float, progress: bool, desc: str, chunk: int
) -> None:
    """Append the rest of ``url`` to ``part`` (Range request when ``part`` already holds data)."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start == size:
        return
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs from the registry
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # range not satisfiable: we already hold the whole file
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        content_range = response.headers.get("Content-Range", "")
        if start and (status != 206 or not content_range.startswith(f"bytes {start}-")):
            start = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        total = start + expected if expected is not None else size
        received = 0
        with (
            open(part, "ab" if start else "wb") as fh,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                buf = response.read(chunk)
                if not buf:
                    break
                fh.write(buf)
                received += len(buf)
                bar.update(len(buf))
        if expected is not None and received != expected:
            raise http.client.IncompleteRead(b"", expected - received)


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    size: int | None = None,
    git_blob: str | None = None,
    integrity: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    desc: str | None = None,
    backoff: float | None = None,
    chunk: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``: resumable, verified, atomic.

    Data goes to ``<dest>.part``; an interrupted transfer is retried ``retries`` times with an HTTP Range
    request for the missing bytes, and a later call resumes from the same ``.part``. Only a verified file
    is renamed to ``dest``; a file that fails its checksum is deleted, so ``dest`` never holds bad data.
    Returns ``dest``. With no pin given the file is accepted as is and its sha256 is printed. Pins:
    ``sha256``, ``size``, ``git_blob`` (split files), ``integrity`` (npm tarballs); see :func:`verify_file`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    pins = {"sha256": sha256, "size": size, "git_blob": git_blob, "integrity": integrity}
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            try:
                verify_file(dest, **pins)
                return dest
            except ChecksumError as exc:
                warnings.warn(f"{exc} Deleting it and downloading again.", stacklevel=2)
                dest.unlink()
        attempt = 0
        while True:
            try:
                _transfer(
                    url,
                    part,
                    size=size,
                    timeout=timeout,
                    progress=progress,
                    desc=desc or dest.name,
                    chunk=chunk,
                )
                break
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code not in (408, 429):
                    raise DownloadError(
                        f"Downloading {url} failed: HTTP {exc.code} {exc.reason}. "
                        "Check the URL, or get the file by other means and import it."
                    ) from exc
                err: BaseException = exc
            except _TRANSIENT as exc:
                if is_no_space(exc):  # a full disk: retrying cannot help
                    held = part.stat().st_size if part.exists() else 0
                    raise DownloadError(
                        no_space_message(f"{part} (downloading {url})", part, exc, size)
                        + f" The {held:,} bytes already downloaded stay in {part} and are resumed from "
                        f"(delete it to give the space back); nothing was written to {dest}."
                    ) from exc
                err = exc
            attempt += 1
            held = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DownloadError(
                    f"Downloading {url} was interrupted ({type(err).__name__}: {err}) after {retries} "
                    + (
                        f"retries; {held:,} bytes are kept in {part}. Run the same command again to resume."
                        if held
                        else "retries; nothing was downloaded. Check the connection and try again."
                    )
                ) from err
            time.sleep(min((RETRY_BACKOFF if backoff is None else backoff) * 2 ** (attempt - 1), 30.0))
        try:
            verify_file(part, label=f"Download of {url}", **pins)
        except ChecksumError as exc:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{exc} The bad download was deleted; nothing was written to {dest}. "
                "If the upstream file changed, report it; otherwise try again."
            ) from None
        if not any(pins.values()):
            got = file_digests(part)
            print(f"[dsn_lab] {dest.name}: {got[0]:,} bytes, sha256 {got[1]} (not pinned; recorded here)")
        os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------------
# split files


def _candidate_paths(base: Path, rf: RemoteFile) -> Iterable[Path]:
    parts = rf.path.split("/")
    yield base / rf.source / rf.path  # a mirror laid out like ../shared/reference
    yield base / rf.path  # a clone of the upstream repository
    yield base / "/".join(parts[1:])  # its dataset/ folder: Sketchy/zeroshot1/...
    yield base / "/".join(parts[-2:])  # a dataset root: zeroshot1/...
    yield base / parts[-1]  # a flat folder of list files


def split_mirror_url(rf: RemoteFile, mirror: str | None = None) -> str:
    """``$DSN_LAB_SPLITS_MIRROR/<source>/<path>`` when a mirror is set, else the pinned GitHub raw URL."""
    base = mirror or os.environ.get("DSN_LAB_SPLITS_MIRROR")
    return f"{base.rstrip('/')}/{rf.key}" if base else rf.url


def ensure_split_file(
    key: str,
    *,
    splits_dir: Path | str | None = None,
    roots: Iterable[Path] = (),
    cache_dir: Path | None = None,
    mirror: str | None = None,
    download_ok: bool = True,
    progress: bool = False,
) -> Path:
    """Path of a verified copy of the official split file ``key`` (``<source>/<path>``).

    Looked for, in order: ``splits_dir`` (or ``$DSN_LAB_SPLITS``), the list folder inside the dataset root
    (SAKE's archive ships its lists there), the user cache; else downloaded from the pinned upstream commit
    (or ``$DSN_LAB_SPLITS_MIRROR``) into the cache. Every copy is checked against the pinned hash.
    """
    rf = SPLIT_FILES[key]
    pins = {"sha256": rf.sha256, "size": rf.size, "git_blob": rf.git_blob}
    searched: list[str] = []
    explicit = splits_dir if splits_dir is not None else os.environ.get("DSN_LAB_SPLITS")
    if explicit:
        base = Path(explicit).expanduser()
        for cand in _candidate_paths(base, rf):
            if cand.is_file():
                try:
                    verify_file(cand, **pins)
                except ChecksumError as exc:
                    raise ChecksumError(
                        f"{exc} This copy was found in the split folder {base}; replace it "
                        f"with the file at {rf.url}."
                    ) from None
                return cand
        searched.append(f"{base} (as <source>/<path>, <path>, or the bare file name)")
    for root in roots:
        cand = Path(root) / "/".join(rf.path.split("/")[-2:])
        searched.append(str(cand))
        if cand.is_file():
            try:
                verify_file(cand, **pins)
                return cand
            except ChecksumError as exc:
                warnings.warn(f"Ignoring the list file in the dataset folder: {exc}", stacklevel=2)
    cached = _cached_split_path(rf, cache_dir)
    searched.append(str(cached))
    if cached.is_file():
        return download(split_mirror_url(rf, mirror), cached, progress=progress, **pins)
    if not download_ok:
        raise FileNotFoundError(
            f"Official split file {rf.key} not found. Looked in: {'; '.join(searched)}. "
            "Fix: allow the download "
            f"(from {rf.url}), or point splits_dir= / $DSN_LAB_SPLITS at a folder holding it."
        )
    url = split_mirror_url(rf, mirror)
    try:
        return download(url, cached, progress=progress, desc=Path(rf.path).name, **pins)
    except DownloadError as exc:
        raise DownloadError(
            f"{exc}\nThe official split file {rf.key} is not available locally either (looked in: "
            f"{'; '.join(searched)}). Fix: when online, run "
            "`python -m dsn_lab data fetch NAME --splits-only`; "
            f"offline, copy the file from {rf.url} into one of those places, or set $DSN_LAB_SPLITS to a "
            "clone of the upstream repository."
        ) from None


# ---------------------------------------------------------------------------------------------------
# archives


def _safe_members_zip(zf: zipfile.ZipFile, dest: Path) -> list[zipfile.ZipInfo]:
    out = []
    root = dest.resolve()
    for info in zf.infolist():
        target = (dest / info.filename).resolve()
        if not str(target).startswith(str(root) + os.sep) and target != root:
            raise ValueError(f"Archive member {info.filename!r} would be written outside {dest}; refusing.")
        out.append(info)
    return out


def extract_archive(archive: Path | str, dest: Path | str, *, progress: bool = True) -> Path:
    """Extract a .zip or .tar(.gz/.bz2/.xz) into ``dest`` (refusing members that escape it)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _extract(archive, dest, progress)
    except (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(
            f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}). Fix: delete it and download "
            "it again (an interrupted copy or download is the usual cause), then import it again."
        ) from exc
    return dest


def _extract(archive: Path, dest: Path, progress: bool) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = _safe_members_zip(zf, dest)
            for info in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
                zf.extract(info, dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
                tf.extract(member, dest, filter="data")
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive (is the download complete?).")


def _find_layout_root(tree: Path, marker_dirs: tuple[str, ...], max_depth: int = 4) -> Path | None:
    """The folder under ``tree`` (breadth first) that holds every ``marker_dirs`` entry."""
    frontier = [tree]
    for _ in range(max_depth + 1):
        nxt = []
        for folder in frontier:
            if all((folder / m).is_dir() for m in marker_dirs):
                return folder
            nxt.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
        frontier = nxt
    return None


def import_archive(
    archive: Path | str,
    name: str,
    root: Path | str | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Install a dataset from an archive you have ("bring your own archive"); returns its root.

    The archive is extracted into a temporary folder next to the final root, the dataset folder is found in
    it by its layout, and moved into place with one rename. Other datasets found in the same archive (SAKE's
    zip holds Sketchy and TU-Berlin) are installed too when their default root is still empty.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise FileNotFoundError(
            f"Archive {archive} does not exist. Fix: give the path of the downloaded file."
        )
    wanted = layout_of(name)
    root = Path(root).expanduser() if root is not None else default_root(name)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{root} already exists and is not empty. Fix: pass overwrite=True "
            "(CLI: --overwrite) or choose another --root."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".import-", dir=root.parent) as tmp:
        tree = Path(tmp) / "x"  # never move the temporary folder itself
        try:
            extract_archive(archive, tree, progress=progress)
        except OSError as exc:
            if not is_no_space(exc):
                raise
            raise OSError(
                exc.errno,
                no_space_message(f"the files of {archive.name}", root.parent, exc)
                + f" The partly extracted files were removed; nothing was written to {root}.",
            ) from exc
        found = _find_layout_root(tree, LAYOUTS[wanted].markers)
        if found is None:
            raise ValueError(
                f"{archive} holds no {name} dataset: no folder with {', '.join(LAYOUTS[wanted].markers)} "
                f"found.\nExpected layout:\n{LAYOUTS[wanted].tree}"
            )
        if root.exists():
            shutil.rmtree(root) if any(root.iterdir()) else root.rmdir()
        os.replace(found, root)
        for other, layout in LAYOUTS.items():
            if other == wanted or not layout.markers:
                continue
            extra = _find_layout_root(tree, layout.markers)
            other_root = default_root(other)
            if extra is not None and not (other_root.exists() and any(other_root.iterdir())):
                other_root.parent.mkdir(parents=True, exist_ok=True)
                if other_root.exists():
                    other_root.rmdir()
                try:
                    os.replace(extra, other_root)
                    print(f"[dsn_lab] also installed {other} from the same archive at {other_root}")
                except OSError:  # another filesystem: leave it
                    pass
    print(f"[dsn_lab] installed {name} at {root}")
    return root


def colab_import_from_drive(
    archive: str | Path,
    dest: str | Path | None = None,
    *,
    name: str | None = None,
    local_dir: str | Path = "/content/dsn_lab_archives",
    progress: bool = True,
) -> Path:
    """Colab: copy ONE archive from Google Drive to local disk and extract it there.

    Reading tens of thousands of small images from a mounted Drive is far slower than one sequential copy.
    ``archive`` is a path under ``/content/drive`` (Drive is mounted when it is not yet); ``name`` is the
    dataset name (guessed from the file name when omitted); ``dest`` the dataset root (default root if None).
    """
    archive = Path(archive)
    if str(archive).startswith("/content/drive") and not Path("/content/drive").exists():
        try:  # lazy: google.colab exists only inside Colab
            from google.colab import drive  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RuntimeError("Not running in Colab: give a local archive path instead.") from exc
        drive.mount("/content/drive")
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} not found. Fix: check the path in the Drive file browser.")
    if name is None:
        lowered = archive.name.lower()
        guesses = [n for n in ("quickdraw", "tuberlin", "sketchy") if n in lowered.replace("-", "")]
        if not guesses:
            raise ValueError(f"Cannot tell the dataset from {archive.name!r}: pass name=.")
        name = {"sketchy": "sketchy-s1"}.get(guesses[0], guesses[0])
    local = Path(local_dir) / archive.name
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".part")
    with (
        open(archive, "rb") as src,
        open(tmp, "wb") as out,
        tqdm(
            total=archive.stat().st_size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"copy {archive.name}",
            disable=not progress,
        ) as bar,
    ):
        for buf in iter(lambda: src.read(8 << 20), b""):
            out.write(buf)
            bar.update(len(buf))
    os.replace(tmp, local)
    try:
        return import_archive(local, name, dest, progress=progress)
    finally:
        local.unlink(missing_ok=True)
