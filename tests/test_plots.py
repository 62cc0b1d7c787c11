"""Tests for dsn_lab/plots.py: every figure builds, returns a Figure and writes a PNG atomically."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from dsn_lab import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.exists() and path.read_bytes()[:8] == PNG_MAGIC
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # the temporary file was renamed, not left behind


def gap_row(epoch, scale, **extra):
    return {
        "epoch": epoch,
        "gap/domain_classifier_acc": 0.5 + 0.5 * scale,
        "gap/mmd": 0.3 * scale,
        "gap/mmd_pvalue": 1.0 - scale,
        "gap/centroid_distance": scale,
        "gap/sketch_dispersion": 0.2 + 0.1 * scale,
        "gap/photo_dispersion": 0.2,
        "gap/cross_domain_nn_agreement": 1.0 - 0.5 * scale,
        **extra,
    }


def test_use_style_and_context_do_not_leak():
    before = dict(mpl.rcParams)
    with plots.style_context():
        assert mpl.rcParams["axes.grid"] is True  # seaborn whitegrid
    assert dict(mpl.rcParams) == before
    fig = plots.plot_gap_measures([gap_row(0, 1.0), gap_row(1, 0.5)])
    assert isinstance(fig, Figure)
    assert dict(mpl.rcParams) == before  # plotting never changes the user's settings
    try:
        plots.use_style()
        assert mpl.rcParams["axes.grid"] is True
    finally:
        mpl.rcParams.update(before)


def test_no_backend_forced_on_import():
    import subprocess
    import sys

    code = (
        "import matplotlib; b = matplotlib.rcParams._get_backend_or_none(); import dsn_lab.plots; "
        "assert matplotlib.rcParams._get_backend_or_none() == b, 'backend changed'; "
        "import sys; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_projection_before_after(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    before, after = rng.normal(size=(n, 2)), torch.from_numpy(rng.normal(size=(n, 2)))
    domains = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
    labels = np.tile(np.arange(4), n // 4)
    out = tmp_path / "sub" / "proj.png"
    fig = plots.plot_projection_before_after(
        before, after, domains, labels, class_names=["a", "b", "c", "d"], save_to=out
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert_png(out)
    legend_texts = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert legend_texts == ["a", "b", "c", "d"]
    # the list form from analysis.project infers the domains
    fig2 = plots.plot_projection_before_after(
        [before[:20], before[20:]], [after[:20], after[20:]], labels=labels
    )
    assert [t.get_text() for t in fig2.axes[0].get_legend().get_texts()] == ["sketch", "photo"]
    with pytest.raises(ValueError, match="same points"):
        plots.plot_projection_before_after(before, after[:-1], domains, labels)
    with pytest.raises(ValueError, match="0 \\(sketch\\) or 1"):
        plots.plot_projection_before_after(before, after, domains + 2, labels)


def test_projection_highlights_a_few_of_many_classes():
    """109 classes cannot be told apart by colour: 8 spread over the class list are coloured (the same in
    every panel), the rest grey, and one legend under the panels names the 8. Float 0/1 domains are
    sketches / photos, as integer ones are."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.arange(109), np.repeat(np.arange(109), 2)]
    domains = np.r_[np.zeros(109), np.ones(218)]  # floats, as np.zeros gives them
    frames = [rng.normal(size=(len(labels), 2)) for _ in range(3)]
    names = [f"concept{i}" for i in range(109)]
    fig = plots.plot_projection_panels(frames, domains, labels, titles=["e0", "e1", "e2"], class_names=names)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [t.get_text() for t in axes[0, 0].get_legend().get_texts()] == ["sketch", "photo"]
    (legend,) = fig.legends
    expected = [names[int(i)] for i in np.linspace(0, 108, 8).astype(int)]
    assert [t.get_text() for t in legend.get_texts()] == expected
    assert "8 of 109 classes in colour" in legend.get_title().get_text()
    for ax in axes[1]:
        assert ax.get_legend() is None
        # grey context (sketches, photos) first, then each coloured class's sketches and photos
        greys = [c for c in ax.collections if mpl.colors.to_hex(c.get_facecolor()[0]) == "#cfcfcf"]
        assert len(greys) == 2 and sum(len(c.get_offsets()) for c in greys) == len(labels) - 8 * 3
    fig = plots.plot_projection_panels(
        frames[:1], domains, labels, titles=["only"], highlight=[3, 5], class_names=names
    )
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["concept3", "concept5"]
    with pytest.raises(ValueError, match="not all labels"):
        plots.plot_projection_panels(frames[:1], domains, labels, titles=["x"], highlight=[3, 500])
    with pytest.raises(ValueError, match="1 frames but 2 titles"):
        plots.plot_projection_panels(frames[:1], domains, labels, titles=["x", "y"])


def test_gap_measures_over_epochs(tmp_path):
    rows = [gap_row(e, 1.0 / (e + 1), method="DSN") for e in range(4)]
    rows += [gap_row(e, 1.0, method="baseline") for e in range(4)]
    rows.insert(2, {"epoch": 0, "step": 5, "loss": 1.0})  # per-step rows without gap values are skipped
    out = tmp_path / "gap.png"
    fig = plots.plot_gap_measures(pd.DataFrame(rows), hue="method", save_to=out)
    assert_png(out)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6  # the default measures
    acc_ax = visible[0]
    dsn_line = [ln for ln in acc_ax.get_lines() if len(ln.get_xdata()) == 4]
    assert any(np.allclose(ln.get_ydata(), [0.5 + 0.5 / (e + 1) for e in range(4)]) for ln in dsn_line)
    fig = plots.plot_gap_measures(rows, measures=["mmd", "mmd_pvalue"])
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    with pytest.raises(ValueError, match="no domain-gap columns"):
        plots.plot_gap_measures([{"epoch": 0, "loss": 1.0}])
    with pytest.raises(KeyError, match="mmd"):
        plots.plot_gap_measures([{"epoch": 0, "gap/centroid_distance": 1.0}], measures=["mmd"])


def test_gap_bars(tmp_path):
    def gap(scale):
        return {k.removeprefix("gap/"): v for k, v in gap_row(0, scale).items() if k != "epoch"}

    table = {
        "baseline": {"before": gap(1.0), "after": gap(0.8)},
        "DSN": {"before": gap(1.0), "after": gap(0.3)},
    }
    out = tmp_path / "bars.png"
    fig = plots.plot_gap_bars(table, save_to=out)
    assert_png(out)
    acc_ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in acc_ax.patches if p.get_height() > 0)
    assert heights == sorted(round(0.5 + 0.5 * s, 6) for s in (1.0, 0.8, 1.0, 0.3))
    rows = pd.DataFrame(
        [
            {"method": "DSN", "stage": "after", "gap/mmd": 0.1},
            {"method": "DSN", "stage": "before", "gap/mmd": 0.3},
        ]
    )
    assert len(plots.plot_gap_bars(rows).axes) == 1
    # a measure undefined everywhere (one sketch per class: no sketch dispersion) gets no panel ...
    nan_table = {
        m: {st: {**g, "sketch_dispersion": float("nan")} for st, g in v.items()} for m, v in table.items()
    }
    titles = [ax.get_title() for ax in plots.plot_gap_bars(nan_table).axes if ax.get_visible()]
    assert len(titles) == len([ax for ax in fig.axes if ax.get_visible()]) - 1
    assert not any("sketch" in t and "dispersion" in t for t in titles)
    # ... unless asked for by name
    assert (
        len(
            [
                ax
                for ax in plots.plot_gap_bars(nan_table, measures=["sketch_dispersion"]).axes
                if ax.get_visible()
            ]
        )
        == 1
    )
    with pytest.raises(KeyError, match="stage"):
        plots.plot_gap_bars([{"method": "DSN", "mmd": 0.1}])
    # the demo's long group names are wrapped, so that neighbouring labels do not run into each other
    named = {"DSN, multi-style queries": table["DSN"], "CE + KD baseline": table["baseline"]}
    labels = [t.get_text() for t in plots.plot_gap_bars(named).axes[0].get_xticklabels()]
    assert labels == ["DSN,\nmulti-style\nqueries", "CE + KD\nbaseline"]


def named_lines(ax) -> set[str]:
    return {ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_training_curves_validation_panel():
    """Columns equal within 0.005 are one line named by both; the best value of the first is starred."""
    rows = [
        {"step": s, "val_mAP@all": v, "val_mAP@200": v + 0.001, "val_P@100": 0.04}
        for s, v in ((10, 0.30), (20, 0.42), (30, 0.41))
    ]
    fig = plots.plot_training_curves(rows, panels={"validation": ["val_mAP@all", "val_mAP@200", "val_P@100"]})
    ax = fig.axes[0]
    assert named_lines(ax) == {"val_mAP@all = val_mAP@200", "val_P@100"}
    star = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [20] and list(star[0].get_ydata()) == [0.42]
    assert any(t.get_text() == "best 0.420" for t in ax.texts)
    fig = plots.plot_training_curves(
        rows, panels={"validation": ["val_mAP@all", "val_P@100"]}, best="val_P@100"
    )
    assert [list(ln.get_ydata()) for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"] == [[0.04]]
    with pytest.raises(KeyError, match="best="):
        plots.plot_training_curves(rows, best="nope")
    fig = plots.plot_training_curves(
        rows, panels={"a": ["val_P@100"], "b": ["val_mAP@all"], "c": ["val_mAP@200"]}
    )
    assert [ax.get_visible() for ax in fig.axes] == [True, True, True, False]  # 2 x 2, the fourth hidden


def test_training_curves(tmp_path):
    hist = []
    for step in range(20):
        hist.append(
            {
                "epoch": step // 10,
                "step": step,
                "loss": 2.0 / (step + 1),
                "loss/ce": 1.0 / (step + 1),
                "loss/kd": 0.5,
                "train_acc": step / 20,
                "lr": 1e-4 * 0.5 ** (step / 10),
            }
        )
    hist.append({"epoch": 0, "step": 9, "val_acc": 0.3, "val/mAP@all": 0.2})
    hist.append({"epoch": 1, "step": 19, "val_acc": 0.4, "val/mAP@all": 0.25, "gap/mmd": 0.1})
    out = tmp_path / "curves.png"
    fig = plots.plot_training_curves(hist, save_to=out, smooth=3)
    assert_png(out)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["losses", "accuracy", "learning rate", "validation"]
    assert fig.axes[2].get_yscale() == "log"
    assert named_lines(fig.axes[0]) == {"total", "loss/ce", "loss/kd"}  # the total named as such
    assert named_lines(fig.axes[1]) == {"train_acc", "val_acc"}
    # 20 noisy per-step points: drawn faint, with the running mean of smooth=3 rows on top
    total = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "total")
    losses = [2.0 / (s + 1) for s in range(20)]
    expected = [sum(losses[max(0, i - 2) : i + 1]) / len(losses[max(0, i - 2) : i + 1]) for i in range(20)]
    np.testing.assert_allclose(total.get_ydata(), expected)
    assert total.get_linewidth() > 2  # the thick line
    # the learning rate is a schedule, not noise: drawn as it is
    lr_line = fig.axes[2].get_lines()
    assert len(lr_line) == 1 and np.allclose(
        lr_line[0].get_ydata(), [1e-4 * 0.5 ** (s / 10) for s in range(20)]
    )
    # by default only 30 points or more are smoothed (a running mean of a few points misleads)
    fig = plots.plot_training_curves(hist)
    assert len(fig.axes[0].get_lines()) == 3 and named_lines(fig.axes[0]) == {"total", "loss/ce", "loss/kd"}
    fig = plots.plot_training_curves(hist, panels={"mAP": ["val/mAP@all"]}, x="epoch")
    assert len(fig.axes) == 1 and list(fig.axes[0].get_lines()[0].get_ydata()) == [0.2, 0.25]
    with pytest.raises(ValueError, match="no loss"):
        plots.plot_training_curves([{"epoch": 0, "foo": 1.0}])


def test_run_curve_panels_one_point_each():
    columns = [
        "step",
        "epoch",
        "loss",
        "loss_ce",
        "loss_memory",
        "acc",
        "lr",
        "lr_backbone",
        "val_mAP@all",
        "val_P@100",
        "val_mAP@200",
        "gap/mmd",
        "elapsed",
    ]
    assert plots.run_curve_panels(columns) == {
        "losses": ["loss", "loss_ce", "loss_memory"],
        "training accuracy (per batch)": ["acc"],
        "learning rate": ["lr", "lr_backbone"],
        "validation mAP@all (held-out training concepts)": ["val_mAP@all"],
    }
    assert plots.run_curve_panels(["step", "foo"]) == {}


def test_retrieval_grid(tmp_path):
    rng = np.random.default_rng(0)
    queries = [torch.rand(3, 16, 16), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)]
    gallery = [[torch.randn(3, 16, 16) for _ in range(5)], [rng.random((16, 16)) for _ in range(5)]]
    mask = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], bool)
    out = tmp_path / "grid.png"
    fig = plots.plot_retrieval_grid(queries, gallery, mask, k=4, query_titles=["cat", "dog"], save_to=out)
    assert_png(out)
    axes = np.array(fig.axes).reshape(2, 5)
    assert mpl.colors.to_hex(axes[0, 1].spines["top"].get_edgecolor()) == "#2a9d3f"  # correct: green
    assert mpl.colors.to_hex(axes[0, 2].spines["top"].get_edgecolor()) == "#d62828"  # wrong: red
    img = axes[0, 2].get_images()[0].get_array()
    assert img.min() >= 0.0 and img.max() <= 1.0  # a normalised tensor was rescaled for display
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plots.plot_retrieval_grid(queries[:1], gallery[:1], mask[:1], denormalize=(mean, std))
    with pytest.raises(ValueError, match="at least k=9"):
        plots.plot_retrieval_grid(queries, gallery, mask, k=9)
    # the frames are explained in a legend, in the frames' colours
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "same class as the query (a hit)",
        "another class (a miss)",
    ]
    assert [mpl.colors.to_hex(h.get_edgecolor()) for h in legend.legend_handles] == ["#2a9d3f", "#d62828"]


def test_contact_sheet_rows_of_different_lengths(tmp_path):
    from PIL import Image

    red, gray = Image.new("RGB", (8, 8), (255, 0, 0)), np.full((8, 8), 0.5)
    rows = [("cat", [("photo", red), ("openmoji", gray), ("tabler", gray)]), ("dog", [("photo", red)])]
    fig = plots.plot_contact_sheet(rows, save_to=tmp_path / "sheet.png")
    axes = np.asarray(fig.axes).reshape(2, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["cat", "dog"]
    assert [ax.get_title() for ax in axes[0]] == ["photo", "openmoji", "tabler"]
    assert len(axes[1, 0].images) == 1 and not axes[1, 1].images and not axes[1, 2].images  # blank cells
    assert np.allclose(axes[0, 0].images[0].get_array()[0, 0], [1, 0, 0])
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no images"):
        plots.plot_contact_sheet([("cat", [])])


def test_per_class_ap(tmp_path):
    ap = np.array([0.2, 0.4, 0.9, 0.1, 0.5])
    labels = np.array([0, 0, 1, 2, 2])
    out = tmp_path / "ap.png"
    fig = plots.plot_per_class_ap(ap, labels, class_names=["cat", "dog", "owl"], save_to=out)
    assert_png(out)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([0.9, 0.3, 0.3])  # per-class means, sorted descending
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dog", "cat", "owl"]  # ties keep class order
    mean_line = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"][0]
    assert mean_line.get_xdata()[0] == pytest.approx(0.5)  # mean over classes, not over queries (0.42)
    fig = plots.plot_per_class_ap({f"c{i}": i / 100 for i in range(100)}, max_classes=10)
    assert len(fig.axes[0].patches) == 10


def test_cid_mask_heatmap(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((50, 1000)).astype(np.float32) * 0.2
    mask[3, 777] = 1.0
    out = tmp_path / "cid.png"
    names = [f"class{i}" for i in range(50)]
    fig = plots.plot_cid_mask_heatmap(mask, names, max_rows=10, top_k=8, save_to=out)
    assert_png(out)
    xt = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(xt) == 8 and "777" in xt
    with pytest.raises(ValueError, match="matrix"):
        plots.plot_cid_mask_heatmap(np.zeros(5))


def test_save_figure_needs_suffix_and_writes_pdf(tmp_path):
    fig = plots.plot_gap_measures([gap_row(0, 1.0)])
    with pytest.raises(ValueError, match="suffix"):
        plots.save_figure(fig, tmp_path / "noext")
    path = plots.save_figure(fig, tmp_path / "g.pdf")
    assert path.read_bytes()[:4] == b"%PDF"


def test_ablations_from_rows_and_from_a_table(tmp_path):
    rows = pd.DataFrame(
        {
            "run": ["baseline", "baseline", "+ memory", "+ memory", "full"],
            "seed": [1, 2, 1, 2, 1],
            "mAP@all": [0.2, 0.4, 0.5, 0.5, 0.7],
            "P@100": [0.1, 0.1, 0.2, 0.2, 0.3],
        }
    )
    out = tmp_path / "ablations.png"
    fig = plots.plot_ablations(rows, title="ladder", save_to=out)
    assert_png(out)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert [b.get_width() for b in bars] == pytest.approx([0.3, 0.5, 0.7])  # means over seeds
    assert [t.get_text() for t in ax.get_yticklabels()] == ["baseline", "+ memory", "full"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first run on top
    assert ax.get_title() == "ladder" and "mAP@all" in ax.get_xlabel()
    # error bars only where the std is > 0: baseline (two seeds that differ)
    segments = [s for c in ax.collections for s in c.get_segments() if len(s)]
    assert len(segments) == 1
    assert sorted(segments[0][:, 0]) == pytest.approx([0.3 - 0.1414, 0.3 + 0.1414], abs=1e-3)
    table = rows.groupby("run", sort=False)[["mAP@all", "P@100"]].agg(["mean", "std"])
    fig = plots.plot_ablations(table, metric="P@100")
    assert [p.get_width() for p in fig.axes[0].patches] == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(KeyError, match="mAP@200"):
        plots.plot_ablations(rows, metric="mAP@200")
    with pytest.raises(KeyError, match="'run'"):
        plots.plot_ablations(pd.DataFrame({"x": [1.0]}))


def _figure_texts(fig):
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


def test_architecture_names_each_loss_its_weight_and_function(tmp_path):
    from dsn_lab import losses, memory, step

    fig = plots.plot_architecture(save_to=tmp_path / "arch.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "arch.png")
    texts = _figure_texts(fig)
    assert {"CE", "KD (SAKE)", "SupCon", "memory"} <= set(texts)  # the loss boxes' titles
    joined = "\n".join(texts)
    for field in ("w_ce", "w_kd", "w_contrastive", "w_memory"):
        assert f"× {field}" in joined
    for func in (
        "F.cross_entropy",
        "sake_kd_loss",
        "SupConLoss",
        "SketchMemory.loss",
        "dsn_lab.step.dsn_step",
    ):
        assert func in joined
    # the names the figure prints are the package's
    assert callable(losses.sake_kd_loss) and callable(losses.SupConLoss.forward)
    assert callable(memory.SketchMemory.loss) and callable(step.dsn_step)
    assert set(step.TERMS) == {"ce", "kd", "contrastive", "memory"}


def test_architecture_with_a_config_shows_its_shapes_weights_and_switches():
    from dsn_lab.config import get_preset

    cfg = get_preset("emoji-demo").replace(hashing_dim=96, memory_slots=7, image_size=80, use_kd=False)
    joined = "\n".join(_figure_texts(plots.plot_architecture(cfg=cfg)))
    assert "[N, 96]" in joined and "[N, 1280]" in joined  # code size, Lite0 pooled feature
    assert "C × 7 × 1280" in joined and "3×80×80" in joined
    assert f"w_contrastive = {cfg.w_contrastive:g}" in joined and "cosine" in joined
    assert "EfficientNet-Lite0" in joined and "off" in joined  # KD switched off
    released = "\n".join(_figure_texts(plots.plot_architecture(cfg=get_preset("sketchy-s1-released"))))
    assert "no gradient (released)" in released and "[N, 2048]" in released and "off" not in released


def test_architecture_feature_widths_match_the_backbones():
    from dsn_lab.model import BACKBONES, build_backbone

    assert set(plots.ARCH_FEATURE_DIMS) == set(BACKBONES)
    for name in BACKBONES:
        assert build_backbone(name, pretrained=False)[0].feature_dim == plots.ARCH_FEATURE_DIMS[name], name


# ---------------------------------------------------------------------------------------------------
# notebook 02: SupCon's similarity matrix and the memory bank
# ---------------------------------------------------------------------------------------------------
def _collection(fig, label):
    ax = fig.axes[0]
    return next(c for c in ax.collections if c.get_label() == label)


def test_supcon_similarity_marks_the_positives_and_its_bars_give_supconloss(tmp_path):
    from dsn_lab.losses import SupConLoss

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 1, 2, 0, 1, 2])  # class 1 three times, in both domains
    domains = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    codes = torch.nn.functional.normalize(torch.randn(7, 2, 5, generator=g), dim=-1)
    fig = plots.plot_supcon_similarity(codes, labels, domains, 0.1, save_to=tmp_path / "supcon.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "supcon.png")
    # brute force over every (anchor, other view) pair of the 14 views
    views = [(i, v) for v in range(2) for i in range(7)]
    positives = sum(1 for a in views for b in views if a != b and labels[a[0]] == labels[b[0]])
    marked = _collection(fig, "positive").get_offsets()
    assert len(marked) == positives == 4 * 3 + 6 * 5 + 4 * 3  # 4, 6, 4 views per class
    assert len(_collection(fig, "self (left out)").get_offsets()) == 14
    # the marks sit on same-class cells: rows and columns are sketches then photos, two views each
    order = [int(labels[i]) for d in (0, 1) for _ in range(2) for i in range(7) if int(domains[i]) == d]
    assert all(order[int(r)] == order[int(c)] and r != c for c, r in marked)
    bars = [p.get_width() for p in fig.axes[1].patches]
    want = SupConLoss(0.1, 0.07)(codes, labels).item()
    assert len(bars) == 14 and np.mean(bars) == pytest.approx(want, rel=1e-5)
    assert f"{want:.3f}" in fig.axes[0].get_title()
    soft = plots.plot_supcon_similarity(codes, labels, domains, value="softmax")
    rows = soft.axes[0].images[0].get_array()
    assert np.allclose(np.nansum(rows, axis=1), 1.0)  # a softmax over the other views of each anchor
    with pytest.raises(ValueError, match="one flag per sample"):
        plots.plot_supcon_similarity(codes, labels, domains[:3])
    with pytest.raises(ValueError, match=r"\[N, views, D\]"):
        plots.plot_supcon_similarity(codes[0, 0], labels, domains)


def _bank_cells(fig, gid, panel=0):
    return [p for p in fig.axes[panel].patches if p.get_gid() == gid]


def test_memory_bank_shows_the_filled_slots_and_the_replaced_one(tmp_path):
    import copy

    from dsn_lab.memory import SketchMemory

    e = torch.eye(4)
    photos, photo_labels = torch.stack([e[0] + e[1], e[2]]), torch.tensor([0, 1])
    names = {f"e{i}": e[i] for i in range(4)}
    banks = {m: SketchMemory(3, 2, 4, faithful=(m == "faithful")) for m in ("faithful", "fixed")}
    for bank in banks.values():
        bank.update(torch.stack([e[0], e[3]]), torch.tensor([0, 0]), photos, photo_labels)
        bank.update(torch.stack([e[2]]), torch.tensor([1]), photos, photo_labels)
    before = {k: copy.deepcopy(b) for k, b in banks.items()}
    for bank in banks.values():  # class 0 is full: e1 is closer to its photo (e0 + e1) than e3
        bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
    fig = plots.plot_memory_bank(banks, before, names=names, save_to=tmp_path / "bank.png")
    assert_png(tmp_path / "bank.png")
    for panel, bank in enumerate(banks.values()):
        assert len(_bank_cells(fig, "filled", panel)) == int(bank.fill.sum()) == 3
        assert len(_bank_cells(fig, "empty", panel)) == 6 - 3
    # fixed: slot 1 of class 0 (e3 -> e1); faithful: the row of class 1 (slot 0 replaced, slot 1 unused)
    fixed = _bank_cells(fig, "replaced", 1)
    assert [(int(p.get_x()), int(p.get_y())) for p in fixed] == [(1, 0)]
    texts = {t.get_text() for t in fig.axes[1].texts}
    assert "e3→e1" in texts and "e0" in texts
    assert [(int(p.get_x()), int(p.get_y())) for p in _bank_cells(fig, "replaced", 0)] == [(0, 1)]
    assert len(_bank_cells(fig, "written, unused", 0)) == 1
    assert "e2→e1" in {t.get_text() for t in fig.axes[0].texts}

    # a bigger bank: rows capped, filled cells follow fill, unnamed slots show their cosine to the centre
    big = SketchMemory(30, 4, 8)
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 30, (50,), generator=g)
    big.update(torch.randn(50, 8, generator=g), lab, torch.randn(50, 8, generator=g), lab)
    fig = plots.plot_memory_bank(big.state_dict(), max_classes=12)
    assert len(_bank_cells(fig, "filled")) == int(big.fill[:12].sum())
    assert "first 12 of 30 classes" in fig.axes[0].get_title()
    assert _bank_cells(fig, "replaced") == [] and any(
        t.get_text().startswith("cos") for t in fig.axes[0].texts
    )
    with pytest.raises(TypeError, match="SketchMemory"):
        plots.plot_memory_bank(torch.zeros(3, 2, 4))
