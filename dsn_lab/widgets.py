"""The interactive retrieval explorer: query with a test sketch, an uploaded file or your own drawing.

Two layers, so that everything but the pixels on the screen can be tested without a browser:

- :class:`Explorer` is plain Python: gallery features of one or two checkpoints (computed once and cached by
  :func:`dsn_lab.embed.extract_features`, or passed in), query encoding, ranking with
  :func:`dsn_lab.metrics.rank_gallery`, the query's AP from :func:`dsn_lab.metrics.evaluate_retrieval`
  (``per_query=True``, so the number shown is the number the evaluation counts), ITQ binary codes, and the
  result grid as one HTML string built from cached thumbnails (cheap to redraw: one widget update per query).
- :class:`RetrievalExplorer` is a thin ipywidgets layer over it: dropdown + "random" button over the unseen
  test sketches, a class filter, a file upload, a drawing pad, a k slider, real/binary and checkpoint
  toggles.

The drawing pad is a small anywidget (:func:`drawing_pad`; its ES module is
``dsn_lab/resources/drawing_pad.js``): a ``<canvas>`` drawn on in the browser, whose PNG data URL is a synced
trait, so the drawing reaches Python through the widget's own comm, like any widget value. Why anywidget
(0.11.0 tested): it is maintained, made to run in JupyterLab, Notebook, Voila, VS Code and Colab, ships its
front end inside the Python package (nothing to build) and works with ipywidgets 7 and 8. The alternatives:
ipycanvas (0.14.3) draws from Python, so every mouse move of a stroke would be a kernel round trip, slow on a
busy or remote kernel; jupyter-drawing-pad (0.1.6, 2018) and ipysketch (0.2.2, 2021) are unmaintained. The
first version was a ``<canvas>`` in a core ``HTML`` widget, started from an ``onerror`` attribute and talking
back through a hidden ``Text`` box: it relied on how each front end inserts HTML, which Colab's does not
promise. Colab renders third-party widgets such as this one only after
``google.colab.output.enable_custom_widget_manager()``; the explorer calls it itself, once
(:func:`enable_colab_widgets`), so notebook 07 needs no extra cell. Upload works with ipywidgets 8 and 7 (some
Colab runtimes): both ``FileUpload`` value formats are read.

The message line under the controls always says what the grid shows: "<query>: ranked and drawn in ..." after
a search; an error (an empty drawing, a file that is not an image) is shown in red and names the query whose
results are still below, and clearing the pad drops the drawing query (back to the chosen test sketch), so
the grid never shows results for a drawing that is gone.

Usage (a notebook cell; in Voila: ``voila notebooks/07_retrieval_explorer.ipynb``)::

    from dsn_lab.widgets import RetrievalExplorer
    RetrievalExplorer.from_checkpoints({"baseline": "runs/base/best.pt", "DSN": "runs/dsn/best.pt"},
                                       cache_dir="~/.cache/dsn_lab/explorer")

Why this module is long: the plain-Python :class:`Explorer` and its ipywidgets face change together (every
control maps to one Explorer call, every message the face shows comes from one Explorer result), and the
query readers (upload, drawing, test sketch) are shared by both; a split would leave each half unreadable
without the other.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import html
import io
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from dsn_lab._atomic import atomic_write_bytes
from dsn_lab.checkpoint import load_trained_model
from dsn_lab.colab import in_colab
from dsn_lab.data import get_dataset
from dsn_lab.data.transforms import eval_transform
from dsn_lab.embed import extract_features, file_hash
from dsn_lab.metrics import evaluate_retrieval, itq_fit, rank_gallery

__all__ = [
    "Explorer",
    "FeatureSet",
    "QueryImageError",
    "QueryResult",
    "RetrievalExplorer",
    "Thumbnails",
    "decode_drawing",
    "drawing_pad",
    "enable_colab_widgets",
    "load_query_image",
    "model_encoder",
]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_DROPDOWN_QUERIES = 1000  # a Dropdown with 15,000 options is slow to send and useless to scroll


# ---------------------------------------------------------------------------------------------------
# query images: uploads and drawings -> RGB PIL images, or a message for the user


class QueryImageError(ValueError):
    """A query image the explorer cannot use; the message is meant for the person at the widget."""


def _on_white(img: Image.Image) -> Image.Image:
    """RGB with transparent pixels on white: sketches are dark strokes on white, drawings come transparent."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def is_blank(img: Image.Image, tolerance: int = 8) -> bool:
    """True when every pixel is within ``tolerance`` of one colour (an empty drawing or a flat image)."""
    arr = np.asarray(_on_white(img), dtype=np.int16)
    return bool(arr.size == 0 or (arr.max(axis=(0, 1)) - arr.min(axis=(0, 1))).max() <= tolerance)


def load_query_image(data: bytes | memoryview, name: str = "upload") -> Image.Image:
    """Decode an uploaded file into an RGB image, or raise :class:`QueryImageError` with a message."""
    data = bytes(data)
    if not data:
        raise QueryImageError(f"{name!r} is empty (0 bytes). Choose an image file (PNG, JPEG, ...).")
    if len(data) > MAX_UPLOAD_BYTES:
        raise QueryImageError(
            f"{name!r} is {len(data) / 2**20:.1f} MiB; the explorer takes images up to "
            f"{MAX_UPLOAD_BYTES // 2**20} MiB. Shrink it first."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                out = _on_white(img)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise QueryImageError(
            f"{name!r} is not an image the explorer can read ({type(exc).__name__}). "
            "Upload a PNG or JPEG of a sketch."
        ) from None
    if out.width < 2 or out.height < 2:
        raise QueryImageError(f"{name!r} is {out.width}x{out.height} pixels: too small to be a sketch.")
    return out


def decode_drawing(data_url: str) -> Image.Image:
    """The canvas' ``data:image/png;base64,...`` string -> RGB image; empty drawings raise QueryImageError."""
    if not data_url or not data_url.strip():
        raise QueryImageError("The drawing is empty: draw a sketch in the box first, then search.")
    head, sep, payload = data_url.partition(",")
    if not sep or not head.startswith("data:image/") or ";base64" not in head:
        raise QueryImageError("The drawing did not arrive as a PNG data URL; clear the pad and draw again.")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise QueryImageError("The drawing arrived damaged; clear the pad and draw again.") from None
    img = load_query_image(raw, name="drawing")
    if is_blank(img):
        raise QueryImageError("The drawing is empty: draw a sketch in the box first, then search.")
    return img


# ---------------------------------------------------------------------------------------------------
# thumbnails: drawn once, reused by every query


class Thumbnails:
    """Small JPEG data URIs of a list of images, made on first use and kept in memory (and on disk).

    Why: a grid of 50 full-size photos decoded per query would blow the 300 ms budget; a 96 px JPEG data URI
    is a few kB and a dictionary lookup. ``cache_dir`` keeps them across sessions, keyed by the image key.
    """

    def __init__(
        self,
        loader: Callable[[int], Image.Image],
        n: int,
        *,
        size: int = 96,
        keys: Sequence[str] | None = None,
        cache_dir: Path | str | None = None,
        quality: int = 80,
    ) -> None:
        self.loader, self.n, self.size, self.quality = loader, int(n), int(size), int(quality)
        self.keys = list(keys) if keys is not None else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._uris: dict[int, str] = {}

    @classmethod
    def from_dataset(cls, dataset: Any, *, size: int = 96, cache_dir: Path | str | None = None) -> Thumbnails:
        """Thumbnails of a :class:`~dsn_lab.data.SketchPhotoDataset` (read with its ``load_image``)."""
        keys = [f"{dataset.root}/{rel}" for rel, _ in dataset.samples]
        return cls(
            lambda i: dataset.load_image(i)[0], len(dataset), size=size, keys=keys, cache_dir=cache_dir
        )

    @classmethod
    def from_images(cls, images: Sequence[Image.Image], *, size: int = 96) -> Thumbnails:
        return cls(lambda i: images[i], len(images), size=size)

    def __len__(self) -> int:
        return self.n

    def _disk_path(self, index: int) -> Path | None:
        if self.cache_dir is None or self.keys is None:
            return None
        digest = hashlib.sha1(f"{self.keys[index]}|{self.size}|{self.quality}".encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.jpg"

    def encode(self, img: Image.Image) -> str:
        """A JPEG data URI of ``img`` fitted into size x size (aspect kept)."""
        img = _on_white(img)
        img.thumbnail((self.size, self.size), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def uri(self, index: int) -> str:
        index = int(index)
        hit = self._uris.get(index)
        if hit is not None:
            return hit
        path = self._disk_path(index)
        if path is not None and path.is_file():
            uri = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        else:
            uri = self.encode(self.loader(index))
            if path is not None:
                atomic_write_bytes(path, base64.b64decode(uri.split(",", 1)[1]), fsync=False)
        self._uris[index] = uri
        return uri

    def precompute(self, indices: Sequence[int] | None = None, progress: bool = True) -> Thumbnails:
        """Make the thumbnails of ``indices`` (default: all) now, so that the first queries are fast too."""
        todo = [i for i in (range(self.n) if indices is None else indices) if int(i) not in self._uris]
        for i in tqdm(todo, desc="thumbnails", disable=not progress or len(todo) < 200):
            self.uri(i)
        return self


# ---------------------------------------------------------------------------------------------------
# features of one checkpoint


def model_encoder(
    model: Any,
    *,
    image_size: int,
    device: str = "cpu",
    output: str = "code",
    normalize: bool = True,
    domain: int = 0,
) -> Callable[[Image.Image], np.ndarray]:
    """A function PIL image -> feature vector, computed as :func:`dsn_lab.embed.extract_features` does.

    Same evaluation transform, ``model(x, domain)`` output ("code": the hashing layer, as in the released
    evaluation; "features"; "logits") and L2 normalisation, so a drawn query lands in the gallery's space.
    """

    transform = eval_transform(image_size)
    pick = {"code": 2, "features": 3, "logits": 0}[output]

    def encode(img: Image.Image) -> np.ndarray:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                x = transform(_on_white(img)).unsqueeze(0).to(device)
                feat = model(x, domain)[pick].float().reshape(1, -1)
                if normalize:
                    feat = F.normalize(feat, dim=1)
        finally:
            model.train(was_training)
        return feat[0].cpu().numpy()

    return encode


@dataclass
class FeatureSet:
    """Gallery (and test-sketch) features of one checkpoint, plus how to encode a new query image.

    ``itq_bits``: length of the binary codes (default: the feature dimension, as released). The ITQ rotation
    is fitted on the gallery features on first use of the binary codes.
    """

    name: str
    gallery: np.ndarray
    queries: np.ndarray | None = None
    encode: Callable[[Image.Image], np.ndarray] | None = None
    itq_bits: int | None = None
    itq_seed: int = 0
    _itq: Any = field(default=None, repr=False)
    _codes: dict[str, Any] = field(default_factory=dict, repr=False)
    _ap: dict[tuple[str, int], float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.gallery = np.ascontiguousarray(self.gallery, dtype=np.float32)
        if self.gallery.ndim != 2 or len(self.gallery) == 0:
            raise ValueError(
                f"{self.name}: gallery features must be a non-empty [G, D] array, "
                f"got shape {self.gallery.shape}."
            )
        if self.queries is not None:
            self.queries = np.ascontiguousarray(self.queries, dtype=np.float32)
            if self.queries.ndim != 2 or self.queries.shape[1] != self.gallery.shape[1]:
                raise ValueError(
                    f"{self.name}: query features {self.queries.shape} do not match the gallery "
                    f"features {self.gallery.shape} (same dimension expected)."
                )

    @property
    def itq(self) -> Any:
        if self._itq is None:
            bits = self.itq_bits or self.gallery.shape[1]
            self._itq = itq_fit(self.gallery, bits, seed=self.itq_seed)
        return self._itq

    def gallery_codes(self, binary: bool) -> np.ndarray:
        if not binary:
            return self.gallery
        if "gallery" not in self._codes:
            self._codes["gallery"] = np.ascontiguousarray(self.itq.encode(self.gallery), dtype=np.float32)
        return self._codes["gallery"]

    def ranking_gallery(self, binary: bool) -> Any:
        """The gallery as the ranking engine works on it (float64 for real codes), converted once.

        Handing ``rank_gallery`` / ``evaluate_retrieval`` the float32 array would make every query convert
        the whole gallery again (17,101 x 512 floats: most of a 512-d query's time)."""
        key = "rank-binary" if binary else "rank-real"
        if key not in self._codes:
            codes = self.gallery_codes(binary)
            self._codes[key] = torch.from_numpy(codes) if binary else torch.from_numpy(codes).double()
        return self._codes[key]

    def query_codes(self, binary: bool) -> np.ndarray:
        if self.queries is None:
            raise ValueError(f"{self.name}: no test-sketch features were given.")
        if not binary:
            return self.queries
        if "queries" not in self._codes:
            self._codes["queries"] = np.ascontiguousarray(self.itq.encode(self.queries), dtype=np.float32)
        return self._codes["queries"]

    def to_codes(self, feature: np.ndarray, binary: bool) -> np.ndarray:
        feature = np.asarray(feature, dtype=np.float32).reshape(1, -1)
        if feature.shape[1] != self.gallery.shape[1]:
            raise ValueError(
                f"{self.name}: query feature has {feature.shape[1]} dimensions, the gallery "
                f"{self.gallery.shape[1]}."
            )
        return np.asarray(self.itq.encode(feature), dtype=np.float32) if binary else feature


# ---------------------------------------------------------------------------------------------------
# the explorer's logic


@dataclass
class QueryResult:
    """One checkpoint's answer to one query: the top-k gallery indices, right/wrong marks, the query's AP."""

    model: str
    binary: bool
    k: int
    indices: np.ndarray  # top-k gallery indices, best first
    labels: np.ndarray  # their class labels
    correct: np.ndarray | None  # bool per shown image; None when the query's class is unknown
    query_label: int | None
    query_class: str | None
    ap: float | None  # the query's AP over the whole ranking (evaluate_retrieval, per query)
    n_relevant: int | None  # gallery images of the query's class
    rank_ms: float = 0.0


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: unchanged), then restore the previous count."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _distance_for(binary: bool) -> str:
    """Ranking distance: Euclidean on real codes (released evaluation); Hamming on ±1 ITQ codes."""
    return "hamming" if binary else "euclidean"


class Explorer:
    """Retrieval over a fixed gallery for one or two checkpoints; no widgets, so tests can drive it.

    ``feature_sets``: one :class:`FeatureSet` per checkpoint (e.g. baseline and DSN), same gallery order.
    ``gallery_labels`` / ``query_labels`` index into ``classes``. ``query_names`` label the test sketches in
    the dropdown. ``gallery_thumbs`` / ``query_thumbs`` draw the grid. ``threads``: torch threads for ranking
    one query (default 1: a query against 17,000 photos is ~1M multiply-adds, and on a busy or small CPU
    the synchronisation of more threads costs more than it saves, measured 5-10x slower; None: leave as is).
    """

    def __init__(
        self,
        feature_sets: FeatureSet | Sequence[FeatureSet],
        gallery_labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        *,
        query_labels: Sequence[int] | np.ndarray | None = None,
        query_names: Sequence[str] | None = None,
        gallery_thumbs: Thumbnails | None = None,
        query_thumbs: Thumbnails | None = None,
        gallery_names: Sequence[str] | None = None,
        threads: int | None = 1,
    ) -> None:
        self.threads = threads
        sets = [feature_sets] if isinstance(feature_sets, FeatureSet) else list(feature_sets)
        if not sets:
            raise ValueError("Explorer needs at least one FeatureSet.")
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"Checkpoint names must differ, got {names}.")
        self.sets: dict[str, FeatureSet] = {s.name: s for s in sets}
        self.classes = list(classes)
        self.gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
        for s in sets:
            if len(s.gallery) != len(self.gallery_labels):
                raise ValueError(
                    f"{s.name}: {len(s.gallery)} gallery features for "
                    f"{len(self.gallery_labels)} gallery labels."
                )
        self.query_labels = None if query_labels is None else np.asarray(query_labels, dtype=np.int64)
        nq = 0 if self.query_labels is None else len(self.query_labels)
        for s in sets:
            if (s.queries is None) != (self.query_labels is None) or (
                s.queries is not None and len(s.queries) != nq
            ):
                raise ValueError(
                    f"{s.name}: query features and query_labels must both be given, of the same length."
                )
        self.query_names = (
            list(query_names)
            if query_names is not None
            else [f"{self.classes[lab]} #{i}" for i, lab in enumerate(self.query_labels if nq else [])]
        )
        self.gallery_names = list(gallery_names) if gallery_names is not None else None
        self.gallery_thumbs, self.query_thumbs = gallery_thumbs, query_thumbs
        self.n_relevant = np.bincount(self.gallery_labels, minlength=len(self.classes))

    # -- queries -----------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.sets)

    @property
    def num_queries(self) -> int:
        return 0 if self.query_labels is None else len(self.query_labels)

    def query_indices(self, class_filter: int | str | None = None) -> np.ndarray:
        """Indices of the test sketches, all of them or those of one class (label or name)."""
        if self.query_labels is None:
            return np.zeros(0, dtype=np.int64)
        if class_filter is None:
            return np.arange(len(self.query_labels))
        label = self.class_label(class_filter)
        return np.flatnonzero(self.query_labels == label)

    def class_label(self, cls: int | str) -> int:
        if isinstance(cls, str):
            if cls not in self.classes:
                raise KeyError(f"Unknown class {cls!r}; classes: {', '.join(self.classes[:10])} ...")
            return self.classes.index(cls)
        if not 0 <= int(cls) < len(self.classes):
            raise KeyError(f"Class label {cls} out of range 0..{len(self.classes) - 1}.")
        return int(cls)

    def random_query(
        self, class_filter: int | str | None = None, rng: np.random.Generator | None = None
    ) -> int:
        pool = self.query_indices(class_filter)
        if len(pool) == 0:
            raise ValueError("No test sketch matches the class filter.")
        rng = rng or np.random.default_rng()
        return int(pool[rng.integers(len(pool))])

    def encode(self, model: str, image: Image.Image) -> np.ndarray:
        fs = self.sets[model]
        if fs.encode is None:
            raise QueryImageError(
                f"Checkpoint {model!r} was given as precomputed features without a model, so it cannot "
                "encode a new image. Build the explorer with RetrievalExplorer.from_models(...) to query "
                "with uploads and drawings."
            )
        return np.asarray(fs.encode(image), dtype=np.float32).reshape(-1)

    # -- ranking and AP ------------------------------------------------------------------------------
    def query_ap(self, model: str, query_index: int, binary: bool = False) -> float:
        """AP of test sketch ``query_index``: evaluate_retrieval(per_query=True) on that query, cached.

        One query at a time (a few ms for 17,000 photos), never the whole query set at once: 15,000 Sketchy
        queries x 17,000 photos would be a 1 GB distance matrix just to open the widget.
        """
        fs = self.sets[model]
        key = ("binary" if binary else "real", int(query_index))
        if key not in fs._ap:
            q = fs.query_codes(binary)[int(query_index) : int(query_index) + 1]
            label = int(self.query_labels[query_index])
            fs._ap[key] = self.ap_of(q, label, fs.ranking_gallery(binary), binary)
        return fs._ap[key]

    def ap_of(self, query: np.ndarray, label: int, gallery: np.ndarray, binary: bool) -> float:

        res = evaluate_retrieval(
            query.reshape(1, -1),
            np.array([label]),
            gallery,
            self.gallery_labels,
            distance=_distance_for(binary),
            per_query=True,
        )
        return float(np.asarray(res["AP_per_query"]).reshape(-1)[0])

    def search(
        self,
        model: str | None = None,
        *,
        query_index: int | None = None,
        feature: np.ndarray | None = None,
        label: int | str | None = None,
        k: int = 10,
        binary: bool = False,
    ) -> QueryResult:
        """Rank the gallery for a test sketch (``query_index``) or an encoded image (``feature``).

        ``label``: the class of an uploaded/drawn query, when the user says it; gives marks and an AP.
        """

        model = model or self.model_names[0]
        if model not in self.sets:
            raise KeyError(f"Unknown checkpoint {model!r}; have {self.model_names}.")
        fs = self.sets[model]
        if (query_index is None) == (feature is None):
            raise ValueError("Give exactly one of query_index or feature.")
        k = max(1, min(int(k), len(self.gallery_labels)))
        t0 = time.perf_counter()
        with _torch_threads(self.threads):  # also covers the ITQ fit on first use of binary codes
            gallery = fs.ranking_gallery(binary)
            if query_index is not None:
                query_index = int(query_index)
                q = fs.query_codes(binary)[query_index : query_index + 1]
                qlabel: int | None = int(self.query_labels[query_index])
            else:
                q = fs.to_codes(feature, binary)
                qlabel = None if label is None else self.class_label(label)
            order = np.asarray(rank_gallery(q, gallery, distance=_distance_for(binary), topk=k))
            ap: float | None = None
            if qlabel is not None:
                ap = (
                    self.query_ap(model, query_index, binary)
                    if query_index is not None
                    else self.ap_of(q, qlabel, gallery, binary)
                )
        top = np.asarray(order.reshape(-1)[:k] if order.ndim == 1 else order[0, :k], dtype=np.int64)
        labels = self.gallery_labels[top]
        return QueryResult(
            model=model,
            binary=binary,
            k=k,
            indices=top,
            labels=labels,
            correct=None if qlabel is None else labels == qlabel,
            query_label=qlabel,
            query_class=None if qlabel is None else self.classes[qlabel],
            ap=ap,
            n_relevant=None if qlabel is None else int(self.n_relevant[qlabel]),
            rank_ms=(time.perf_counter() - t0) * 1000.0,
        )

    # -- drawing -------------------------------------------------------------------------------------
    def grid_html(
        self, results: Sequence[QueryResult], query_uri: str | None = None, query_title: str = "query"
    ) -> str:
        """The query tile and, per checkpoint, a row of top-k tiles marked right (green) or wrong (red)."""
        esc = html.escape
        q_tile = (
            f'<img src="{query_uri}" style="width:96px;height:96px;object-fit:contain;background:#fff;'
            f'border:3px solid #345">'
            if query_uri
            else '<div style="width:96px;height:96px;border:3px dashed #999"></div>'
        )
        qclass = results[0].query_class if results else None
        parts = [
            '<div class="dsn-grid" style="font-family:sans-serif;font-size:12px">',
            '<div style="display:flex;gap:12px;align-items:center;margin-bottom:8px">',
            q_tile,
            f'<div><b>{esc(query_title)}</b><br>class: <b class="dsn-query-class">'
            f"{esc(qclass) if qclass else 'unknown (pick its class to get marks and AP)'}</b></div></div>",
            '<div style="display:flex;flex-wrap:wrap;gap:16px">',
        ]
        for r in results:
            codes = "binary ITQ codes (Hamming)" if r.binary else "real-valued codes (Euclidean)"
            ap = "n/a" if r.ap is None else f"{r.ap:.3f}"
            hits = "" if r.correct is None else f" · {int(r.correct.sum())}/{r.k} right"
            parts.append(
                f'<div class="dsn-panel" data-model="{esc(r.model)}" style="flex:1 1 380px;min-width:0">'
                f'<div style="margin-bottom:4px"><b>{esc(r.model)}</b> · {codes} · '
                f'AP <b class="dsn-ap">{ap}</b>{hits}</div>'
                '<div style="display:flex;flex-wrap:wrap;gap:4px">'
            )
            for rank, (gi, lab) in enumerate(zip(r.indices.tolist(), r.labels.tolist()), start=1):
                ok = None if r.correct is None else bool(r.correct[rank - 1])
                colour = "#999" if ok is None else ("#1a9850" if ok else "#d73027")
                mark = "" if ok is None else ("✓" if ok else "✗")
                src = self.gallery_thumbs.uri(gi) if self.gallery_thumbs is not None else ""
                name = self.classes[lab]
                extra = f" ({self.gallery_names[gi]})" if self.gallery_names else ""
                title = esc(f"#{rank}: {name}{extra}")
                parts.append(
                    f'<div class="dsn-tile" data-correct="{"" if ok is None else int(ok)}" title="{title}" '
                    f'style="width:72px;text-align:center;border:3px solid {colour};border-radius:4px">'
                    f'<img src="{src}" style="width:66px;height:66px;object-fit:contain;display:block;'
                    f'margin:auto;background:#fff"><div style="white-space:nowrap;overflow:hidden;'
                    f'text-overflow:ellipsis;color:{colour}">{mark} {esc(name)}</div></div>'
                )
            parts.append("</div></div>")
        parts.append("</div></div>")
        return "".join(parts)


# ---------------------------------------------------------------------------------------------------
# the drawing pad (an anywidget) and Colab's widget manager

_colab_widgets_enabled = False


def enable_colab_widgets() -> bool:
    """In Colab, switch on its custom widget manager (once per kernel); elsewhere do nothing. True in Colab.

    Colab's default front end renders only the core ipywidgets; the drawing pad is a third-party (anywidget)
    widget, which Colab renders only after ``google.colab.output.enable_custom_widget_manager()``. It adds the
    manager to every widget display that follows, so it must run before the explorer is displayed.
    """
    global _colab_widgets_enabled
    if not in_colab():
        return False
    if not _colab_widgets_enabled:
        try:
            from google.colab import output

            output.enable_custom_widget_manager()
        except Exception as exc:  # the rest of the explorer still works: say what is missing and how to fix
            warnings.warn(
                f"Could not enable Colab's custom widget manager ({type(exc).__name__}: {exc}); the drawing "
                "pad may not show. Run `from google.colab import output` and "
                "`output.enable_custom_widget_manager()` in a cell, then display the explorer again.",
                stacklevel=2,
            )
            return True
        _colab_widgets_enabled = True
    return True


@functools.cache
def _drawing_pad_class() -> type:
    """The pad's widget class, made on first use so that importing this module needs no widget library."""
    try:
        import anywidget
        import traitlets
    except ImportError as exc:
        raise ImportError(
            f"The explorer's drawing pad needs anywidget ({exc}). Install it: pip install anywidget"
        ) from None
    esm = resources.files("dsn_lab").joinpath("resources", "drawing_pad.js").read_text(encoding="utf-8")

    class DrawingPad(anywidget.AnyWidget):
        """A square canvas to draw on; ``value`` is its PNG data URL after each stroke ("" when cleared)."""

        _esm = esm
        value = traitlets.Unicode("").tag(sync=True)
        size = traitlets.Int(224).tag(sync=True)

    return DrawingPad


def drawing_pad(size: int = 224) -> Any:
    """A drawing pad widget of ``size`` x ``size`` pixels (observe its ``value``: a PNG data URL or "")."""
    if int(size) < 16:
        raise ValueError(f"drawing_pad: size {size} is too small to draw on; use 16 pixels or more.")
    return _drawing_pad_class()(size=int(size))


# ---------------------------------------------------------------------------------------------------
# the widget


class RetrievalExplorer:
    """The ipywidgets front end of an :class:`Explorer` (display it as the last expression of a cell).

    Build it with :meth:`from_models` (models + datasets; gallery features cached on disk) or directly from
    an :class:`Explorer` over precomputed features.
    """

    ALL = "(all classes)"
    UNKNOWN = "(unknown)"
    BOTH = "side by side"

    def __init__(self, explorer: Explorer, *, k: int = 10, max_k: int = 50, seed: int = 0) -> None:
        import ipywidgets as W  # lazy: the plain-Python Explorer above works (and is tested) without it

        enable_colab_widgets()  # before any widget is displayed: Colab then renders the pad too
        self.explorer = explorer
        self.rng = np.random.default_rng(seed)
        self._source: str = "dataset"  # dataset | upload | drawing
        self._image: Image.Image | None = None
        self._image_title = ""
        self._image_uri: str | None = None
        self._image_feats: dict[str, np.ndarray] = {}
        self._shown = ""  # the title of the query whose results the grid shows ("" when empty)
        self.last_results: list[QueryResult] = []
        self.last_draw_ms = 0.0
        self._note, self._setting = "", False

        classes = explorer.classes
        present = sorted({int(c) for c in (explorer.query_labels if explorer.num_queries else [])})
        self.class_filter = W.Dropdown(
            options=[self.ALL] + [classes[c] for c in present],
            value=self.ALL,
            description="class",
            layout=W.Layout(width="260px"),
        )
        self.query = W.Dropdown(options=[], description="sketch", layout=W.Layout(width="340px"))
        self.random_button = W.Button(description="random", icon="random", layout=W.Layout(width="100px"))
        self.upload = W.FileUpload(
            accept="image/*", multiple=False, description="upload an image", layout=W.Layout(width="200px")
        )
        self.upload_class = W.Dropdown(
            options=[self.UNKNOWN] + list(classes),
            value=self.UNKNOWN,
            description="its class",
            layout=W.Layout(width="260px"),
        )
        self.pad = drawing_pad(192)
        self.draw_button = W.Button(
            description="search my drawing", icon="search", layout=W.Layout(width="200px")
        )
        self.k = W.IntSlider(value=min(k, max_k), min=1, max=max_k, description="k", continuous_update=False)
        self.codes = W.ToggleButtons(
            options=["real-valued", "binary (ITQ)"],
            value="real-valued",
            description="codes",
            style={"button_width": "110px"},
        )
        names = explorer.model_names
        self.model = W.ToggleButtons(
            options=names + ([self.BOTH] if len(names) > 1 else []),
            value=self.BOTH if len(names) > 1 else names[0],
            description="checkpoint",
        )
        self.message = W.HTML("")
        self.message.add_class("dsn-message")
        self.grid = W.HTML("")
        self.grid.add_class("dsn-grid-widget")
        for w, cls_ in (
            (self.class_filter, "dsn-class-filter"),
            (self.query, "dsn-query"),
            (self.random_button, "dsn-random"),
            (self.upload, "dsn-upload"),
            (self.draw_button, "dsn-draw-search"),
            (self.k, "dsn-k"),
            (self.codes, "dsn-codes"),
            (self.model, "dsn-model"),
        ):
            w.add_class(cls_)

        self._fill_queries()
        self.class_filter.observe(lambda ch: self._on_class(), names="value")
        self.query.observe(lambda ch: self._on_query(), names="value")
        self.random_button.on_click(lambda b: self.pick_random())
        self.upload.observe(lambda ch: self._on_upload(), names="value")
        self.upload_class.observe(
            lambda ch: self.refresh() if self._source != "dataset" else None, names="value"
        )
        self.pad.observe(lambda ch: self._on_drawing(auto=True), names="value")
        self.draw_button.on_click(lambda b: self._on_drawing(auto=False))
        for w in (self.k, self.codes, self.model):
            w.observe(lambda ch: self.refresh(), names="value")

        row, col, note = W.HBox, W.VBox, W.HTML
        own = col(
            [
                note(
                    "<b>...or your own image</b>: upload a file, or draw in the box and let go of the mouse."
                ),
                self.upload,
                self.draw_button,
                note("Say which class it is to get right/wrong marks and its AP:"),
                self.upload_class,
            ],
            layout=W.Layout(width="330px"),
        )
        self.widget = col(
            [
                note(
                    "<b>Query with a test sketch</b> of an unseen class (filter by class, or pick at random):"
                ),
                row([self.class_filter, self.query, self.random_button]),
                row([own, self.pad]),
                row([self.k, self.codes]),
                self.model,
                self.message,
                self.grid,
            ]
        )
        self.widget.add_class("dsn-explorer")
        self.refresh()

    # -- construction from models ---------------------------------------------------------------------
    @classmethod
    def from_models(
        cls,
        models: Any,
        sketches: Any,
        photos: Any,
        *,
        image_size: int | Mapping[str, int] | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_dir: Path | str | None = None,
        thumb_size: int = 96,
        itq_bits: int | None = None,
        output: str = "code",
        model_keys: Mapping[str, str] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> RetrievalExplorer:
        """Explorer over ``photos`` (gallery) and ``sketches`` (queries) for one model or ``{name: model}``.

        The datasets are :class:`~dsn_lab.data.SketchPhotoDataset` s of one split (usually "zero"), built
        with ``transform=None``: gallery, test sketches and new queries all go through
        ``eval_transform(image_size)`` (one size, or one per model name). Features come from
        :func:`dsn_lab.embed.extract_features`, cached under ``cache_dir/features`` (``model_keys``: cache
        keys of the weights, e.g. checkpoint file hashes; default: a hash of the state dict); thumbnails are
        cached under ``cache_dir/thumbs``. ``kwargs`` go to the constructor (``k``, ``max_k``, ``seed``).
        """

        if not isinstance(models, Mapping):
            models = {"model": models}
        if image_size is None:
            raise ValueError("image_size is required (the size the model was trained with: cfg.image_size).")
        for ds, what in ((sketches, "sketches"), (photos, "photos")):
            if getattr(ds, "transform", None) is not None:
                raise ValueError(
                    f"{what}: pass a dataset built with transform=None; the explorer applies "
                    "eval_transform(image_size) itself, to the gallery and to new queries."
                )
        if list(sketches.classes) != list(photos.classes):
            raise ValueError("sketches and photos must come from the same split (their class lists differ).")
        sets = []
        q_labels = g_labels = None
        cdir = None if cache_dir is None else Path(cache_dir).expanduser() / "features"
        for name, model in models.items():
            size = int(image_size[name] if isinstance(image_size, Mapping) else image_size)
            common = dict(
                batch_size=batch_size,
                device=device,
                cache_dir=cdir,
                image_size=size,
                output=output,
                progress=progress,
                model_key=None if model_keys is None else model_keys.get(name),
            )
            g, g_labels = extract_features(model, photos, domain=1, **common)
            q, q_labels = extract_features(model, sketches, domain=0, **common)
            enc = model_encoder(model, image_size=size, device=device, output=output)
            sets.append(FeatureSet(str(name), g, q, encode=enc, itq_bits=itq_bits))
        tdir = None if cache_dir is None else Path(cache_dir).expanduser() / "thumbs"
        explorer = Explorer(
            sets,
            np.asarray(g_labels),
            photos.classes,
            query_labels=np.asarray(q_labels),
            query_names=[f"{photos.classes[lab]} / {Path(rel).name}" for rel, lab in sketches.samples],
            gallery_names=[Path(rel).name for rel, _ in photos.samples],
            gallery_thumbs=Thumbnails.from_dataset(photos, size=thumb_size, cache_dir=tdir),
            query_thumbs=Thumbnails.from_dataset(sketches, size=thumb_size, cache_dir=tdir),
        )
        return cls(explorer, **kwargs)

    @classmethod
    def from_checkpoints(
        cls,
        checkpoints: Mapping[str, Path | str] | Path | str,
        *,
        split: str = "zero",
        data_root: Path | str | None = None,
        device: str = "cpu",
        cache_dir: Path | str | None = None,
        **kwargs: Any,
    ) -> RetrievalExplorer:
        """Explorer for dsn_lab checkpoints, e.g. ``{"baseline": "runs/a/best.pt", "DSN": "runs/b/best.pt"}``.

        The dataset and image size come from each checkpoint's config (all must use the same dataset);
        ``data_root`` overrides the config's. Features are cached under ``cache_dir`` keyed by checkpoint
        file hashes. ``kwargs`` go to :meth:`from_models` and the constructor.
        """

        if not isinstance(checkpoints, Mapping):
            checkpoints = {Path(checkpoints).stem: checkpoints}
        models, sizes, keys, datasets = {}, {}, {}, set()
        for name, path in checkpoints.items():
            model, cfg, _ = load_trained_model(path, device=device)
            models[name], sizes[name], keys[name] = model, cfg.image_size, file_hash(path)
            datasets.add((cfg.dataset, data_root if data_root is not None else cfg.data_root))
        if len(datasets) != 1:
            raise ValueError(
                f"The checkpoints were trained on different datasets "
                f"{sorted(map(str, datasets))}; compare checkpoints of one dataset."
            )
        name, root = datasets.pop()
        sketches = get_dataset(name, root, split=split, domain="sketch", verbose=False)
        photos = get_dataset(name, root, split=split, domain="photo", verbose=False)
        return cls.from_models(
            models,
            sketches,
            photos,
            image_size=sizes,
            device=device,
            cache_dir=cache_dir,
            model_keys=keys,
            **kwargs,
        )

    # -- event handlers ---------------------------------------------------------------------------------
    def _fill_queries(self) -> None:
        cf = None if self.class_filter.value == self.ALL else self.class_filter.value
        idx = self.explorer.query_indices(cf)
        note = ""
        if len(idx) > MAX_DROPDOWN_QUERIES:
            idx, note = idx[:MAX_DROPDOWN_QUERIES], " (first 1000 listed; filter by class or use random)"
        self._note = note
        opts = [(self.explorer.query_names[i], int(i)) for i in idx]
        self._setting = True
        try:
            self.query.options = opts
            self.query.value = opts[0][1] if opts else None
        finally:
            self._setting = False

    def _on_class(self) -> None:
        self._fill_queries()
        self._source = "dataset"
        self.refresh()

    def _on_query(self) -> None:
        if self._setting:
            return
        self._source = "dataset"
        self.refresh()

    def pick_random(self) -> int | None:
        """Choose a random test sketch (within the class filter) and show its results."""
        cf = None if self.class_filter.value == self.ALL else self.class_filter.value
        try:
            i = self.explorer.random_query(cf, self.rng)
        except ValueError as exc:
            self.show_message(str(exc))
            return None
        if i not in {v for _, v in self.query.options}:  # beyond the listed ones: list it
            self._setting = True
            self.query.options = [*self.query.options, (self.explorer.query_names[i], i)]
            self._setting = False
        self._source = "dataset"
        if self.query.value == i:
            self.refresh()
        else:
            self.query.value = i  # triggers refresh
        return i

    def _uploaded_file(self) -> tuple[str, bytes] | None:
        value = self.upload.value
        if not value:
            return None
        if isinstance(value, dict):  # ipywidgets 7 (e.g. Colab): {name: {"metadata": ..., "content": ...}}
            name, item = next(iter(value.items()))
            return name, bytes(item["content"])
        item = value[0]  # ipywidgets 8: tuple of dicts
        return item["name"], bytes(item["content"])

    def _on_upload(self) -> None:
        got = self._uploaded_file()
        if got is None:
            return
        # Empty the widget, so that choosing the same file again is a change again. set_trait, because
        # ipywidgets 7 (some Colab runtimes) makes ``value`` read-only (a dict it rebuilds on each upload).
        self.upload.set_trait("value", type(self.upload.value)())
        self.query_image_bytes(got[1], name=got[0])

    def query_image_bytes(self, data: bytes, name: str = "upload") -> bool:
        """Use an image file's bytes as the query; a bad file shows a message. True when it worked."""
        try:
            img = load_query_image(data, name=name)
        except QueryImageError as exc:
            self.show_message(str(exc))
            return False
        return self.query_image(img, source="upload", title=f"uploaded: {name}")

    def _on_drawing(self, auto: bool) -> None:
        """A finished stroke (``auto``) or the "search my drawing" button: query with the pad's drawing."""
        value = self.pad.value
        if auto and not value:  # "clear drawing": its results must go too, back to the chosen test sketch
            if self._source == "drawing":
                self._source = "dataset"
                self.refresh()
            return
        try:
            img = decode_drawing(value)
        except QueryImageError as exc:
            self.show_message(str(exc))
            return
        self.query_image(img, source="drawing", title="your drawing")

    def query_image(self, img: Image.Image, *, source: str = "upload", title: str = "image") -> bool:
        """Encode ``img`` with every checkpoint and show its results (messages instead of tracebacks)."""
        try:
            feats = {name: self.explorer.encode(name, img) for name in self.explorer.model_names}
        except QueryImageError as exc:
            self.show_message(str(exc))
            return False
        except Exception as exc:  # a model that cannot take this image: say so in the widget
            self.show_message(f"Could not encode the image: {type(exc).__name__}: {exc}")
            return False
        self._source, self._image, self._image_title, self._image_feats = source, img, title, feats
        self._image_uri = Thumbnails.from_images([img]).uri(0)
        self.refresh()
        return True

    # -- drawing the results ------------------------------------------------------------------------------
    def show_message(self, text: str, error: bool = True) -> None:
        """The line above the grid: an error in red, which says what the grid still shows, or the status."""
        if error and text and self._shown:
            text = f"{text} (Below: the results for {self._shown}.)"
        kind, colour = ("dsn-error", "#b2182b") if error else ("dsn-status", "#333")
        body = f'<div class="{kind}" style="color:{colour};padding:2px 0">{html.escape(text)}</div>'
        self.message.value = body if text else ""

    def _clear_grid(self) -> None:
        self.grid.value, self._shown, self.last_results = "", "", []

    def _models(self) -> list[str]:
        return self.explorer.model_names if self.model.value == self.BOTH else [self.model.value]

    def refresh(self) -> list[QueryResult]:
        """Rank and redraw for the current query and settings (the per-query response the benchmark times)."""
        t0 = time.perf_counter()
        binary = self.codes.value != "real-valued"
        ex = self.explorer
        results: list[QueryResult] = []
        try:
            if self._source == "dataset":
                qi = self.query.value
                if qi is None:
                    self._clear_grid()
                    self.show_message(
                        "No test sketches to show."
                        if ex.num_queries == 0
                        else "No test sketch matches the class filter.",
                        error=False,
                    )
                    return []
                results = [
                    ex.search(m, query_index=qi, k=self.k.value, binary=binary) for m in self._models()
                ]
                uri = ex.query_thumbs.uri(qi) if ex.query_thumbs is not None else None
                title = f"test sketch: {ex.query_names[qi]}"
            else:
                label = None if self.upload_class.value == self.UNKNOWN else self.upload_class.value
                results = [
                    ex.search(m, feature=self._image_feats[m], label=label, k=self.k.value, binary=binary)
                    for m in self._models()
                ]
                uri = self._image_uri
                title = self._image_title
            self.grid.value = ex.grid_html(results, uri, title)
        except Exception as exc:  # keep the widget alive and say what went wrong (old results would mislead)
            self._clear_grid()
            self.show_message(f"{type(exc).__name__}: {exc}")
            return []
        self.last_results, self._shown = results, title
        self.last_draw_ms = (time.perf_counter() - t0) * 1000.0
        self.show_message(f"{title}: ranked and drawn in {self.last_draw_ms:.0f} ms{self._note}", error=False)
        return results

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
