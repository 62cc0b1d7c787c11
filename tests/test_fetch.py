"""Fetchers against an HTTP server started on 127.0.0.1: resume, checksum, progress, split files, archives.

Faults of a download (a link cut on every request, a wrong file, a full disk) have their one home in
tests/test_faults.py.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dsn_lab.cli import main as cli_main
from dsn_lab.data import fetch, get_dataset
from dsn_lab.data.emoji_sources import NpmPackage, fetch_package
from dsn_lab.data.fetch import ChecksumError, DownloadError, download, import_archive, verify_file

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"reference split files not found at {REF}")


class _Server:
    """Serves ``files`` (URL path -> bytes, or files under ``directory``); can drop a transfer half-way."""

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        directory: Path | None = None,
        drop_first: set[str] = frozenset(),
        ranges: bool = True,
    ) -> None:
        self.files, self.directory = dict(files or {}), directory
        self.drop_pending = set(drop_first)
        self.ranges = ranges
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                path = self.path
                server.log.append((path, self.headers.get("Range")))
                data = server.files.get(path)
                if data is None and server.directory is not None:
                    candidate = server.directory / path.lstrip("/")
                    data = candidate.read_bytes() if candidate.is_file() else None
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in server.drop_pending:
                    server.drop_pending.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/conftest.py; servers set their mirror


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_interrupted_transfer_resumes_within_one_call(tmp_path):
    with _Server({"/f.bin": PAYLOAD}, drop_first={"/f.bin"}) as srv:
        out = download(
            srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, size=len(PAYLOAD), progress=False, chunk=4096
        )
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    assert srv.log[0] == ("/f.bin", None)
    assert srv.log[1] == ("/f.bin", f"bytes={len(PAYLOAD) // 2}-")  # only the missing half asked for


def test_server_without_range_support_restarts(tmp_path):
    part = tmp_path / "f.bin.part"
    part.write_bytes(b"garbage that must not survive")
    with _Server({"/f.bin": PAYLOAD}, ranges=False) as srv:
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_size_and_git_blob_pins(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"hello\n")
    verify_file(
        f, size=6, git_blob="ce013625030ba8dba906f756967f9e9ca394464a"
    )  # `git hash-object` of "hello\n"
    with pytest.raises(ChecksumError, match="git blob"):
        verify_file(f, git_blob="0" * 40)
    with pytest.raises(ChecksumError, match="size 6 bytes, expected 7"):
        verify_file(f, size=7)


def test_http_error_is_clear(tmp_path):
    with _Server({}) as srv:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(srv.url + "/missing.bin", tmp_path / "m.bin", progress=False)
    assert not (tmp_path / "m.bin").exists()


def test_progress_bar(tmp_path, capfd):
    with _Server({"/f.bin": PAYLOAD}) as srv:
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, desc="progress-probe", chunk=65536)
    err = capfd.readouterr().err
    assert "progress-probe" in err and "1.00M" in err


@needs_ref
def test_registry_pins_match_reference_copies():
    checked = 0
    for key, rf in fetch.SPLIT_FILES.items():
        copy = REF / key
        if copy.is_file():
            verify_file(copy, sha256=rf.sha256, size=rf.size, git_blob=rf.git_blob)
            checked += 1
        else:
            assert rf.sha256 is None and rf.git_blob  # only the files upstream snapshots lacked
    assert checked == len(fetch.SPLIT_FILES) - 3
    assert all(
        rf.url.startswith("https://raw.githubusercontent.com/") and fetch.REPOS[rf.source][1] in rf.url
        for rf in fetch.SPLIT_FILES.values()
    )


@needs_ref
def test_split_files_downloaded_from_mirror_and_cached(tmp_path, monkeypatch):
    with _Server(
        directory=REF, drop_first={"/sake/dataset/Sketchy/zeroshot1/all_photo_filelist_zero.txt"}
    ) as srv:
        monkeypatch.setenv("DSN_LAB_SPLITS_MIRROR", srv.url)
        ds = get_dataset(
            "sketchy-s1", tmp_path / "img", split="zero", domain="photo", check="none", verbose=False
        )
        assert len(ds) == 17101
        n_requests = len(srv.log)
        assert n_requests == 3  # class file, list file dropped once, then resumed
        again = get_dataset(
            "sketchy-s1", tmp_path / "img", split="zero", domain="photo", check="none", verbose=False
        )
        assert again.samples == ds.samples and len(srv.log) == n_requests  # served from the cache
        cached = next((tmp_path / "cache" / "splits").rglob("all_photo_filelist_zero.txt"))
        cached.write_text("corrupted")
        with pytest.warns(UserWarning, match="downloading again"):
            third = get_dataset(
                "sketchy-s1", tmp_path / "img", split="zero", domain="photo", check="none", verbose=False
            )
        assert third.samples == ds.samples


@needs_ref
def test_cli_fetch_splits_only(tmp_path, monkeypatch, capsys):
    with _Server(directory=REF) as srv:
        monkeypatch.setenv("DSN_LAB_SPLITS_MIRROR", srv.url)
        assert cli_main(["data", "fetch", "tuberlin", "--splits-only", "--root", str(tmp_path / "tu")]) == 1
        # the TU-Berlin photo train list is not in the reference copies (upstream snapshot lacks it)
        assert "ImageResized_ready_filelist_train.txt" in capsys.readouterr().out
        assert cli_main(["data", "fetch", "sketchy-s2", "--splits-only", "--root", str(tmp_path / "sk")]) == 0
    assert len(list((tmp_path / "cache" / "splits").rglob("*.txt"))) >= 6


# ---------------------------------------------------------------------------------------------------
# archives


def _sake_like_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dataset/Sketchy/256x256/sketch/tx_000000000000_ready/cup/a-1.png", b"png")
        zf.writestr("dataset/Sketchy/256x256/photo/tx_000000000000_ready/cup/a.jpg", b"jpg")
        zf.writestr("dataset/Sketchy/EXTEND_image_sketchy_ready/cup/ext_1.jpg", b"jpg")
        zf.writestr("dataset/TUBerlin/png_ready/alarm clock/1.png", b"png")
        zf.writestr("dataset/TUBerlin/ImageResized_ready/alarm clock/n1_1.JPEG", b"jpg")
    return path


def test_import_archive_zip_installs_layout_atomically(tmp_path):
    archive = _sake_like_zip(tmp_path / "dataset.zip")
    root = import_archive(archive, "sketchy-s1", tmp_path / "mine" / "sketchy", progress=False)
    assert (root / "256x256/sketch/tx_000000000000_ready/cup/a-1.png").read_bytes() == b"png"
    assert (root / "EXTEND_image_sketchy_ready/cup/ext_1.jpg").is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".import-")]  # temp folder gone
    tu = tmp_path / "data" / "tuberlin"  # the other dataset of the same archive, at its default root
    assert (tu / "png_ready/alarm clock/1.png").is_file()
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_archive(archive, "sketchy-s1", root, progress=False)
    assert import_archive(archive, "sketchy-s1", root, overwrite=True, progress=False) == root


def test_import_archive_tar_and_cli(tmp_path, capsys):
    archive = tmp_path / "QuickDraw.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("QuickDraw/sketches/palm tree/1.png", "QuickDraw/images/palm tree/image_1.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    assert (
        cli_main(["data", "import", str(archive), "--name", "quickdraw", "--root", str(tmp_path / "qd")]) == 0
    )
    assert (tmp_path / "qd/sketches/palm tree/1.png").is_file()
    assert "installed quickdraw" in capsys.readouterr().out


def test_import_archive_rejects_wrong_or_unsafe_archives(tmp_path):
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("stuff/readme.txt", b"x")
    with pytest.raises(ValueError, match="Expected layout") as err:
        import_archive(wrong, "tuberlin", tmp_path / "tu", progress=False)
    assert "png_ready/<class>" in str(err.value) and not (tmp_path / "tu").exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.txt", b"x")
    with pytest.raises(ValueError, match="outside"):
        import_archive(evil, "tuberlin", tmp_path / "tu", progress=False)
    assert not (tmp_path.parent / "escaped.txt").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_archive(tmp_path / "nope.zip", "tuberlin", progress=False)


def test_colab_helper_copies_then_extracts(tmp_path):
    (tmp_path / "drive").mkdir()
    archive = _sake_like_zip(tmp_path / "drive" / "TUBerlin_dataset.zip")
    root = fetch.colab_import_from_drive(
        archive, tmp_path / "tu", local_dir=tmp_path / "local", progress=False
    )
    assert (root / "png_ready/alarm clock/1.png").is_file()
    assert archive.is_file() and not list(
        (tmp_path / "local").iterdir()
    )  # local copy removed after extraction


def test_npm_tarballs_share_the_one_downloader(tmp_path, monkeypatch):
    """EmojiSketch's npm tarballs go through download(): a dropped transfer resumes with a Range request,
    the sha512 integrity pin is checked, a mismatch is the same ChecksumError, nothing lands at the final
    path."""
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(PAYLOAD).digest()).decode()
    pkg = NpmPackage("t", "@t/pkg", "1.0.0", integrity, "MIT", "t", "test", "iconify")
    with _Server({"/@t/pkg/-/pkg-1.0.0.tgz": PAYLOAD}, drop_first={"/@t/pkg/-/pkg-1.0.0.tgz"}) as srv:
        monkeypatch.setenv("DSN_LAB_NPM_REGISTRY", srv.url)
        out = fetch_package(pkg, tmp_path / "npm", use_npm=False, progress=False)
        assert out.read_bytes() == PAYLOAD and srv.log[1][1] == f"bytes={len(PAYLOAD) // 2}-"
        wrong = dataclasses.replace(pkg, version="1.0.1", integrity=integrity[:-4] + "AAA=")
        srv.files["/@t/pkg/-/pkg-1.0.1.tgz"] = PAYLOAD
        with pytest.raises(ChecksumError, match="integrity sha512-"):
            fetch_package(wrong, tmp_path / "npm", use_npm=False, progress=False)
    assert not (tmp_path / "npm" / wrong.tarball_name).exists()
    with _Server({}) as srv:  # not on the registry: the downloader's error, with the npm-specific fix
        monkeypatch.setenv("DSN_LAB_NPM_REGISTRY", srv.url)
        with pytest.raises(DownloadError, match=r"HTTP 404.*\n.*DSN_LAB_NPM_REGISTRY"):
            fetch_package(dataclasses.replace(pkg, version="9.9.9"), tmp_path / "npm", use_npm=False)
