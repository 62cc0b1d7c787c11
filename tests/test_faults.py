"""Reliability: real faults (kills, cut connections, full disks, bad files) and what the package does.

Each test's docstring has two paragraphs: the fault, then what the package does about it.
``scripts/failure_modes_table.py`` turns them into the README's "Failure modes" table, so keep that form.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from torch import nn

from dsn_lab.data import (
    DatasetImageError,
    DatasetLayoutError,
    fetch,
    get_dataset,
)
from dsn_lab.data.batching import PairedLoader
from dsn_lab.data.fetch import ChecksumError, DownloadError, download, import_archive
from dsn_lab.data.fixtures import make_synthetic_emojisketch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faultlib  # noqa: E402
from faultlib import FaultyServer, tiny_tmpfs  # noqa: E402

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
needs_ref = pytest.mark.skipif(
    not REF.is_dir(), reason=f"reference split files not found at {REF} (a user's clone has none)"
)


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/conftest.py


@pytest.fixture
def synth(tmp_path) -> Path:
    return make_synthetic_emojisketch(tmp_path / "synth")


def _quiet_dataset(root: Path, split: str = "train", domain: str = "photo", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_dataset("emojisketch", root, split=split, domain=domain, verbose=False, **kw)


# ===================================================================================================
# corrupted inputs
# ===================================================================================================
def test_truncated_image_names_path_and_fix(synth):
    """A training image cut short (half of a PNG on disk), read through the paired loader's worker process.

    The error names the file, says "truncated", and gives two fixes (re-extract, or on_error='skip');
    with on_error='skip' the image is replaced by the next readable one and listed in `dataset.skipped`.
    """
    ds = _quiet_dataset(synth)
    victim = ds.path(0)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    sketches = _quiet_dataset(synth, domain="sketch")
    loader = PairedLoader(sketches, ds, 2, len(ds), augment_views=1, image_size=32, num_workers=1, seed=0)
    with pytest.raises(DatasetImageError) as err:
        next(iter(loader))
    msg = str(err.value)
    assert str(victim) in msg and "truncated" in msg and "on_error='skip'" in msg and "re-extract" in msg
    lenient = _quiet_dataset(synth, on_error="skip")
    with pytest.warns(UserWarning, match=r"skipping .*truncated"):
        image, label, _ = lenient[0]
    assert image.size == (32, 32) and label == ds.samples[1][1]
    assert [rel for rel, _ in lenient.skipped] == [ds.samples[0][0]]
    # an up-front decode check finds it before training starts, and reports it when asked to skip
    with pytest.raises(DatasetImageError, match="truncated"):
        _quiet_dataset(synth, check="decode")
    checked = _quiet_dataset(synth, check="decode", on_error="skip")
    assert len(checked) == len(ds) - 1 and checked.skipped[0][0] == ds.samples[0][0]


def test_non_image_with_image_extension(synth):
    """A file with a .png name that holds an HTML error page (what a failed download often saves).

    The error names the file and says it cannot be identified as an image; with on_error='skip' it is
    skipped, reported by a warning and in `dataset.skipped`, and the other images still load.
    """
    ds = _quiet_dataset(synth, domain="sketch")
    victim = ds.path(3)
    victim.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(DatasetImageError) as err:
        ds[3]
    assert str(victim) in str(err.value) and "cannot identify image" in str(err.value)
    assert ds[2][1] == ds.samples[2][1]  # the neighbours are unaffected
    with pytest.warns(UserWarning, match=r"skipped 1 listed image.*" + victim.name):
        checked = get_dataset(
            "emojisketch",
            synth,
            split="train",
            domain="sketch",
            check="decode",
            on_error="skip",
            verbose=False,
        )
    assert ds.samples[3] not in checked.samples and len(checked) == len(ds) - 1


def test_empty_class_folder(synth):
    """A class folder that exists but is empty (an extraction that stopped early).

    Loading fails before training with the count of missing images, example paths, the expected layout and
    the fix; on_error='skip' loads the other classes and reports the skipped images by a warning.
    """
    ds = _quiet_dataset(synth)
    cname = ds.classes[1]
    folder = synth / "photo" / cname
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(DatasetImageError) as err:
        _quiet_dataset(synth)
    msg = str(err.value)
    assert "3 listed emojisketch photo image(s) missing" in msg and str(folder / f"{cname}_0.png") in msg
    assert "Expected layout" in msg and "python -m dsn_lab data fetch emojisketch" in msg
    assert "on_error='skip'" in msg
    with pytest.warns(UserWarning, match="skipped 3 listed image"):
        lenient = get_dataset(
            "emojisketch", synth, split="train", domain="photo", on_error="skip", verbose=False
        )
    assert len(lenient) == len(ds) - 3 and 1 not in lenient.labels
    assert {why for _, why in lenient.skipped} == {"file not found"}


def test_missing_split_file_emojisketch(synth):
    """One split list of an EmojiSketch folder deleted (splits/photo_val.txt).

    The error names the missing file (not just "no such split"), shows the layout and says how to rebuild;
    the splits that are complete still load.
    """
    (synth / "splits" / "photo_val.txt").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        get_dataset("emojisketch", synth, split="val", domain="photo", verbose=False)
    msg = str(err.value)
    assert str(synth / "splits" / "photo_val.txt") in msg and "is missing" in msg
    assert "splits/<domain>_<split>.txt" in msg and "python -m dsn_lab data fetch emojisketch" in msg
    assert len(_quiet_dataset(synth, split="val", domain="sketch")) == 6


def test_missing_official_split_file_offline(tmp_path):
    """The official split list of a real benchmark is nowhere on disk and the network is unreachable.

    The error says the file could not be downloaded, lists every place searched, and gives the offline fix
    ($DSN_LAB_SPLITS or copying the file from its pinned URL); nothing is left in the cache.
    """
    with pytest.raises(DownloadError) as err:
        get_dataset("sketchy-s1", tmp_path / "sketchy", split="zero", check="none", verbose=False)
    msg = str(err.value)
    assert "sketch_tx_000000000000_ready_filelist_zero.txt" in msg and "looked in" in msg
    assert "DSN_LAB_SPLITS" in msg
    assert "raw.githubusercontent.com/qliu24/SAKE/" in msg
    cached = list((tmp_path / "cache").rglob("*.txt")) if (tmp_path / "cache").exists() else []
    assert cached == []


def test_wrong_dataset_root(synth, tmp_path):
    """The dataset root points at the wrong folder: a typo, one level too high, or another dataset.

    Each case fails before any training with the path tried, the expected folder tree and the command that
    installs the dataset there.
    """
    wrong = [tmp_path / "synht", synth.parent, synth / "photo"]
    for root in wrong:
        with pytest.raises(DatasetLayoutError) as err:
            get_dataset("emojisketch", root, split="train", domain="sketch", verbose=False)
        msg = str(err.value)
        assert f"{root} is not an EmojiSketch folder" in msg
        assert "├── sketch/<class>/<file>.png" in msg and f"--root {root}" in msg


@needs_ref
def test_wrong_dataset_root_real_benchmark(tmp_path):
    """A Sketchy root that exists but holds something else (the zip's parent folder, say).

    The error names the missing image folder under that root, shows the Sketchy tree and the fetch/import
    commands.
    """
    root = tmp_path / "downloads"
    (root / "dataset").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError) as err:
        get_dataset("sketchy-s1", root, split="zero", domain="photo", splits_dir=REF, verbose=False)
    msg = str(err.value)
    assert str(root / "256x256/photo/tx_000000000000_ready") in msg and "EXTEND_image_sketchy_ready" in msg
    assert "python -m dsn_lab data import ARCHIVE --name sketchy-s1" in msg


# ===================================================================================================
# downloads
# ===================================================================================================
PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def test_download_connection_cut_every_time_then_resumed(tmp_path):
    """The server closes the connection after 50 kB on every request (a flaky link).

    Each retry resumes with an HTTP Range request; after the retries the error says how many bytes are kept
    in `<file>.part` and to run the command again; nothing is at the final path. The next call, on a good
    link, asks only for the missing bytes and ends with the exact, verified file.
    """
    dest = tmp_path / "dl" / "archive.zip"
    with FaultyServer({"/a.zip": PAYLOAD}, cut_after=50_000, cut_times=-1) as srv:
        with pytest.raises(DownloadError) as err:
            download(srv.url + "/a.zip", dest, sha256=PAYLOAD_SHA, retries=2, progress=False)
        assert [r for _, r in srv.log] == [None, "bytes=50000-", "bytes=100000-"]
    msg = str(err.value)
    assert "150,000 bytes are kept" in msg and str(dest) + ".part" in msg
    assert "run the same command again" in msg.lower()
    assert not dest.exists() and _leftovers(dest.parent) == ["archive.zip.part"]
    assert (dest.parent / "archive.zip.part").stat().st_size == 150_000
    with FaultyServer({"/a.zip": PAYLOAD}) as good:
        assert download(good.url + "/a.zip", dest, sha256=PAYLOAD_SHA, progress=False) == dest
        assert [r for _, r in good.log] == ["bytes=150000-"]
    assert dest.read_bytes() == PAYLOAD and _leftovers(dest.parent) == ["archive.zip"]


def test_download_cut_without_content_length(tmp_path):
    """The connection ends early and the server sent no Content-Length, so the cut looks like a normal end.

    The pinned sha256 catches it: a ChecksumError naming both hashes, the bad bytes deleted, nothing at the
    final path.
    """
    dest = tmp_path / "dl" / "list.txt"
    with FaultyServer({"/l": PAYLOAD}, cut_after=10_000, cut_times=-1, send_length=False) as srv:
        with pytest.raises(ChecksumError) as err:
            download(srv.url + "/l", dest, sha256=PAYLOAD_SHA, retries=1, progress=False)
    msg = str(err.value)
    assert PAYLOAD_SHA in msg and "nothing was written to" in msg and str(dest) in msg
    assert _leftovers(dest.parent) == []


def test_download_checksum_mismatch(tmp_path):
    """The server delivers a complete file with different content (an upstream change, a captive portal).

    ChecksumError with the expected and received sha256; the bad download is deleted and nothing is written
    at the final path; a stale file already at the final path is replaced only by verified data.
    """
    other = PAYLOAD[::-1]
    dest = tmp_path / "dl" / "f.bin"
    with FaultyServer({"/f": other}) as srv:
        with pytest.raises(ChecksumError) as err:
            download(srv.url + "/f", dest, sha256=PAYLOAD_SHA, progress=False)
    msg = str(err.value)
    assert PAYLOAD_SHA in msg and hashlib.sha256(other).hexdigest() in msg and "deleted" in msg
    assert f"nothing was written to {dest}" in msg and _leftovers(dest.parent) == []
    dest.write_bytes(other)  # a bad file already at the final path
    with FaultyServer({"/f": PAYLOAD}) as good, pytest.warns(UserWarning, match="downloading again"):
        download(good.url + "/f", dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def _assert_disk_full_message(msg: str, dest: Path) -> None:
    assert "No space left" in msg and "free space" in msg.lower() and "DSN_LAB_CACHE" in msg
    assert f"nothing was written to {dest}" in msg


def test_download_disk_full_tmpfs(tmp_path):
    """The disk fills up during a download (a real 128 KiB tmpfs; skipped where mounting is not allowed).

    One DownloadError, no pointless network retries, saying the disk is full, where, and what to do (free
    space or another folder, then run again: it resumes); nothing at the final path.
    """
    with tiny_tmpfs(tmp_path / "mnt", 128) as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root); the size-limited writer test covers this")
        dest = mnt / "archive.zip"
        with FaultyServer({"/a": PAYLOAD}) as srv:
            with pytest.raises(DownloadError) as err:
                download(srv.url + "/a", dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
            assert len(srv.log) == 1
        _assert_disk_full_message(str(err.value), dest)
        assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == 28
        assert f"{len(PAYLOAD):,} bytes are needed" in str(err.value)
        assert not dest.exists()


def test_download_disk_full_size_limited_writer(tmp_path, monkeypatch):
    """The disk fills up after 64 KiB (ENOSPC raised by a size-limited file object: works without root).

    Same as on a real full disk: one clear DownloadError, the 64 KiB kept in `.part` for resuming, nothing
    at the final path; once space is back the same call resumes from byte 65,536.
    """
    folder = tmp_path / "dl"
    dest = folder / "archive.zip"
    monkeypatch.setattr(fetch, "open", faultlib.size_limited_open(65_536, folder), raising=False)
    with FaultyServer({"/a": PAYLOAD}) as srv:
        with pytest.raises(DownloadError) as err:
            download(srv.url + "/a", dest, sha256=PAYLOAD_SHA, progress=False, chunk=8192)
        assert len(srv.log) == 1
        _assert_disk_full_message(str(err.value), dest)
        assert "65,536 bytes already downloaded stay in" in str(err.value)
        assert _leftovers(folder) == ["archive.zip.part"]
        monkeypatch.undo()
        monkeypatch.setattr(fetch, "RETRY_BACKOFF", 0.0)
        download(srv.url + "/a", dest, sha256=PAYLOAD_SHA, progress=False)
        assert srv.log[-1][1] == "bytes=65536-"
    assert dest.read_bytes() == PAYLOAD


def _quickdraw_tgz(path: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as tf:
        for i in range(n):
            for name in (f"QuickDraw/sketches/palm/{i}.png", f"QuickDraw/images/palm/image_{i}.jpg"):
                data = rng.integers(0, 256, 8_000, dtype=np.uint8).tobytes()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_truncated_archive_import(tmp_path):
    """Importing a .tar.gz that was copied or downloaded only half-way.

    ValueError naming the archive, "truncated or corrupt", and the fix (download it again); the partly
    extracted files are removed and nothing exists at the dataset root.
    """
    full = _quickdraw_tgz(tmp_path / "QuickDraw.tar.gz")
    cut = tmp_path / "QuickDraw-cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    root = tmp_path / "data" / "quickdraw"
    with pytest.raises(ValueError) as err:
        import_archive(cut, "quickdraw", root, progress=False)
    msg = str(err.value)
    assert str(cut) in msg and "truncated or corrupt" in msg and "download it again" in msg
    assert not root.exists()
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".import-")]


def test_import_disk_full_tmpfs(tmp_path):
    """The disk fills up while an archive is extracted (a real 256 KiB tmpfs; skipped where not mountable).

    OSError (ENOSPC) saying the disk is full and what to do; the partly extracted files are removed, so
    the space is given back and nothing half-installed sits at the dataset root.
    """
    archive = _quickdraw_tgz(tmp_path / "QuickDraw.tar.gz")
    with tiny_tmpfs(tmp_path / "mnt", 256) as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        root = mnt / "quickdraw"
        with pytest.raises(OSError) as err:
            import_archive(archive, "quickdraw", root, progress=False)
        assert err.value.errno == 28
        msg = str(err.value)
        assert "No space left" in msg and "free space" in msg.lower()
        assert f"nothing was written to {root}" in msg
        assert list(mnt.iterdir()) == []


# ===================================================================================================
# checkpoints (files)
# ===================================================================================================
def _ours(path: Path, **extra) -> Path:
    """A small but well-formed dsn_lab checkpoint, written by the package's own save_checkpoint."""
    from dsn_lab.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
    from dsn_lab.config import get_preset

    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": get_preset("cpu-quick").to_json(),
        "model": {"w": torch.arange(50_000, dtype=torch.float32)},
        **extra,
    }
    return save_checkpoint(payload, path)


@pytest.mark.parametrize(
    "keep",
    [
        0.5,
        100,
        0,
    ],
    ids=["half", "100-bytes", "empty"],
)
def test_truncated_checkpoint_refused(tmp_path, keep):
    """A checkpoint file cut short or empty (a copy to Drive that stopped, a crash in a non-atomic writer).

    CheckpointError naming the file, "truncated or corrupted", and the fix (best.pt, an earlier copy, or
    train again), instead of a raw unpickling traceback.
    """
    from dsn_lab.checkpoint import CheckpointError, load_checkpoint

    path = _ours(tmp_path / "last.pt")
    assert load_checkpoint(path)["model"]["w"].shape == (50_000,)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated or corrupted" in msg and "train again" in msg


def test_malicious_pickle_refused_without_running_code(tmp_path):
    """A .pt file whose pickle runs code when loaded the unsafe way (weights_only=False).

    Loading goes through torch.load(weights_only=True): the file is refused with a CheckpointError saying
    why (Python objects other than tensors) and the code never runs.
    """
    from dsn_lab.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"
    path = faultlib.write_malicious_checkpoint(tmp_path / "last.pt", marker)
    torch.load(path, weights_only=False)  # the payload is live: unsafe loading runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "weights_only=True" in msg and "refused" in msg
    assert not marker.exists()


def test_foreign_checkpoint_refused(tmp_path):
    """A valid PyTorch file from another project (a plain state dict), or a dsn_lab file from the future.

    CheckpointError: "not a dsn_lab checkpoint" with what to pass instead; a newer format version asks to
    upgrade dsn_lab.
    """
    from dsn_lab.checkpoint import CheckpointError, load_checkpoint

    path = faultlib.write_foreign_pickle(tmp_path / "vgg16.pth")
    with pytest.raises(CheckpointError, match="is not a dsn_lab checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    future = _ours(tmp_path / "future.pt", version=99)
    with pytest.raises(CheckpointError, match="newer dsn_lab"):
        load_checkpoint(future)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


# ===================================================================================================
# training runs (real training on the synthetic fixture)
# ===================================================================================================
def _needs_model() -> None:
    pytest.importorskip("dsn_lab.model", reason="dsn_lab.model is not written yet")


def _cfg(data_root: Path, out: Path, **kw):
    from dsn_lab.config import get_preset

    base = dict(
        data_root=str(data_root),
        output_dir=str(out),
        deterministic=True,
        use_kd=False,
        teacher=False,
        epochs=2,
        steps_per_epoch=4,
        checkpoint_every=2,
        image_size=32,
        log_every=1,
    )
    base.update(kw)
    return get_preset("cpu-quick", **base)


DRIVER = r'''
"""Train once from a JSON config (argv[1]); optional pause in the middle of the Nth atomic write of a file."""
import json, os, sys, time
from pathlib import Path

spec = os.environ.get("FAULT_PAUSE_WRITE")  # "<file name>:<n>:<marker path>"
if spec:
    name, nth, marker = spec.split(":", 2)
    real_fdopen, seen = os.fdopen, [0]

    class HalfThenPause:
        def __init__(self, fh):
            self.fh = fh
        def write(self, data):
            self.fh.write(data[: len(data) // 2]); self.fh.flush(); os.fsync(self.fh.fileno())
            # atomically: the test kills us as soon as the marker exists and then reads the size from it
            Path(marker + ".tmp").write_text(str(len(data))); os.replace(marker + ".tmp", marker)
            time.sleep(600)
        def __getattr__(self, attr):
            return getattr(self.fh, attr)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.fh.close()

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}.tmp-"):
            seen[0] += 1
            if seen[0] == int(nth):
                return HalfThenPause(fh)
        return fh

    os.fdopen = fdopen

from dsn_lab.config import DSNConfig
from dsn_lab.train import train

args = json.loads(sys.argv[1])
train(DSNConfig.from_dict(args["cfg"]), resume=args["resume"], verbose=False)
print("TRAINING DONE")
'''


def _spawn(tmp: Path, cfg, *, resume: bool, **env: str) -> subprocess.Popen:
    driver = tmp / "driver.py"
    if not driver.exists():
        driver.write_text(DRIVER)
    arg = json.dumps({"cfg": cfg.to_dict(), "resume": resume})
    return subprocess.Popen(
        [sys.executable, str(driver), arg],
        env=faultlib.python_env(**env),
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "TRAINING DONE" in out, out[-3000:]
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from dsn_lab.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    assert ckpt["position"]["finished"], ckpt["position"]
    return {
        **{f"model.{k}": v for k, v in ckpt["model"].items()},
        **{f"memory.{k}": v for k, v in ckpt["memory"].items()},
    }


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, last.pt) of one uninterrupted run in a child process; built once for all xdist workers."""
    _needs_model()
    shared = tmp_path_factory.getbasetemp().parent / "dsn_faults_reference"
    shared.mkdir(parents=True, exist_ok=True)
    with FileLock(str(shared) + ".lock"):
        data = make_synthetic_emojisketch(shared / "data", per_class=4)
        last = shared / "run" / "last.pt"
        if not (shared / "run" / "DONE").exists():
            _finish(_spawn(shared, _cfg(data, shared / "run"), resume=False))
            (shared / "run" / "DONE").write_text("ok")
    return data, last


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc are Linux features")
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(reference_run, tmp_path):
    """The training process is killed with SIGKILL in the middle of an epoch (a Colab runtime reset).

    `train(resume=True)` continues from the last atomic checkpoint (model, optimiser, memory bank, RNG
    states, data position) and ends with weights bit-for-bit equal to an uninterrupted run (deterministic
    CPU mode).
    """
    from dsn_lab.checkpoint import load_checkpoint

    data, ref_last = reference_run
    cfg = _cfg(data, tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    proc = _spawn(tmp_path, cfg, resume=False)
    assert faultlib.kill_when(proc, last.exists), proc.stdout.read()[-3000:]
    pos = load_checkpoint(last)["position"]
    assert (pos["epoch"], pos["batch"], pos["finished"]) == (0, 2, False)  # killed mid-epoch 1, after step 2
    out = _finish(_spawn(tmp_path, cfg, resume=True))
    assert "TRAINING DONE" in out
    _assert_same_weights(last, ref_last)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc are Linux features")
def test_sigkill_during_checkpoint_write_keeps_previous(reference_run, tmp_path):
    """The process is killed while last.pt is being written (half of the new file on disk).

    The previous last.pt is untouched and loads; the half-written temporary file never replaced it and is
    removed on the next start; resuming from the previous checkpoint ends equal to an uninterrupted run.
    """
    from dsn_lab.checkpoint import load_checkpoint

    data, ref_last = reference_run
    cfg = _cfg(data, tmp_path / "run")
    run = tmp_path / "run"
    marker = tmp_path / "paused"
    proc = _spawn(tmp_path, cfg, resume=False, FAULT_PAUSE_WRITE=f"last.pt:2:{marker}")
    assert faultlib.kill_when(proc, marker.exists), proc.stdout.read()[-3000:]
    partial = list(run.glob(".last.pt.tmp-*"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < int(marker.read_text())
    pos = load_checkpoint(run / "last.pt")["position"]  # the previous checkpoint, intact
    assert (pos["epoch"], pos["batch"]) == (0, 2)
    _finish(_spawn(tmp_path, cfg, resume=True))
    assert not list(run.glob(".last.pt.tmp-*"))
    _assert_same_weights(run / "last.pt", ref_last)


@pytest.fixture
def small_run(tmp_path):
    """Config of an in-process run on the synthetic fixture: 1 epoch of 4 steps, a checkpoint per step."""
    _needs_model()
    data = make_synthetic_emojisketch(tmp_path / "data")
    return _cfg(data, tmp_path / "run", epochs=1, checkpoint_every=1)


@pytest.mark.parametrize("where, term", [("step", "memory"), ("loss", "contrastive")])
def test_nan_loss_stops_naming_the_term(small_run, monkeypatch, where, term):
    """One loss term turns NaN at the 3rd step: the real step's memory term replaced by NaN, or the SupCon
    loss module itself returning NaN (the step has to find the term and name it "contrastive").

    TrainingDivergedError naming the term, the epoch, batch and optimiser step, the last good checkpoint
    and the fixes; no update is applied with the NaN; last.pt stays the checkpoint of step 2 with finite
    weights; the history ends with a "diverged" row; resume=True continues from there.
    """
    from dsn_lab import losses
    from dsn_lab import train as train_mod
    from dsn_lab.checkpoint import load_checkpoint
    from dsn_lab.train import TrainingDivergedError, load_history, train

    owner, name = (train_mod, "dsn_step") if where == "step" else (losses.SupConLoss, "forward")
    real = getattr(owner, name)
    nan = faultlib.nan_in_step(real, "memory", at=3) if where == "step" else faultlib.nan_on_call(real, at=3)
    monkeypatch.setattr(owner, name, nan)
    with pytest.raises(TrainingDivergedError) as err:
        train(small_run, verbose=False)
    msg = str(err.value)
    last = Path(small_run.output_dir) / "last.pt"
    assert f"'{term}' = nan is not finite at epoch 1, batch 3 (optimiser step 2)" in msg
    assert f"the last good checkpoint is {last}" in msg and "lower lr" in msg
    ckpt = load_checkpoint(last)
    pos = ckpt["position"]
    assert (pos["batch"], pos["opt_step"], pos["batches_seen"]) == (2, 2, 2)  # the bad update never applied
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    history = load_history(small_run.output_dir)
    assert [r for r in history if r.get("kind") == "diverged"] == [history[-1]]
    assert history[-1]["terms"] == term
    monkeypatch.setattr(owner, name, real)
    result = train(small_run, resume=True, verbose=False)
    assert load_checkpoint(result.final_checkpoint)["position"]["finished"]


def test_real_divergence_stops_with_last_good_checkpoint(small_run):
    """A genuinely exploding run (learning rate 1e30): the weights overflow and the losses become NaN/Inf.

    Training stops at the first non-finite loss with TrainingDivergedError naming the non-finite terms;
    the last checkpoint on disk is one whose losses were still finite.
    """
    from dsn_lab.checkpoint import load_checkpoint
    from dsn_lab.train import TrainingDivergedError, load_history, train

    cfg = small_run.replace(lr=1e30, optimizer="sgd", weight_decay=0.0)
    with pytest.raises(TrainingDivergedError, match="is not finite at epoch 1") as err:
        train(cfg, verbose=False)
    rows = load_history(cfg.output_dir)
    bad = [r for r in rows if r.get("kind") == "diverged"]
    assert len(bad) == 1 and all(t in str(err.value) for t in bad[0]["terms"].split(","))
    stopped_at = bad[0]["batch"]
    last = Path(cfg.output_dir) / "last.pt"
    if stopped_at > 1:
        assert load_checkpoint(last)["position"]["batch"] == stopped_at - 1
    else:
        assert not last.exists() and "no checkpoint was written yet" in str(err.value)


def test_checkpoint_from_other_config_or_backbone_refused(small_run):
    """Resuming a run folder with another config (other lr, other backbone), or loading weights into a
    model of another shape.

    CheckpointError listing each differing field with both values and the --set flags that match the
    checkpoint (fields that change no result, such as log_every, num_workers or the time budget, may
    differ); weights that do not fit name the backbone, class count and hashing size.
    """
    from dsn_lab.checkpoint import CheckpointError, load_checkpoint, load_trained_model, save_checkpoint
    from dsn_lab.train import train

    cfg = small_run.replace(epochs=1, steps_per_epoch=1)
    done = train(cfg, verbose=False)
    other = cfg.replace(lr=5e-4, backbone="efficientnet_lite0", hashing_dim=32)
    with pytest.raises(CheckpointError) as err:
        train(other, resume=True, verbose=False)
    msg = str(err.value)
    assert str(done.final_checkpoint) in msg
    assert "backbone: this run 'efficientnet_lite0', checkpoint 'resnet18'" in msg
    assert "lr: this run 0.0005, checkpoint 0.0001" in msg and 'backbone="resnet18"' in msg
    assert "hashing_dim: this run 32, checkpoint 16" in msg
    assert "output_dir" not in msg.split("differing fields")[1].split("Fix")[0]
    # fields that change no result may differ
    harmless = cfg.replace(log_every=5, num_workers=1, max_train_seconds=100.0)
    assert train(harmless, resume=True, verbose=False).final_checkpoint == done.final_checkpoint
    # weights of another shape under a config that claims they fit
    ckpt = load_checkpoint(done.final_checkpoint)
    cfg = json.loads(ckpt["config"])
    cfg["hashing_dim"] = cfg["hashing_dim"] * 2
    ckpt["config"] = json.dumps(cfg)
    bad = save_checkpoint(ckpt, Path(small_run.output_dir) / "mislabelled.pt")
    with pytest.raises(CheckpointError, match="do not fit a resnet18 model .* hashing_dim 32"):
        load_trained_model(bad)


# ===================================================================================================
# feature cache
# ===================================================================================================
class _TinyNet(nn.Module):
    """A small model with the DSN output signature (logits, kd_logits, code, features)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, 6)

    def forward(self, x, domain):
        f = self.conv(x).relu().mean((2, 3))
        code = self.head(f)
        return code, code, code, f


def _eval(size: int):
    from dsn_lab.data.transforms import eval_transform

    return eval_transform(size)


def test_truncated_feature_cache_entry_recomputed(synth, tmp_path):
    """A feature-cache entry cut short (the process or the disk died while another tool copied the cache).

    The entry is detected as unreadable and the features are recomputed (and the entry rewritten), equal to
    a fresh pass, instead of a crash.
    """
    from dsn_lab.embed import compute_features, extract_features

    ds = _quiet_dataset(synth, split="zero", domain="photo")
    cache = tmp_path / "feats"
    model = _TinyNet(0)
    first, _ = extract_features(model, ds, domain="photo", image_size=32, cache_dir=cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    again, _ = extract_features(model, ds, domain="photo", image_size=32, cache_dir=cache)
    assert np.array_equal(again, first)
    assert np.array_equal(again, compute_features(model, ds, domain=1, transform=_eval(32))[0])
    assert entry.stat().st_size > 100


def test_evaluate_cli_ignores_cache_of_replaced_checkpoint(small_run, tmp_path, capsys):
    """`python -m dsn_lab evaluate CKPT` twice, the checkpoint file replaced in between (a newer best.pt).

    The feature cache is keyed by the checkpoint file's hash: the second evaluation embeds again with the
    new weights (its numbers equal a --no-cache evaluation) and both entries stay, each under its own key.
    An old entry copied over the new one's name is not trusted either (the key is stored inside the entry
    and checked): it is recomputed and rewritten.
    """
    from dsn_lab.checkpoint import load_checkpoint, save_checkpoint
    from dsn_lab.cli import main as cli_main
    from dsn_lab.embed import cache_entries
    from dsn_lab.train import train

    ckpt = train(small_run.replace(steps_per_epoch=1), verbose=False).final_checkpoint
    cache = tmp_path / "feats"

    def evaluate(name: str, *extra: str) -> dict:
        out = tmp_path / f"{name}.json"
        args = ["evaluate", str(ckpt), "--no-binary", "--cache-dir", str(cache), "--output", str(out)]
        code = cli_main([*args, *extra])
        assert code == 0, capsys.readouterr().err
        return json.loads(out.read_text())

    evaluate("first")
    old_entries = set(cache_entries(cache))
    assert len(old_entries) == 2  # sketches and photos
    state = load_checkpoint(ckpt)
    gen = torch.Generator().manual_seed(5)
    for k, v in state["model"].items():
        if v.is_floating_point() and "running_" not in k:  # weights, not BatchNorm statistics
            v.add_(0.5 * torch.randn(v.shape, generator=gen))
    save_checkpoint(state, ckpt)  # same path, other weights
    second = evaluate("second")
    uncached = evaluate("uncached", "--no-cache")
    assert second["real"] == uncached["real"]
    new_entries = set(cache_entries(cache)) - old_entries
    assert len(new_entries) == 2
    old_photo = next(p for p in old_entries if "_d1_" in p.name)
    new_photo = next(p for p in new_entries if "_d1_" in p.name)
    with np.load(old_photo) as a, np.load(new_photo) as b:
        assert a["feats"].shape == b["feats"].shape and not np.allclose(a["feats"], b["feats"])
        key, feats = str(b["key"]), b["feats"]
    new_photo.write_bytes(old_photo.read_bytes())  # a cache synced by hand: stale features, new name
    assert evaluate("copied")["real"] == uncached["real"]
    with np.load(new_photo) as b:
        assert str(b["key"]) == key and np.array_equal(b["feats"], feats)


def test_cli_reports_refused_checkpoint_without_traceback(tmp_path, capsys):
    """`python -m dsn_lab evaluate` given a hostile pickle, and `train --resume` given a truncated last.pt.

    Exit status 1 and one "error:" line naming the file and the reason; the hostile code never runs.
    """
    from dsn_lab.cli import main as cli_main

    marker = tmp_path / "pwned"
    evil = faultlib.write_malicious_checkpoint(tmp_path / "best.pt", marker)
    assert cli_main(["evaluate", str(evil)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(evil) in err and "weights_only=True" in err
    assert not marker.exists()
    run = tmp_path / "run"
    run.mkdir()
    last = _ours(run / "last.pt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    assert cli_main(["train", "--preset", "cpu-quick", "--resume", "--output-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(last) in err and "truncated or corrupted" in err
