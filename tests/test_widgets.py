"""The retrieval explorer's logic, without a browser: ranking, AP, filter, k, code toggle, bad queries."""

from __future__ import annotations

import base64
import datetime
import html
import io
import re
import sys
import types

import numpy as np
import pytest
import traitlets
from PIL import Image, ImageDraw

pytest.importorskip("ipywidgets")
metrics = pytest.importorskip("dsn_lab.metrics", reason="dsn_lab.metrics is not written yet")

import dsn_lab.widgets as widgets_mod  # noqa: E402
from dsn_lab.widgets import (  # noqa: E402
    Explorer,
    FeatureSet,
    QueryImageError,
    RetrievalExplorer,
    Thumbnails,
    decode_drawing,
    drawing_pad,
    enable_colab_widgets,
    load_query_image,
)

CLASSES = ["cat", "dog", "apple", "car", "tree"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(img)).decode()


def _stroke_drawing(size: int = 64) -> Image.Image:
    """What the canvas sends: black strokes on a transparent background."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(5, 5), (50, 40), (20, 60)], fill=(0, 0, 0, 255), width=4)
    return img


class MeanColourEncoder:
    """A stand-in model: the image's mean colour, padded to the feature dimension, counted calls."""

    def __init__(self, dim: int) -> None:
        self.dim, self.calls = dim, 0

    def __call__(self, img: Image.Image) -> np.ndarray:
        self.calls += 1
        v = np.zeros(self.dim, dtype=np.float32)
        v[:3] = np.asarray(img.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) / 255.0
        return v


@pytest.fixture(scope="module")
def toy():
    """Two checkpoints, one gallery: 5 classes x 12 photos (class clusters + noise), 3 sketches per class."""
    rng = np.random.default_rng(0)
    dim = 8
    centres = rng.normal(size=(len(CLASSES), dim))
    g_labels = np.repeat(np.arange(len(CLASSES)), 12)
    q_labels = np.repeat(np.arange(len(CLASSES)), 3)
    sets = []
    for name, noise in (("baseline", 1.5), ("DSN", 0.6)):
        g = centres[g_labels] + noise * rng.normal(size=(len(g_labels), dim))
        q = centres[q_labels] + noise * rng.normal(size=(len(q_labels), dim))
        sets.append(FeatureSet(name, g, q, encode=MeanColourEncoder(dim), itq_bits=6))
    thumbs = Thumbnails.from_images([Image.new("RGB", (20, 20), (i * 4 % 255, 90, 200)) for i in range(60)])
    qthumbs = Thumbnails.from_images([Image.new("RGB", (20, 20), "white") for _ in range(15)])
    explorer = Explorer(
        sets, g_labels, CLASSES, query_labels=q_labels, gallery_thumbs=thumbs, query_thumbs=qthumbs
    )
    return explorer, g_labels, q_labels


def _brute_euclidean(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.sqrt(((g.astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1))


# ---------------------------------------------------------------------------------------------------
# ranking and AP


def test_ranking_is_the_euclidean_top_k(toy):
    explorer, g_labels, _ = toy
    for model in explorer.model_names:
        fs = explorer.sets[model]
        for qi in (0, 7, 14):
            res = explorer.search(model, query_index=qi, k=10)
            d = _brute_euclidean(fs.queries[qi], fs.gallery)
            np.testing.assert_array_equal(res.indices, np.argsort(d, kind="stable")[:10])
            np.testing.assert_array_equal(res.labels, g_labels[res.indices])
            np.testing.assert_array_equal(res.correct, g_labels[res.indices] == res.query_label)
            assert res.query_class == CLASSES[res.query_label]
            assert res.n_relevant == 12


def test_ap_shown_equals_evaluate_retrieval_per_query(toy):
    explorer, g_labels, q_labels = toy
    for model in explorer.model_names:
        fs = explorer.sets[model]
        for binary in (False, True):
            dist = "hamming" if binary else "euclidean"
            ref = metrics.evaluate_retrieval(
                fs.query_codes(binary),
                q_labels,
                fs.gallery_codes(binary),
                g_labels,
                distance=dist,
                per_query=True,
            )["AP_per_query"]
            shown = [
                explorer.search(model, query_index=i, k=5, binary=binary).ap for i in range(len(q_labels))
            ]
            np.testing.assert_allclose(shown, np.asarray(ref, dtype=np.float64), rtol=0, atol=1e-12)
    # the DSN-like set has tighter clusters than the baseline-like one: its APs are higher on average
    means = [np.mean([explorer.search(m, query_index=i).ap for i in range(15)]) for m in explorer.model_names]
    assert means[1] > means[0]


def test_ap_of_a_perfect_and_a_hopeless_query():
    """Hand-made case: gallery [A, A, B, B]; a query on the A photos has AP 1; called B, 0.5."""
    g = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    fs = FeatureSet("m", g, np.array([[0.0, 0.05]]))
    ex = Explorer(fs, [0, 0, 1, 1], ["a", "b"], query_labels=[0])
    res = ex.search(query_index=0, k=4)
    assert res.indices.tolist()[:2] in ([0, 1], [1, 0]) and res.ap == pytest.approx(1.0)
    assert res.correct.tolist() == [True, True, False, False]
    # the same point, said to be class b: positives at ranks 3 and 4, precisions 1/3 and 2/4; VOC
    # interpolation lifts the 1/3 to 1/2, so AP = 0.5 * 0.5 + 0.5 * 0.5 = 0.5
    wrong = ex.search(feature=np.array([0.0, 0.05]), label="b", k=2)
    assert wrong.correct.tolist() == [False, False]
    assert wrong.ap == pytest.approx(
        float(
            metrics.evaluate_retrieval(np.array([[0.0, 0.05]]), [1], g, [0, 0, 1, 1], per_query=True)[
                "AP_per_query"
            ][0]
        )
    )
    assert wrong.ap == pytest.approx(0.5)


def test_feature_query_with_a_label_matches_the_dataset_query(toy):
    explorer, _, _ = toy
    fs = explorer.sets["DSN"]
    for binary in (False, True):
        a = explorer.search("DSN", query_index=4, k=8, binary=binary)
        b = explorer.search("DSN", feature=fs.queries[4], label=int(a.query_label), k=8, binary=binary)
        np.testing.assert_array_equal(a.indices, b.indices)
        assert a.ap == pytest.approx(b.ap, abs=1e-12)
    unknown = explorer.search("DSN", feature=fs.queries[4], k=8)
    assert unknown.ap is None and unknown.correct is None and unknown.query_class is None


def test_binary_codes_rank_by_hamming_distance(toy):
    explorer, _, _ = toy
    fs = explorer.sets["baseline"]
    gcodes = fs.gallery_codes(True)
    assert gcodes.shape == (60, 6) and set(np.unique(gcodes)) <= {-1.0, 1.0}
    res = explorer.search("baseline", query_index=2, k=20, binary=True)
    q = fs.query_codes(True)[2]
    hamming = (gcodes != q).sum(axis=1)
    # ties are common in Hamming space: the shown distances must be the 20 smallest, in order
    np.testing.assert_array_equal(hamming[res.indices], np.sort(hamming, kind="stable")[:20])
    assert res.binary and not explorer.search("baseline", query_index=2, k=20).binary


def test_k_is_clipped_and_respected(toy):
    explorer, _, _ = toy
    assert len(explorer.search(query_index=0, k=1).indices) == 1
    assert len(explorer.search(query_index=0, k=1000).indices) == 60
    assert len(explorer.search(query_index=0, k=0).indices) == 1


def test_class_filter_and_random_query(toy):
    explorer, _, q_labels = toy
    idx = explorer.query_indices("apple")
    assert idx.tolist() == np.flatnonzero(q_labels == 2).tolist()
    assert explorer.query_indices(2).tolist() == idx.tolist()
    assert len(explorer.query_indices()) == 15
    rng = np.random.default_rng(1)
    picks = {explorer.random_query("dog", rng) for _ in range(30)}
    assert picks == set(np.flatnonzero(q_labels == 1).tolist())
    with pytest.raises(KeyError, match="Unknown class"):
        explorer.query_indices("zebra")


def test_grid_marks_each_tile(toy):
    explorer, g_labels, _ = toy
    res = [explorer.search(m, query_index=3, k=7) for m in explorer.model_names]
    page = explorer.grid_html(res, "data:image/jpeg;base64,xx", "test sketch")
    assert page.count('class="dsn-panel"') == 2 and page.count('class="dsn-tile"') == 14
    marks = [int(x) for x in __import__("re").findall(r'data-correct="(\d)"', page)]
    expected = [int(c) for r in res for c in r.correct]
    assert marks == expected and 0 < sum(marks) < 14
    assert f"{res[0].ap:.3f}" in page and CLASSES[res[0].query_label] in page


def test_construction_errors():
    g = np.zeros((4, 3))
    with pytest.raises(ValueError, match="gallery features"):
        Explorer(FeatureSet("m", g), [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="do not match"):
        FeatureSet("m", g, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="must differ"):
        Explorer([FeatureSet("m", g), FeatureSet("m", g)], [0, 0, 1, 1], ["a", "b"])


# ---------------------------------------------------------------------------------------------------
# query images


def test_load_query_image_rejects_non_images():
    with pytest.raises(QueryImageError, match="not an image"):
        load_query_image(b"%PDF-1.4 this is no picture", name="notes.pdf")
    with pytest.raises(QueryImageError, match="empty"):
        load_query_image(b"", name="x.png")
    truncated = _png(Image.new("RGB", (64, 64), "red"))[:40]
    with pytest.raises(QueryImageError, match="not an image"):
        load_query_image(truncated, name="cut.png")
    img = load_query_image(_png(_stroke_drawing()), name="ok.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)  # transparency -> white


def test_decode_drawing_empty_and_damaged():
    for empty in (
        "",
        "   ",
        _data_url(Image.new("RGBA", (64, 64), (0, 0, 0, 0))),
        _data_url(Image.new("RGB", (64, 64), "white")),
    ):
        with pytest.raises(QueryImageError, match="empty"):
            decode_drawing(empty)
    with pytest.raises(QueryImageError, match="PNG data URL"):
        decode_drawing("hello")
    with pytest.raises(QueryImageError, match="damaged"):
        decode_drawing("data:image/png;base64,@@@")
    img = decode_drawing(_data_url(_stroke_drawing()))
    assert img.size == (64, 64) and np.asarray(img).min() == 0


# ---------------------------------------------------------------------------------------------------
# the widget layer (no browser: drive the widgets' values as the front end would)


@pytest.fixture()
def widget(toy):
    return RetrievalExplorer(toy[0], k=5)


def _message(w: RetrievalExplorer) -> tuple[str, str]:
    """The message line as the person sees it: ("error" | "status" | "", its text)."""
    m = re.fullmatch(r'<div class="dsn-(error|status)"[^>]*>(.*)</div>', w.message.value, flags=re.S)
    assert m or w.message.value == "", w.message.value
    return (m.group(1), html.unescape(m.group(2))) if m else ("", "")


def test_widget_initial_state_and_settings(widget):
    w = widget
    kind, text = _message(w)  # the status names the query the grid shows
    name = w.explorer.query_names[w.query.value]
    assert kind == "status" and text.startswith(f"test sketch: {name}: ranked and drawn in")
    assert w.model.value == RetrievalExplorer.BOTH
    assert [r.model for r in w.last_results] == ["baseline", "DSN"] and all(r.k == 5 for r in w.last_results)
    assert w.grid.value.count('class="dsn-tile"') == 10
    w.k.value = 9
    assert all(r.k == 9 for r in w.last_results) and w.grid.value.count('class="dsn-tile"') == 18
    w.model.value = "DSN"
    assert [r.model for r in w.last_results] == ["DSN"]
    w.codes.value = "binary (ITQ)"
    assert w.last_results[0].binary and "Hamming" in w.grid.value
    expected = w.explorer.search("DSN", query_index=w.query.value, k=9, binary=True)
    np.testing.assert_array_equal(w.last_results[0].indices, expected.indices)


def test_widget_class_filter_and_random(widget):
    w = widget
    w.class_filter.value = "car"
    car = set(w.explorer.query_indices("car").tolist())
    assert {v for _, v in w.query.options} == car
    assert w.last_results[0].query_class == "car"
    for _ in range(5):
        i = w.pick_random()
        assert i in car and w.query.value == i and w.last_results[0].query_class == "car"
    w.class_filter.value = RetrievalExplorer.ALL
    w.query.value = 0
    assert w.last_results[0].query_class == "cat"


def test_widget_bad_upload_shows_a_message(widget):
    w = widget
    before, shown = w.grid.value, w.explorer.query_names[w.query.value]
    assert w.query_image_bytes(b"GIF89 garbage", name="bad.gif") is False
    assert "not an image" in w.message.value and "bad.gif" in w.message.value
    assert w.grid.value == before  # the previous results stay, and the red message says whose they are
    kind, text = _message(w)
    assert kind == "error" and text.endswith(f"(Below: the results for test sketch: {shown}.)")
    # the FileUpload path takes the same route
    _choose_file(w.upload, "notes.txt", b"hello")
    assert "notes.txt" in w.message.value and "not an image" in w.message.value
    assert not w.upload.value  # emptied, so that uploading the same file again fires again


def _choose_file(upload, name: str, content: bytes) -> None:
    """What the front end does when a file is chosen, for the installed ipywidgets (8, or 7 as on Colab)."""
    if isinstance(upload.value, dict):  # ipywidgets 7: lists of metadata and data, then a counter tick
        upload.metadata = [{"name": name, "type": "image/png", "size": len(content), "lastModified": 0}]
        upload.data = [content]
        upload._counter += 1
    else:  # ipywidgets 8: a tuple of dicts
        when = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        upload.value = (
            {
                "name": name,
                "type": "image/png",
                "size": len(content),
                "content": memoryview(content),
                "last_modified": when,
            },
        )


def test_widget_same_upload_twice_is_two_queries(widget):
    w = widget
    enc = w.explorer.sets["DSN"].encode
    calls = enc.calls
    png = _png(Image.new("RGB", (30, 30), (20, 30, 200)))
    for n in (1, 2):
        _choose_file(w.upload, "blue.png", png)
        assert enc.calls == calls + n and not w.upload.value
        assert "uploaded: blue.png" in w.grid.value
        assert _message(w)[1].startswith("uploaded: blue.png: ranked")


def test_widget_good_upload_and_drawing(widget):
    w = widget
    enc = w.explorer.sets["DSN"].encode
    calls = enc.calls
    assert w.query_image_bytes(_png(Image.new("RGB", (30, 30), (200, 30, 30))), name="red.png")
    assert enc.calls == calls + 1
    assert [r.query_label for r in w.last_results] == [None, None] and "uploaded: red.png" in w.grid.value
    w.upload_class.value = "dog"  # the user says what it is: marks and AP appear, no re-encoding
    assert all(r.query_class == "dog" and r.ap is not None for r in w.last_results)
    assert enc.calls == calls + 1
    w.pad.value = _data_url(_stroke_drawing())  # what the pad's JavaScript does when the pen lifts
    assert "your drawing" in w.grid.value and enc.calls == calls + 2
    assert _message(w)[0] == "status" and _message(w)[1].startswith("your drawing: ranked and drawn in")
    w.k.value = 3  # settings re-rank the drawing without re-encoding it
    assert all(r.k == 3 for r in w.last_results) and enc.calls == calls + 2
    w.draw_button.click()  # searching the same drawing again: results and status, no error
    assert "your drawing" in w.grid.value and _message(w)[1].startswith("your drawing: ranked")


def test_widget_cleared_drawing_leaves_no_stale_results(widget):
    """Clear the pad after a drawing search, then search: the red message must not sit on the old drawing's
    results (the browser test's screenshot once showed exactly that)."""
    w = widget
    sketch = f"test sketch: {w.explorer.query_names[w.query.value]}"
    w.pad.value = _data_url(_stroke_drawing())
    assert "your drawing" in w.grid.value
    w.pad.value = ""  # "clear drawing": back to the chosen test sketch
    assert "your drawing" not in w.grid.value and sketch in w.grid.value
    assert _message(w)[0] == "status" and _message(w)[1].startswith(f"{sketch}: ranked")
    w.draw_button.click()  # searching the empty pad
    kind, text = _message(w)
    assert kind == "error" and text.startswith("The drawing is empty")
    assert text.endswith(f"(Below: the results for {sketch}.)") and "your drawing" not in w.grid.value
    w.pad.value = _data_url(Image.new("RGBA", (40, 40), (0, 0, 0, 0)))  # a blank canvas is empty too
    assert _message(w)[0] == "error" and "drawing is empty" in _message(w)[1]
    w.pad.value = _data_url(_stroke_drawing())  # a real drawing after an error: the error goes
    assert _message(w)[0] == "status" and _message(w)[1].startswith("your drawing: ranked")


def test_widget_error_while_ranking_clears_the_grid(widget, monkeypatch):
    w = widget
    assert w.grid.value

    def broken(*args, **kwargs):
        raise RuntimeError("ranking failed")

    monkeypatch.setattr(w.explorer, "search", broken)
    w.k.value = 7
    assert w.grid.value == "" and w.last_results == []  # no results that are not for these settings
    assert _message(w) == ("error", "RuntimeError: ranking failed")


class _Ipywidgets7Upload(traitlets.HasTraits):
    """ipywidgets 7's FileUpload as this module sees it: a read-only ``value`` dict {name: {metadata,
    content}}, rebuilt by the widget on each upload (traitlets only notifies when it changes)."""

    value = traitlets.Dict(read_only=True)

    def choose(self, name: str, content: bytes) -> None:
        meta = {"name": name, "type": "image/png", "size": len(content), "lastModified": 0}
        self.set_trait("value", {name: {"metadata": meta, "content": content}})


def test_widget_upload_in_ipywidgets_7_format(widget):
    w = widget
    up = _Ipywidgets7Upload()
    with pytest.raises(traitlets.TraitError, match="read-only"):
        up.value = {}  # as in ipywidgets 7
    w.upload = up
    up.observe(lambda ch: w._on_upload(), names="value")
    enc = w.explorer.sets["DSN"].encode
    calls = enc.calls
    png = _png(Image.new("RGB", (30, 30), (20, 200, 30)))
    up.choose("green.png", png)
    assert "uploaded: green.png" in w.grid.value and enc.calls == calls + 1 and up.value == {}
    up.choose("green.png", png)  # the same file again is a new query, because the value was emptied
    assert enc.calls == calls + 2 and _message(w)[1].startswith("uploaded: green.png: ranked")


def test_drawing_pad_widget():
    pad = drawing_pad(100)
    assert pad.value == "" and pad.size == 100
    assert "export default" in pad._esm and "toDataURL" in pad._esm  # the front end ships with it
    with pytest.raises(ValueError, match="too small"):
        drawing_pad(3)


def _fake_colab(monkeypatch) -> list[str]:
    """A stand-in ``google.colab`` package whose ``output.enable_custom_widget_manager`` counts its calls."""
    calls: list[str] = []
    google, colab, output = (types.ModuleType(n) for n in ("google", "google.colab", "google.colab.output"))
    output.enable_custom_widget_manager = lambda: calls.append("enable")
    output._widgets = types.SimpleNamespace(_installed_url=None)  # what anywidget reads when it displays
    colab.output, google.colab = output, colab
    for name, mod in (("google", google), ("google.colab", colab), ("google.colab.output", output)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(widgets_mod, "_colab_widgets_enabled", False)
    return calls


def test_enable_colab_widgets(monkeypatch):
    for name in ("google.colab", "google.colab.output"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(widgets_mod, "_colab_widgets_enabled", False)
    assert enable_colab_widgets() is False  # not in Colab: nothing to do
    calls = _fake_colab(monkeypatch)
    assert enable_colab_widgets() is True and calls == ["enable"]
    assert enable_colab_widgets() is True and calls == ["enable"]  # once per kernel


def test_enable_colab_widgets_failure_is_a_warning(monkeypatch):
    _fake_colab(monkeypatch)

    def broken():
        raise RuntimeError("no widget manager here")

    monkeypatch.setattr(sys.modules["google.colab.output"], "enable_custom_widget_manager", broken)
    with pytest.warns(UserWarning, match="enable_custom_widget_manager.*display the explorer again"):
        assert enable_colab_widgets() is True
    assert widgets_mod._colab_widgets_enabled is False  # tried again next time


def test_explorer_enables_colab_widgets_before_its_widgets(toy, monkeypatch):
    calls = _fake_colab(monkeypatch)
    made = []
    real = widgets_mod.drawing_pad
    monkeypatch.setattr(widgets_mod, "drawing_pad", lambda size: made.append(list(calls)) or real(size))
    RetrievalExplorer(toy[0])
    assert made and made[0][:1] == ["enable"]  # the manager was on before the pad was made
    RetrievalExplorer(toy[0])
    assert "enable" in calls and widgets_mod._colab_widgets_enabled


def test_widget_without_an_encoder_explains(toy):
    explorer, g_labels, q_labels = toy
    fs = explorer.sets["DSN"]
    bare = Explorer(
        FeatureSet("precomputed", fs.gallery, fs.queries), g_labels, CLASSES, query_labels=q_labels
    )
    w = RetrievalExplorer(bare)
    assert w.model.options == ("precomputed",)
    assert w.query_image_bytes(_png(Image.new("RGB", (30, 30), "blue")), name="b.png") is False
    assert "without a model" in w.message.value


def test_thumbnails_disk_cache(tmp_path):
    calls = []

    def loader(i):
        calls.append(i)
        return Image.new("RGB", (300, 200), (i * 40, 0, 0))

    t = Thumbnails(loader, 3, size=32, keys=["a", "b", "c"], cache_dir=tmp_path)
    uri = t.uri(1)
    assert uri.startswith("data:image/jpeg;base64,") and t.uri(1) == uri and calls == [1]
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(thumb.size) == 32
    again = Thumbnails(loader, 3, size=32, keys=["a", "b", "c"], cache_dir=tmp_path)
    assert again.uri(1) == uri and calls == [1]  # read from disk, not drawn again


# ---------------------------------------------------------------------------------------------------
# with a real (tiny, random-weight) model and the synthetic dataset


def test_from_models_on_the_synthetic_dataset(tmp_path):
    torch = pytest.importorskip("torch")
    model_mod = pytest.importorskip("dsn_lab.model", reason="dsn_lab.model is not written yet")
    from dsn_lab.config import get_preset
    from dsn_lab.data import get_dataset
    from dsn_lab.data.fixtures import make_synthetic_emojisketch

    torch.set_num_threads(1)
    root = make_synthetic_emojisketch(tmp_path / "data", n_train=6, n_val=2, n_zero=4, per_class=3, size=32)
    cfg = get_preset("cpu-quick")
    sk = get_dataset("emojisketch", root, split="zero", domain="sketch")
    ph = get_dataset("emojisketch", root, split="zero", domain="photo")
    torch.manual_seed(0)
    model = model_mod.build_model(cfg, num_classes=6)
    w = RetrievalExplorer.from_models(
        model, sk, ph, image_size=cfg.image_size, cache_dir=tmp_path / "cache", k=4, progress=False
    )
    ex = w.explorer
    assert ex.classes == ph.classes and len(ex.gallery_labels) == len(ph) and ex.num_queries == len(sk)
    assert w.grid.value.count('class="dsn-tile"') == 4
    # an uploaded copy of a test sketch lands exactly where the cached feature of that sketch is
    fs = ex.sets["model"]
    img, _ = sk.load_image(5)
    np.testing.assert_allclose(fs.encode(img), fs.queries[5], atol=1e-5)
    assert w.query_image_bytes(_png(img), name="copy.png")
    w.upload_class.value = sk.classes[sk.samples[5][1]]
    np.testing.assert_array_equal(w.last_results[0].indices, ex.search(query_index=5, k=4).indices)
    assert w.last_results[0].ap == pytest.approx(ex.search(query_index=5).ap, abs=1e-6)
    assert list((tmp_path / "cache" / "features").glob("*.npz")) and (tmp_path / "cache" / "thumbs").is_dir()


def test_from_checkpoints_side_by_side(tmp_path):
    torch = pytest.importorskip("torch")
    model_mod = pytest.importorskip("dsn_lab.model", reason="dsn_lab.model is not written yet")
    from dsn_lab import checkpoint
    from dsn_lab.config import get_preset
    from dsn_lab.data.fixtures import make_synthetic_emojisketch

    torch.set_num_threads(1)
    root = make_synthetic_emojisketch(tmp_path / "data", n_train=6, n_val=2, n_zero=4, per_class=2, size=32)
    cfg = get_preset("cpu-quick", data_root=str(root))
    paths = {}
    for seed, name in enumerate(["baseline", "DSN"]):
        torch.manual_seed(seed)
        model = model_mod.build_model(cfg, num_classes=6)
        payload = {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "version": checkpoint.CHECKPOINT_VERSION,
            "config": cfg.to_json(),
            "num_classes": 6,
            "model": model.state_dict(),
        }
        paths[name] = checkpoint.save_checkpoint(payload, tmp_path / f"{name}.pt")
    w = RetrievalExplorer.from_checkpoints(paths, cache_dir=tmp_path / "cache", k=3, progress=False)
    assert w.explorer.model_names == ["baseline", "DSN"] and w.explorer.num_queries == 8
    assert [r.model for r in w.last_results] == ["baseline", "DSN"]
    a, b = (w.explorer.sets[n].gallery for n in ("baseline", "DSN"))
    assert a.shape == b.shape == (8, cfg.hashing_dim) and not np.allclose(a, b)  # two different models
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 4  # 2 checkpoints x 2 domains


def test_search_restores_the_torch_thread_count(toy):
    torch = pytest.importorskip("torch")
    explorer = toy[0]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        explorer.search(query_index=1, k=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
