"""The package's figures (matplotlib + seaborn), all in one style.

Every function builds a :class:`matplotlib.figure.Figure` directly (not through ``pyplot``) and returns
it. Why: no GUI backend is needed (saving uses Agg whatever backend is active), nothing is forced on the
notebook (``matplotlib.use`` is never called, so ``%matplotlib widget`` etc. keep working), figures are
not kept alive by pyplot's figure manager (no memory growth in loops, no "More than 20 figures" warning),
and a notebook shows the figure once: when it is the cell's value (Jupyter's inline formatter renders
``Figure`` objects).

``save_to=`` (str or Path) also writes the figure atomically: savefig into a temporary file in the same
folder, then ``os.replace`` (a reader never sees half a PNG). The format follows the suffix (.png, .pdf,
.svg).

All figures share one seaborn style (:func:`use_style`); the functions apply it locally (an
``rc_context``), so calling them never changes your own matplotlib settings. Call :func:`use_style` to
give your own figures the same look. matplotlib, seaborn and pandas are imported inside the functions
(lazily, on purpose): the CLI and the trainer import this module, and pay for those libraries only when a
figure is drawn.

Why this module is long: it is a catalogue, one short function per figure of the course, the demo and the
README, all sharing the style and the save helper above; split by topic, a reader would look in three files
for the one figure a notebook names.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dsn_lab._atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from dsn_lab.config import DSNConfig

__all__ = [
    "use_style",
    "style_context",
    "save_figure",
    "plot_projection_before_after",
    "plot_gap_measures",
    "plot_gap_bars",
    "plot_training_curves",
    "plot_retrieval_grid",
    "plot_contact_sheet",
    "plot_per_class_ap",
    "plot_cid_mask_heatmap",
    "plot_ablations",
    "plot_architecture",
    "plot_supcon_similarity",
    "plot_memory_bank",
]

DOMAIN_NAMES = ("sketch", "photo")
_DOMAIN_COLORS = {"sketch": "#d1495b", "photo": "#00798c"}
_DOMAIN_MARKERS = {"sketch": "X", "photo": "o"}
_HIT_COLOR, _MISS_COLOR = "#2a9d3f", "#d62828"  # retrieval frames: same class as the query / another

#: Labels of the domain_gap measures for titles; the arrow points the way a smaller gap moves the measure.
GAP_LABELS = {
    "domain_classifier_acc": "domain classifier acc. ↓ (0.5 = no gap)",
    "mmd": "MMD² (RBF) ↓",
    "mmd_pvalue": "MMD permutation p-value",
    "centroid_distance": "sketch–photo centroid distance ↓",
    "sketch_dispersion": "sketch intra-class dispersion ↓",
    "photo_dispersion": "photo intra-class dispersion ↓",
    "cross_domain_nn_agreement": "cross-domain NN class agreement ↑",
}
_DEFAULT_GAP_MEASURES = (
    "domain_classifier_acc",
    "mmd",
    "centroid_distance",
    "sketch_dispersion",
    "photo_dispersion",
    "cross_domain_nn_agreement",
)


# ---------------------------------------------------------------------------------------------------
# style and saving
# ---------------------------------------------------------------------------------------------------
def style_rc() -> dict[str, Any]:
    """The rcParams of the package style: seaborn "whitegrid", "notebook" context, colour-blind palette."""
    import seaborn as sns
    from cycler import cycler

    rc: dict[str, Any] = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.9))
    rc["axes.prop_cycle"] = cycler(color=sns.color_palette("colorblind"))
    rc.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.titleweight": "bold"})
    return rc


def use_style() -> None:
    """Apply the package style globally (for your own figures; the plot functions apply it themselves)."""
    import matplotlib as mpl

    mpl.rcParams.update(style_rc())


@contextlib.contextmanager
def style_context() -> Iterator[None]:
    """``with style_context(): ...``: the package style, restored afterwards."""
    import matplotlib as mpl

    with mpl.rc_context(style_rc()):
        yield


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int | None = None) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"save_to={str(path)!r} has no suffix: add .png, .pdf or .svg to choose the format")
    with atomic_path(path, prefix=f".{path.stem}.", suffix=f".{fmt}.tmp") as tmp, style_context():
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path


def _move_legend_to_figure(fig: Any, ax: Any, title: str | None = None) -> None:
    """Replace an axes legend by one figure legend above the panels (it never hides data)."""
    leg = ax.get_legend()
    if leg is None:
        return
    handles, texts = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
    leg.remove()
    fig.legend(
        handles, texts, loc="outside upper center", ncol=max(1, len(texts)), title=title, frameon=False
    )


def _finish(fig: Any, save_to: str | os.PathLike | None, dpi: int | None = None) -> Any:
    if save_to is not None:
        save_figure(fig, save_to, dpi=dpi)
    return fig


# ---------------------------------------------------------------------------------------------------
# input helpers
# ---------------------------------------------------------------------------------------------------
def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _to_frame(history: Any, name: str = "history"):
    """A list of dict rows, a dict of columns or a DataFrame -> DataFrame."""
    import pandas as pd

    if isinstance(history, pd.DataFrame):
        return history.reset_index(drop=True)
    if isinstance(history, Mapping):
        return pd.DataFrame(dict(history))
    if isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        if not all(isinstance(r, Mapping) for r in history):
            raise TypeError(f"{name}: expected a list of dict rows or a pandas DataFrame")
        return pd.DataFrame(list(history))
    raise TypeError(
        f"{name}: expected a list of dict rows or a pandas DataFrame, got {type(history).__name__}"
    )


def _domain_names(domains: np.ndarray) -> np.ndarray:
    d = np.asarray(domains)
    if d.dtype.kind == "f" and d.size and np.all(d == np.round(d)):  # 0.0 / 1.0, as np.zeros gives them
        d = d.astype(int)
    if d.dtype.kind in "iub":
        bad = set(np.unique(d).tolist()) - {0, 1}
        if bad:
            raise ValueError(f"domains: integer domains must be 0 (sketch) or 1 (photo), found {sorted(bad)}")
        return np.where(d.astype(int) == 0, "sketch", "photo")
    return d.astype(str)


def _coords(x: Any, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        x = np.concatenate([_np(a) for a in x])
    x = _np(x).astype(float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name}: expected [N, 2] coordinates (e.g. from analysis.project), got {x.shape}")
    return x


# ---------------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------------
def plot_projection_before_after(
    before_2d: Any,
    after_2d: Any,
    domains: Any = None,
    labels: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    titles: tuple[str, str] = ("before training", "after training"),
    max_legend_classes: int = 12,
    highlight: int | Sequence[Any] = 8,
    point_size: float = 14.0,
    suptitle: str | None = None,
    save_to: str | os.PathLike | None = None,
):
    """2 x 2 grid: columns before / after, top row coloured by domain, bottom row by class.

    ``before_2d`` / ``after_2d`` are ``[N, 2]`` arrays of the same N points (or the lists that
    :func:`dsn_lab.analysis.project` returns, concatenated in order). ``domains``: ``[N]`` with 0 / 1 or
    "sketch" / "photo" strings; when None and the coordinates are given as a list of two arrays, the first is
    taken as sketches and the second as photos. ``labels``: ``[N]`` class labels. In the class row, sketches
    are crosses and photos dots, so a class whose sketches and photos overlap shows both markers together.
    Up to ``max_legend_classes`` classes each get a colour and a legend entry. With more (a hundred colours
    cannot be told apart), only ``highlight`` classes are coloured -- that many spread over the sorted class
    list, or the labels given -- and the rest are light grey, so the row shows whether *those* classes'
    sketches sit among their photos; the legend names them.
    """

    if domains is None:
        if not (isinstance(before_2d, (list, tuple)) and len(before_2d) == 2):
            raise ValueError("domains is required unless before_2d is a list [sketch_2d, photo_2d]")
        domains = np.r_[np.zeros(len(before_2d[0]), int), np.ones(len(before_2d[1]), int)]
    b, a = _coords(before_2d, "before_2d"), _coords(after_2d, "after_2d")
    return plot_projection_panels(
        [b, a],
        domains,
        labels,
        titles=titles,
        class_names=class_names,
        max_legend_classes=max_legend_classes,
        highlight=highlight,
        point_size=point_size,
        suptitle=suptitle,
        save_to=save_to,
    )


def plot_projection_panels(
    frames_2d: Sequence[Any],
    domains: Any,
    labels: Any,
    *,
    titles: Sequence[str],
    class_names: Sequence[str] | None = None,
    max_legend_classes: int = 12,
    highlight: int | Sequence[Any] = 8,
    point_size: float = 14.0,
    panel_size: float = 5.5,
    suptitle: str | None = None,
    save_to: str | os.PathLike | None = None,
):
    """Small multiples of 2-D maps of the same N points: one column per frame (``frames_2d``, each
    ``[N, 2]``, e.g. before / after training or every epoch), top row coloured by domain, bottom row by
    class. The other arguments are those of :func:`plot_projection_before_after`, which calls this with two
    frames; ``panel_size`` is the side of one panel in inches."""
    import seaborn as sns

    frames = [_coords(f, f"frames_2d[{i}]") for i, f in enumerate(frames_2d)]
    if not frames:
        raise ValueError("plot_projection_panels: no frames")
    if len(titles) != len(frames):
        raise ValueError(f"plot_projection_panels: {len(frames)} frames but {len(titles)} titles")
    dom = _domain_names(_np(domains).reshape(-1))
    if labels is None:
        raise ValueError("labels is required: [N] class labels of the projected points")
    lab = _np(labels).reshape(-1)
    if any(len(f) != len(frames[0]) for f in frames) or not (len(frames[0]) == len(dom) == len(lab)):
        raise ValueError(
            f"frames ({', '.join(str(len(f)) for f in frames)} points), domains ({len(dom)}) and labels "
            f"({len(lab)}) must describe the same points"
        )
    classes = list(dict.fromkeys(np.sort(lab).tolist()))
    if class_names is not None and np.asarray(lab).dtype.kind in "iu":
        names = [str(class_names[int(c)]) for c in classes]
    else:
        names = [str(c) for c in classes]
    if len(classes) <= max_legend_classes:
        shown = list(classes)
    elif isinstance(highlight, (int, np.integer)):
        shown = [
            classes[int(i)] for i in np.unique(np.linspace(0, len(classes) - 1, int(highlight)).astype(int))
        ]
    else:
        wanted = set(np.asarray(list(highlight)).tolist())
        shown = [c for c in classes if c in wanted]
        if len(shown) != len(wanted):
            raise ValueError(f"highlight: {sorted(wanted)} are not all labels of the projected points")
    palette = (
        sns.color_palette("husl", len(shown))
        if len(shown) > 10
        else sns.color_palette("colorblind", len(shown))
    )
    color_of = {c: palette[i] for i, c in enumerate(shown)}
    greyed = len(shown) < len(classes)

    dom_order = [n for n in DOMAIN_NAMES if n in set(dom)] + sorted(set(dom) - set(DOMAIN_NAMES))
    with style_context():
        n = len(frames)
        fig = _new_figure((panel_size * n, panel_size * 2 - 1.0))
        axes = np.asarray(fig.subplots(2, n, squeeze=False))
        for col, (xy, title) in enumerate(zip(frames, titles)):
            ax = axes[0, col]
            for d in dom_order:
                m = dom == d
                ax.scatter(
                    xy[m, 0],
                    xy[m, 1],
                    s=point_size,
                    alpha=0.7,
                    label=d,
                    linewidths=0,
                    color=_DOMAIN_COLORS.get(d),
                    marker=_DOMAIN_MARKERS.get(d, "o"),
                )
            ax.set_title(f"{title}: by domain")
            if col == 0 or n <= 2:
                ax.legend(loc="best", fontsize="small", markerscale=1.5)
            ax = axes[1, col]
            if greyed:  # the other classes first, underneath: context, not content
                rest = ~np.isin(lab, shown)
                for d in dom_order:
                    m = rest & (dom == d)
                    ax.scatter(
                        xy[m, 0],
                        xy[m, 1],
                        s=point_size * 0.6,
                        color="#cfcfcf",
                        alpha=0.5,
                        linewidths=0,
                        marker=_DOMAIN_MARKERS.get(d, "o"),
                    )
            for c, name in zip(classes, names):
                if c not in color_of:
                    continue
                for d in dom_order:
                    m = (lab == c) & (dom == d)
                    if m.any():
                        ax.scatter(
                            xy[m, 0],
                            xy[m, 1],
                            s=point_size * (2.2 if greyed else 1.0),
                            alpha=0.9 if greyed else 0.75,
                            linewidths=0.4 if greyed else 0,
                            edgecolors="#333333" if greyed else "none",
                            color=color_of[c],
                            marker=_DOMAIN_MARKERS.get(d, "o"),
                            label=name if d == dom[lab == c][0] else None,
                        )
            ax.set_title(f"{title}: by class" + ("" if greyed else " (x sketch, o photo)"))
            if col == n - 1 and greyed:  # one legend for all columns, under the panels
                handles, texts = ax.get_legend_handles_labels()
                fig.legend(
                    handles,
                    texts,
                    loc="outside lower center",
                    ncol=min(len(texts), 4),
                    frameon=False,
                    fontsize="small",
                    markerscale=1.2,
                    title=f"{len(shown)} of {len(classes)} classes in colour, the rest grey "
                    "(x sketch, o photo)",
                    title_fontsize="small",
                )
            elif not greyed and (col == 0 or n <= 2):
                ax.legend(loc="best", fontsize="x-small", ncol=2 if len(classes) > 6 else 1)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        if suptitle:
            fig.suptitle(suptitle)
    return _finish(fig, save_to)


# ---------------------------------------------------------------------------------------------------
# gap measures
# ---------------------------------------------------------------------------------------------------
def _gap_columns(df, prefix: str, measures: Sequence[str] | None) -> dict[str, str]:
    """Map measure name -> column in df (prefixed "gap/..." or bare)."""
    found = {}
    wanted = measures if measures is not None else _DEFAULT_GAP_MEASURES
    for m in wanted:
        for col in (f"{prefix}{m}", m):
            if col in df.columns and df[col].notna().any():
                found[m] = col
                break
        else:
            if measures is not None:
                raise KeyError(f"measure {m!r} not found (looked for columns {prefix + m!r} and {m!r})")
    if not found:
        raise ValueError(
            f"no domain-gap columns found (expected e.g. {prefix}domain_classifier_acc; the "
            f"DomainGapCallback writes them); columns present: {list(df.columns)[:20]}"
        )
    return found


def plot_gap_measures(
    history: Any,
    *,
    measures: Sequence[str] | None = None,
    x: str = "epoch",
    hue: str | None = None,
    prefix: str = "gap/",
    ncols: int = 3,
    errorbar: Any = None,
    save_to: str | os.PathLike | None = None,
):
    """The domain-gap measures over training, one panel per measure (their scales differ).

    ``history``: the run history (list of dict rows or DataFrame) holding ``"gap/<measure>"`` columns (as
    :class:`dsn_lab.analysis.DomainGapCallback` writes) or bare measure columns. Rows without a value for a
    measure are skipped (histories mix per-step and per-epoch rows). ``hue`` names a column that separates
    runs (e.g. "method" with values "baseline" / "DSN") to draw one line per run. The classifier panel has
    a dashed line at 0.5 (no gap). Several rows per ``(x, hue)`` (e.g. seeds) are averaged; ``errorbar="sd"``
    shades their standard deviation (seaborn's ``errorbar``; default: no band).
    """
    import seaborn as sns

    df = _to_frame(history)
    if x not in df.columns:
        raise KeyError(f"plot_gap_measures: x column {x!r} not in history (columns: {list(df.columns)[:20]})")
    cols = _gap_columns(df, prefix, measures)
    n = len(cols)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    with style_context():
        fig = _new_figure((4.0 * ncols, 3.2 * nrows))
        axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
        for ax, (m, col) in zip(axes, cols.items()):
            keep = [x, col] + ([hue] if hue else [])
            sub = df[keep].dropna(subset=[x, col])
            sns.lineplot(
                data=sub,
                x=x,
                y=col,
                hue=hue,
                marker="o",
                ax=ax,
                errorbar=errorbar,
                legend=bool(hue) and ax is axes[0],
            )
            if m == "domain_classifier_acc":
                ax.axhline(0.5, ls="--", color="grey", lw=1)
            if m == "mmd_pvalue":
                ax.axhline(0.05, ls=":", color="grey", lw=1)
            ax.set_title(GAP_LABELS.get(m, m), fontsize="medium")
            ax.set_ylabel("")
        for ax in axes[n:]:
            ax.set_visible(False)
        if hue:
            _move_legend_to_figure(fig, axes[0], title=hue)
    return _finish(fig, save_to)


def _bars_frame(table: Any):
    """{method: {stage: {measure: v}}}, rows or DataFrame -> long DataFrame(method, stage, measure, value)."""
    import pandas as pd

    if isinstance(table, Mapping) and table and all(isinstance(v, Mapping) for v in table.values()):
        first = next(iter(table.values()))
        if first and all(isinstance(v, Mapping) for v in first.values()):
            rows = []
            for method, stages in table.items():
                for stage, vals in stages.items():
                    rows.append({"method": method, "stage": stage, **dict(vals)})
            table = rows
    df = _to_frame(table, "table")
    for col in ("method", "stage"):
        if col not in df.columns:
            raise KeyError(
                f"plot_gap_bars: table needs a {col!r} column (e.g. method='DSN', stage='after'), or pass "
                "{method: {stage: {measure: value}}}"
            )
    value_cols = [
        c for c in df.columns if c not in ("method", "stage") and pd.api.types.is_numeric_dtype(df[c])
    ]
    long = df.melt(id_vars=["method", "stage"], value_vars=value_cols, var_name="measure", value_name="value")
    long["measure"] = long["measure"].str.replace(r"^gap/", "", regex=True)
    return long


def plot_gap_bars(
    table: Any,
    *,
    measures: Sequence[str] | None = None,
    ncols: int = 3,
    save_to: str | os.PathLike | None = None,
):
    """Before / after bars of each gap measure, grouped by method (e.g. baseline CE+KD vs DSN).

    ``table``: ``{"baseline": {"before": gap_dict, "after": gap_dict}, "DSN": {...}}`` (gap dicts as
    :func:`dsn_lab.analysis.domain_gap` returns, bare or "gap/"-prefixed keys), or rows / a DataFrame with
    columns "method", "stage" and one column per measure. One panel per measure.
    """
    import seaborn as sns

    long = _bars_frame(table)
    # long method names ("DSN, multi-style queries") would run into their neighbours under a 4-inch panel
    long["method"] = long["method"].map(
        lambda name: textwrap.fill(str(name), 12, break_on_hyphens=False, break_long_words=False)
    )
    available = list(dict.fromkeys(long["measure"]))
    if measures is None:
        # a measure that is undefined everywhere (sketch dispersion with one sketch per class) gets no panel
        defined = set(long.loc[np.isfinite(long["value"].astype(float)), "measure"])
        measures = [m for m in _DEFAULT_GAP_MEASURES if m in defined] or available
    missing = [m for m in measures if m not in available]
    if missing:
        raise KeyError(f"plot_gap_bars: measures {missing} not in the table (has {available})")
    n = len(measures)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    stages = list(dict.fromkeys(long["stage"]))
    with style_context():
        fig = _new_figure((4.0 * ncols, 3.2 * nrows))
        axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
        for i, (ax, m) in enumerate(zip(axes, measures)):
            sub = long[long["measure"] == m]
            sns.barplot(
                data=sub,
                x="method",
                y="value",
                hue="stage",
                hue_order=stages,
                ax=ax,
                errorbar=None,
                legend=i == 0,
            )
            if m == "domain_classifier_acc":
                ax.axhline(0.5, ls="--", color="grey", lw=1)
            ax.set_title(GAP_LABELS.get(m, m), fontsize="medium")
            ax.set_xlabel("")
            ax.set_ylabel("")
        for ax in axes[n:]:
            ax.set_visible(False)
        _move_legend_to_figure(fig, axes[0])
    return _finish(fig, save_to)


# ---------------------------------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------------------------------
def _default_panels(columns: Sequence[str]) -> dict[str, list[str]]:
    skip = ("epoch", "step", "time", "wall_time")
    cols = [c for c in columns if c not in skip and not c.startswith("gap/")]
    loss_terms = {"ce", "kd", "contrastive", "memory", "total"}

    def is_loss(c: str) -> bool:
        base = c.split("/")[-1]
        return "loss" in c.lower() or base in loss_terms

    panels: dict[str, list[str]] = {
        "losses": [c for c in cols if is_loss(c) and not c.lower().startswith("val")],
        "accuracy": [c for c in cols if "acc" in c.lower() and not is_loss(c)],
        "learning rate": [c for c in cols if c == "lr" or c.startswith("lr") or c.endswith("/lr")],
    }
    used = {c for v in panels.values() for c in v}
    panels["validation"] = [
        c
        for c in cols
        if c not in used and (c.lower().startswith("val") or "map" in c.lower() or "p@" in c.lower())
    ]
    return {k: v for k, v in panels.items() if v}


#: Short legend names of the loss columns a training history has.
LOSS_LABELS = {
    "loss": "total",
    "loss_ce": "CE",
    "loss_kd": "KD",
    "loss_contrastive": "SupCon",
    "loss_memory": "memory",
}


_LR_LABELS = {"lr": "head", "lr_backbone": "backbone"}  # the trainer's parameter groups


def run_curve_panels(columns: Iterable[str]) -> dict[str, list[str]]:
    """The panels of a DSN run's curves (:func:`dsn_lab.train.train` history columns), one point each: the
    loss terms, the per-batch training accuracy, both learning rates, and val mAP@all, the number
    checkpoint selection looks at. P@100 / P@200 are left out: with a handful of photos per concept
    (EmojiSketch) they sit near (photos per concept) / K whatever the model does, and mAP@200 equals mAP@all
    there for the same reason."""
    have = set(columns)
    panels = {
        "losses": [c for c in LOSS_LABELS if c in have],
        "training accuracy (per batch)": [c for c in ("acc",) if c in have],
        "learning rate": [c for c in ("lr", "lr_backbone") if c in have],
        "validation mAP@all (held-out training concepts)": [c for c in ("val_mAP@all",) if c in have],
    }
    return {title: cols for title, cols in panels.items() if cols}


def _merge_equal_columns(df, cols: Sequence[str], tol: float) -> list[tuple[str, str]]:
    """``(column, label)`` pairs with a column that equals an earlier one (within ``tol`` on every row
    both have) folded into that one's label, so two lines drawn on top of each other read as one."""
    kept: list[list[str]] = []
    for c in cols:
        for group in kept:
            both = df[[group[0], c]].dropna()
            if len(both) and np.allclose(both[group[0]], both[c], atol=tol, rtol=0.0):
                group.append(c)
                break
        else:
            kept.append([c])
    return [(g[0], " = ".join(g)) for g in kept]


def plot_training_curves(
    history: Any,
    *,
    x: str | None = None,
    panels: Mapping[str, Sequence[str]] | None = None,
    smooth: int | None = None,
    best: str | None = None,
    ncols: int = 2,
    save_to: str | os.PathLike | None = None,
):
    """Loss terms, accuracy, learning rate and validation metric over training, one panel each.

    ``history``: list of dict rows or DataFrame. Columns are grouped automatically: names containing
    "loss" or ending in ce / kd / contrastive / memory / total -> "losses"; "acc" -> "accuracy"; "lr" ->
    "learning rate" (log scale); names starting with "val" or containing "mAP" / "P@" -> "validation".
    ``panels={"title": [columns]}`` overrides the grouping. ``x`` defaults to "step" when present, else
    "epoch", else the row number. Each column is drawn over the rows where it has a value, so per-step and
    per-epoch rows can be mixed.

    Made to be read at notebook or README width: the panels sit in a grid of ``ncols`` columns; the total
    loss is the thick dark line and the terms thin ones, named under the panel (a legend never covers a
    line); a series with many noisy points (per-batch loss, accuracy) is drawn faint with its running mean
    over ``smooth`` rows on top (default: with 30 points or more, about a tenth of them; ``smooth=0`` turns
    it off); validation columns equal within 0.005 to an earlier one are drawn once, named together; and the
    maximum of ``best`` (default: the first validation column) is starred, the point checkpoint selection
    keeps.
    """
    df = _to_frame(history)
    if x is None:
        x = "step" if "step" in df.columns else ("epoch" if "epoch" in df.columns else None)
    if x is None:
        df = df.assign(row=np.arange(len(df)))
        x = "row"
    elif x not in df.columns:
        raise KeyError(f"plot_training_curves: x column {x!r} not in history")
    groups = dict(panels) if panels is not None else _default_panels(list(df.columns))
    for title, cols in groups.items():
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise KeyError(f"plot_training_curves: panel {title!r} names missing columns {missing}")
    groups = {t: list(c) for t, c in groups.items() if c}
    if not groups:
        raise ValueError(
            "plot_training_curves: no loss / accuracy / lr / validation columns found in "
            f"{list(df.columns)[:20]}"
        )
    if best is None:
        val_cols = [c for t, cs in groups.items() if "valid" in t.lower() for c in cs]
        best = val_cols[0] if val_cols else None
    elif best not in df.columns:
        raise KeyError(f"plot_training_curves: best={best!r} is not a column of the history")
    n = len(groups)
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    with style_context():
        fig = _new_figure((4.6 * ncols, 3.3 * nrows))
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes[n:]:
            ax.set_visible(False)
        for ax, (title, cols) in zip(axes, groups.items()):
            is_val = "valid" in title.lower()
            pairs = _merge_equal_columns(df, cols, 0.005) if is_val else [(c, c) for c in cols]
            for c, label in pairs:
                sub = df[[x, c]].dropna()
                if sub.empty:
                    continue
                xs, ys = sub[x].to_numpy(), sub[c].to_numpy(dtype=float)
                total = c in ("loss", "total") and len(pairs) > 1
                style = {"color": "#222222", "lw": 2.2, "zorder": 3} if total else {"lw": 1.3}
                label = {**LOSS_LABELS, **_LR_LABELS}.get(label, label) if len(pairs) > 1 else label
                window = smooth if smooth is not None else max(3, len(sub) // 10)
                enough = len(sub) >= (4 if smooth is not None else 10) * max(window, 1)  # else: raw points
                noisy = not is_val and title != "learning rate"  # a schedule is exact: nothing to smooth
                if window and enough and noisy:
                    (line,) = ax.plot(
                        xs, ys, alpha=0.25, lw=0.8, **{k: v for k, v in style.items() if k != "lw"}
                    )
                    mean = sub[c].rolling(window, min_periods=1).mean().to_numpy(dtype=float)
                    ax.plot(xs, mean, label=label, **{**style, "color": line.get_color()})
                else:
                    ax.plot(xs, ys, label=label, marker="o" if len(sub) <= 30 else None, ms=3.5, **style)
                if c == best and len(sub):
                    i = int(np.nanargmax(ys))
                    ax.plot(xs[i], ys[i], marker="*", ms=14, color="#e9a100", mec="#333333", zorder=4)
                    ax.annotate(
                        f"best {ys[i]:.3f}",
                        (xs[i], ys[i]),
                        textcoords="offset points",
                        xytext=(0, -16),
                        ha="right" if i == len(xs) - 1 and len(xs) > 1 else "center",
                        fontsize="small",
                    )
            if title == "learning rate":
                values = df[cols].to_numpy(dtype=float)
                if np.nanmin(values) > 0:
                    ax.set_yscale("log")
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel(x)
            if len(pairs) > 1:
                ax.legend(
                    loc="upper center",
                    bbox_to_anchor=(0.5, -0.2),
                    ncol=min(len(pairs), 5),
                    fontsize="x-small",
                    frameon=False,
                    handlelength=1.5,
                    columnspacing=1.0,
                )
            elif pairs:
                ax.set_ylabel(pairs[0][1], fontsize="small")
    return _finish(fig, save_to)


# ---------------------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------------------
def _to_hwc(img: Any, denormalize: tuple[Sequence[float], Sequence[float]] | None) -> np.ndarray:
    """One image (PIL, [C,H,W] / [H,W,C] / [H,W] array or tensor) -> float [H, W, 3] in [0, 1]."""
    if hasattr(img, "convert") and hasattr(img, "size"):  # PIL
        img = np.asarray(img.convert("RGB"))
    a = _np(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected an image [C,H,W], [H,W,C] or [H,W], got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(float) / 255.0
    else:
        a = a.astype(float)
        if denormalize is not None:
            mean, std = (np.asarray(v, float).reshape(1, 1, -1) for v in denormalize)
            a = a * std + mean
        elif a.min() < 0.0 or a.max() > 1.0:  # unknown normalisation: rescale for display
            a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(a[..., :3], 0.0, 1.0)


def plot_retrieval_grid(
    query_images: Any,
    ranked_gallery_images: Any,
    correct_mask: Any,
    *,
    k: int | None = None,
    query_titles: Sequence[str] | None = None,
    gallery_titles: Sequence[Sequence[str]] | None = None,
    denormalize: tuple[Sequence[float], Sequence[float]] | None = None,
    cell_size: float = 1.4,
    save_to: str | os.PathLike | None = None,
):
    """One row per query: the query sketch, then its top-k gallery photos framed green (same class) or red.

    ``query_images``: Q images; ``ranked_gallery_images``: Q sequences of at least k images, best first;
    ``correct_mask``: [Q, >=k] booleans. Images may be PIL images, uint8 / float arrays or tensors in
    [C,H,W] or [H,W,C]; float images outside [0, 1] are rescaled for display unless ``denormalize=(mean,
    std)`` undoes a known normalisation (e.g. ImageNet's).
    """
    queries = list(query_images)
    galleries = [list(g) for g in ranked_gallery_images]
    mask = _np(correct_mask).astype(bool)
    if mask.ndim == 1:
        mask = mask[None, :]
    if not queries:
        raise ValueError("plot_retrieval_grid: no query images")
    if len(galleries) != len(queries) or len(mask) != len(queries):
        raise ValueError(
            f"plot_retrieval_grid: {len(queries)} queries but {len(galleries)} gallery rows and "
            f"{len(mask)} mask rows"
        )
    k = min(len(g) for g in galleries) if k is None else int(k)
    if k < 1 or any(len(g) < k for g in galleries) or mask.shape[1] < k:
        raise ValueError(f"plot_retrieval_grid: need at least k={k} ranked images and mask entries per query")
    q = len(queries)
    with style_context():
        fig = _new_figure((cell_size * (k + 1), cell_size * q + 0.4))
        axes = np.asarray(fig.subplots(q, k + 1, squeeze=False))
        for r in range(q):
            ax = axes[r, 0]
            ax.imshow(_to_hwc(queries[r], denormalize))
            ax.set_title(query_titles[r] if query_titles else "query", fontsize="x-small")
            for side in ax.spines.values():
                side.set_edgecolor("#333333")
                side.set_linewidth(2)
            for j in range(k):
                ax = axes[r, j + 1]
                ax.imshow(_to_hwc(galleries[r][j], denormalize))
                color = _HIT_COLOR if mask[r, j] else _MISS_COLOR
                for side in ax.spines.values():
                    side.set_visible(True)
                    side.set_edgecolor(color)
                    side.set_linewidth(3)
                if gallery_titles is not None:
                    ax.set_title(str(gallery_titles[r][j]), fontsize="xx-small")
                elif r == 0:
                    ax.set_title(f"#{j + 1}", fontsize="x-small")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        from matplotlib.patches import Patch

        frames = [
            Patch(facecolor="none", edgecolor=c, linewidth=3, label=t)
            for c, t in (
                (_HIT_COLOR, "same class as the query (a hit)"),
                (_MISS_COLOR, "another class (a miss)"),
            )
        ]
        fig.legend(handles=frames, loc="outside lower center", ncol=2, frameon=False, fontsize="small")
    return _finish(fig, save_to)


def plot_contact_sheet(
    rows: Sequence[tuple[str, Sequence[tuple[str, Any]]]],
    *,
    cell_size: float = 1.15,
    save_to: str | os.PathLike | None = None,
    dpi: int | None = None,
):
    """Images in labelled rows: ``rows = [(row label, [(caption, image), ...]), ...]`` (e.g. one concept per
    row, its photo and every sketch style). Rows may differ in length; empty cells stay blank. Images as in
    :func:`plot_retrieval_grid`."""
    rows = [(label, list(cells)) for label, cells in rows]
    if not rows or not any(cells for _, cells in rows):
        raise ValueError("plot_contact_sheet: no images")
    width = max(len(cells) for _, cells in rows)
    with style_context():
        fig = _new_figure((cell_size * width + 0.9, cell_size * len(rows) + 0.2))
        axes = np.asarray(fig.subplots(len(rows), width, squeeze=False))
        for r, (label, cells) in enumerate(rows):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
            for j in range(width):
                ax = axes[r, j]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if j < len(cells):
                    caption, image = cells[j]
                    ax.imshow(_to_hwc(image, None))
                    ax.set_title(caption, fontsize="xx-small")
                for side in ax.spines.values():
                    side.set_visible(j < len(cells))
                    side.set_edgecolor("#bbbbbb")
    return _finish(fig, save_to, dpi)


def plot_per_class_ap(
    ap: Any,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    *,
    max_classes: int = 40,
    title: str = "AP per unseen class",
    save_to: str | os.PathLike | None = None,
):
    """Horizontal bars of the mean AP of each class, sorted, with the mean over classes as a dashed line.

    ``ap``: per-query AP values (then ``labels`` gives each query's class, e.g. ``evaluate_retrieval(...,
    per_query=True)["AP_per_query"]``), or per-class values (``labels=None``; an array indexed by class or a
    ``{class name: AP}`` dict). With more than ``max_classes`` classes the best and worst
    ``max_classes // 2`` are shown (the mean line is over all classes).
    """
    import pandas as pd
    import seaborn as sns

    if isinstance(ap, Mapping):
        per_class = pd.Series({str(k): float(v) for k, v in ap.items()})
    else:
        values = _np(ap).astype(float).reshape(-1)
        if labels is not None:
            lab = _np(labels).reshape(-1)
            if len(lab) != len(values):
                raise ValueError(f"plot_per_class_ap: {len(values)} AP values but {len(lab)} labels")
            per_class = pd.Series(values).groupby(lab).mean()
        else:
            per_class = pd.Series(values, index=np.arange(len(values)))
        if class_names is not None:
            per_class.index = [str(class_names[int(i)]) for i in per_class.index]
        else:
            per_class.index = [str(i) for i in per_class.index]
    if per_class.empty:
        raise ValueError("plot_per_class_ap: no AP values")
    mean_ap = float(per_class.mean())
    per_class = per_class.sort_values(ascending=False, kind="stable")
    if len(per_class) > max_classes:
        half = max(1, max_classes // 2)
        per_class = pd.concat([per_class.iloc[:half], per_class.iloc[-half:]])
    frame = pd.DataFrame({"class": per_class.index, "AP": per_class.to_numpy()})
    with style_context():
        fig = _new_figure((6.5, 0.6 + 0.22 * len(frame)))
        ax = fig.subplots()
        color = sns.color_palette("colorblind")[0]
        sns.barplot(data=frame, y="class", x="AP", ax=ax, color=color, orient="h")
        ax.axvline(mean_ap, ls="--", color="grey", lw=1, label=f"mean over classes {mean_ap:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(loc="lower right", fontsize="small")
        ax.set_title(title, fontsize="medium")
    return _finish(fig, save_to)


def plot_cid_mask_heatmap(
    cid_mask: Any,
    class_names: Sequence[str] | None = None,
    imagenet_names: Sequence[str] | None = None,
    *,
    max_rows: int = 30,
    top_k: int = 25,
    title: str = "WordNet similarity to ImageNet classes (cid_mask)",
    save_to: str | os.PathLike | None = None,
):
    """Heatmap of SAKE's ``cid_mask`` [C, 1000]: the first ``max_rows`` dataset classes against the
    ``top_k`` ImageNet classes most similar to any of them (all 1000 columns would be unreadable).

    ``class_names`` label the rows, ``imagenet_names`` (1000 names) the columns; indices otherwise.
    """
    import seaborn as sns

    m = _np(cid_mask).astype(float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"plot_cid_mask_heatmap: expected a [C, K] matrix, got shape {m.shape}")
    rows = np.arange(min(max_rows, m.shape[0]))
    sub = m[rows]
    top_k = min(top_k, m.shape[1])
    cols = np.sort(np.argsort(-sub.max(0), kind="stable")[:top_k])
    row_labels = [str(class_names[i]) if class_names is not None else str(i) for i in rows]
    col_labels = [str(imagenet_names[j]) if imagenet_names is not None else str(j) for j in cols]
    with style_context():
        fig = _new_figure((0.32 * len(cols) + 3.0, 0.28 * len(rows) + 2.0))
        ax = fig.subplots()
        sns.heatmap(
            sub[:, cols],
            ax=ax,
            cmap="viridis",
            xticklabels=col_labels,
            yticklabels=row_labels,
            cbar_kws={"label": "path similarity"},
        )
        ax.tick_params(axis="x", labelsize=6, rotation=90)
        ax.tick_params(axis="y", labelsize=7, rotation=0)
        ax.set_title(title, fontsize="medium")
    return _finish(fig, save_to)


# ---------------------------------------------------------------------------------------------------
# ablations
# ---------------------------------------------------------------------------------------------------
def _ablation_stats(results: Any, metric: str):
    """(run names, means, stds) from per-run rows (a "run" column, one row per seed) or from a table indexed
    by run with (metric, "mean") / (metric, "std") columns (``dsn_lab.course.ablation_table``)."""
    import pandas as pd

    df = results if isinstance(results, pd.DataFrame) else _to_frame(results, "results")
    if "run" in df.columns:
        if metric not in df.columns:
            raise KeyError(f"plot_ablations: no {metric!r} column in the results (has {list(df.columns)})")
        grouped = df.groupby("run", sort=False)[metric]
        means, stds = grouped.mean(), grouped.std()
    elif isinstance(df.columns, pd.MultiIndex) and (metric, "mean") in df.columns:
        means = df[(metric, "mean")]
        stds = df[(metric, "std")] if (metric, "std") in df.columns else means * np.nan
    else:
        raise KeyError(
            f"plot_ablations: expected rows with 'run' and {metric!r} columns (run_ablations) or a table "
            f"with ({metric!r}, 'mean') columns (ablation_table); got columns {list(df.columns)[:10]}"
        )
    if means.empty:
        raise ValueError("plot_ablations: no runs to draw")
    return [str(r) for r in means.index], means.to_numpy(dtype=float), stds.fillna(0).to_numpy(dtype=float)


def plot_ablations(
    results: Any,
    *,
    metric: str = "mAP@all",
    title: str = "Ablations",
    xlabel: str | None = None,
    save_to: str | os.PathLike | None = None,
):
    """One horizontal bar per ablation run, top to bottom in the order of ``results``: the mean of
    ``metric`` over seeds, with the standard deviation as an error bar where there are several seeds.

    ``results``: the rows of ``dsn_lab.course.run_ablations`` (columns "run", ``metric``, ...) or the table of
    ``dsn_lab.course.ablation_table``. Each bar is labelled with its value.
    """
    runs, means, stds = _ablation_stats(results, metric)
    with style_context():
        fig = _new_figure((8.0, 0.9 + 0.45 * len(runs)))
        ax = fig.subplots()
        y = np.arange(len(runs))
        ax.barh(y, means, xerr=np.where(stds > 0, stds, np.nan), color=_DOMAIN_COLORS["photo"], capsize=3)
        ax.set_yticks(y, runs)
        ax.invert_yaxis()  # the first run (the baseline) on top
        spread = np.where(stds > 0, stds, 0.0)
        for yi, m, sd in zip(y, means, spread):
            label = f"{m:.3f} ± {sd:.3f}" if sd > 0 else f"{m:.3f}"
            # right of the error bar, so the label never sits on it
            ax.annotate(
                label, (m + sd, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize="small"
            )
        ax.set_xlim(0, max(float(np.nanmax(means + spread)) * 1.3, 1e-3))
        ax.set_xlabel(xlabel or f"{metric} on the unseen classes")
        ax.set_title(title, fontsize="medium")
    return _finish(fig, save_to)


# ---------------------------------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------------------------------
#: Pooled feature width of each backbone (dsn_lab.model.build_backbone; a test keeps them equal).
ARCH_FEATURE_DIMS = {
    "cse_resnet50": 2048,
    "efficientnet_lite0": 1280,
    "efficientnet_lite2": 1280,
    "resnet18": 512,
}
_ARCH_COLORS = {
    "sketch": _DOMAIN_COLORS["sketch"],
    "photo": _DOMAIN_COLORS["photo"],
    "views": "#6a4c93",  # the augmented views (both domains)
    "both": "#3d3d3d",  # the un-augmented sketches and photos together
    "teacher": "#8d8d8d",
    "loss": "#edae49",
}


def _arch_backbone_text(cfg: DSNConfig | None) -> str:
    """The backbone box: how the domain flag enters (model.py: CSE in every SE block, else FiLM)."""
    head = "backbone\n+ domain flag d\n\n"
    if cfg is None:
        return head + "CSE-ResNet50:\nd in every SE block\n(paper)\n\nLite0 + FiLM(d)\n(CPU course)"
    if cfg.backbone == "cse_resnet50":
        return head + "CSE-ResNet50:\nd in every\nSE block"
    names = {
        "efficientnet_lite0": "EfficientNet-Lite0",
        "efficientnet_lite2": "EfficientNet-Lite2",
        "resnet18": "ResNet-18",
    }
    return head + f"{names.get(cfg.backbone, cfg.backbone)}\n+ FiLM(d) on the\npooled feature"


def _arch_loss_state(cfg: DSNConfig | None) -> dict[str, str]:
    """Per loss: "" (on), or why it is off / what differs under ``cfg``."""
    state = {"ce": "", "kd": "", "contrastive": "", "memory": ""}
    if cfg is None:
        return state
    if not cfg.use_kd or cfg.w_kd == 0:
        state["kd"] = "off"
    elif not cfg.teacher or not cfg.pretrained:
        state["kd"] = "off: no teacher"
    if not cfg.use_contrastive or cfg.w_contrastive == 0:
        state["contrastive"] = "off"
    if not cfg.use_memory or cfg.w_memory == 0:
        state["memory"] = "off"
    elif not cfg.quirk("memory_grad"):
        state["memory"] = "no gradient (released)"
    return state


def plot_architecture(save_to: str | os.PathLike | None = None, *, cfg: DSNConfig | None = None):
    """The DSN forward pass and where each loss attaches, as :func:`dsn_lab.step.dsn_step` computes them.

    One forward over the un-augmented sketches (flag d = 0) and photos (d = 1) and their augmented views:
    backbone -> pooled feature -> hashing layer -> code -> classifier and KD head. CE reads the class logits
    of the un-augmented images; KD the KD logits of the un-augmented photos against the frozen teacher;
    SupCon the L2-normalised codes of the augmented views; the memory term the pooled features (sketches
    update the bank, photos are pulled to their class centre). Each loss box names its weight (``w_*``)
    and the function that computes it. ``cfg`` (a :class:`dsn_lab.config.DSNConfig`) adds its shapes,
    weights, backbone and classifier, and marks switched-off terms.
    """
    from matplotlib.patches import FancyBboxPatch, Patch

    col = _ARCH_COLORS
    X_LOSS = 80.5  # left edge of the loss boxes
    state = _arch_loss_state(cfg)
    if cfg is not None:
        fdim = ARCH_FEATURE_DIMS.get(cfg.backbone, "F")
        size = f"3×{cfg.image_size}×{cfg.image_size}"
        views = cfg.augment_views
        feat, code, mem = f"[N, {fdim}]", f"[N, {cfg.hashing_dim}]", f"C × {cfg.memory_slots} × {fdim}"
        clf = (
            "linear\nclassifier"
            if cfg.classifier_scale is None
            else f"cosine\nclassifier ×{cfg.classifier_scale:g}"
        )
        supcon_in = (
            "L2-normalise" if cfg.contrastive_dim is None else f"projection\n→ {cfg.contrastive_dim}, L2"
        )
        kd_rows = "photos" if cfg.kd_domains == "photo" else "all"
    else:
        size, views = "", 2
        feat, code, mem = "[N, F]", "[N, hashing_dim]", "C × memory_slots × F"
        clf, supcon_in, kd_rows = "classifier\n(linear / cosine)", "L2-normalise", "photos"

    def weight(name: str) -> str:
        return name if cfg is None else f"{name} = {getattr(cfg, name):g}"

    with style_context():
        fig = _new_figure((9.0, 5.6))
        ax = fig.subplots()
        ax.set_xlim(0, 100)
        ax.set_ylim(-3, 66)
        ax.axis("off")

        # a 100-unit-wide canvas: boxes and arrow routes share its units, so every arrow ends on a box edge
        def box(x0, y0, x1, y1, text, face, edge="#333333", *, fs=8.0, ls="-"):
            ax.add_patch(
                FancyBboxPatch(
                    (x0, y0),
                    x1 - x0,
                    y1 - y0,
                    boxstyle="round,pad=0,rounding_size=0.8",
                    facecolor=face,
                    edgecolor=edge,
                    linewidth=1.0,
                    linestyle=ls,
                )
            )
            if text:
                ax.text(
                    (x0 + x1) / 2,
                    (y0 + y1) / 2,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fs,
                    linespacing=1.15,
                )

        def path(points, color, *, lw=1.4, ls="-", label=None, label_at=0, dy=0.9, label_x=None):
            xs, ys = zip(*points)
            if len(points) > 2:
                ax.plot(xs[:-1], ys[:-1], color=color, lw=lw, ls=ls, solid_capstyle="butt")
            ax.annotate(
                "",
                xy=points[-1],
                xytext=points[-2],
                arrowprops=dict(
                    arrowstyle="-|>,head_length=0.5,head_width=0.25",
                    color=color,
                    lw=lw,
                    ls=ls,
                    shrinkA=0,
                    shrinkB=0,
                ),
            )
            if label:
                (xa, ya), (xb, yb) = points[label_at], points[label_at + 1]
                x = (xa + xb) / 2 if label_x is None else label_x
                ax.text(
                    x,
                    (ya + yb) / 2 + dy,
                    label,
                    ha="center" if label_x is None else "left",
                    va="bottom",
                    fontsize=6.8,
                    color=color,
                    style="italic",
                )

        def loss(yc, key, name, field, func):
            note = state[key]
            off = note.startswith("off")
            lines = [f"× {weight(field)}", func] + ([note] if note else [])
            h = 1.85 * (len(lines) + 1) + 1.6  # one text line is ~1.8 units high
            box(
                X_LOSS,
                yc - h / 2,
                99.5,
                yc + h / 2,
                "",
                "#eeeeee" if off else col["loss"],
                edge="#999999" if off else "#8a5a00",
            )
            xc = (X_LOSS + 99.5) / 2
            ax.text(xc, yc + h / 2 - 0.8, name, ha="center", va="top", fontsize=8, fontweight="bold")
            ax.text(
                xc, yc + h / 2 - 2.8, "\n".join(lines), ha="center", va="top", fontsize=7.4, linespacing=1.2
            )
            return yc - h / 2, yc + h / 2

        # inputs: the un-augmented sketches and photos, and the augmented views of both
        box(0.5, 29.5, 15, 49.5, "", "none", edge="#555555", ls=(0, (3, 2)))
        ax.text(
            7.75, 47.6, "un-augmented" + (f"\n{size}" if size else ""), ha="center", va="center", fontsize=7
        )
        box(1.5, 38.5, 14, 44.5, "sketches\nd = 0", "#f6d5da", edge=col["sketch"])
        box(1.5, 31, 14, 37, "photos\nd = 1", "#cfe8eb", edge=col["photo"])
        box(
            0.5,
            16,
            15,
            26,
            f"{views} augmented\nviews of each\n(sketch + photo)",
            "#e4dcef",
            edge=col["views"],
        )

        # the student: one forward over all of them
        box(18, 16, 32, 50, _arch_backbone_text(cfg), "#dde6f3", fs=7.4)
        path([(14, 41.5), (18, 41.5)], col["sketch"])
        path([(14, 34), (18, 34)], col["photo"])
        path([(15, 21), (18, 21)], col["views"])
        box(35, 34, 44.5, 44, f"pooled\nfeature f\n{feat}", "#dde6f3", fs=7.4)
        path([(32, 39), (35, 39)], col["both"])
        box(47.5, 33, 59.5, 45, f"hashing\nlayer\n→ code\n{code}", "#dde6f3", fs=7.4)
        path([(44.5, 39), (47.5, 39)], col["both"])

        # heads on the code
        box(63, 36, 74.5, 42, clf, "#dde6f3", fs=7.4)
        box(63, 46, 74.5, 52, "KD head\n→ 1000", "#dde6f3", fs=7.4)
        box(63, 23, 74.5, 29, supcon_in, "#dde6f3", fs=7.4)
        path([(59.5, 39), (63, 39)], col["both"])
        path([(53.5, 45), (53.5, 49), (63, 49)], col["both"])
        path([(53.5, 33), (53.5, 26), (63, 26)], col["views"], label="views", label_at=1, dy=0.4)

        # the frozen teacher on the un-augmented images
        x_mid = (X_LOSS + 99.5) / 2
        box(56, 56, 77, 63, "frozen ImageNet teacher\n(eval, no gradient)", "#e6e6e6", edge=col["teacher"])
        path(
            [(7.75, 49.5), (7.75, 59.5), (56, 59.5)], col["teacher"], label="un-augmented images", label_at=1
        )

        # the losses
        kd_box = loss(49, "kd", "KD (SAKE)", "w_kd", "sake_kd_loss + cid_mask")
        loss(39, "ce", "CE", "w_ce", "F.cross_entropy")
        loss(26, "contrastive", "SupCon", "w_contrastive", "SupConLoss")
        mem_box = loss(11, "memory", "memory", "w_memory", "SketchMemory.loss")
        path([(77, 59.5), (x_mid, 59.5), (x_mid, kd_box[1])], col["teacher"], label="logits", label_at=0)
        kd_col = col["photo"] if kd_rows == "photos" else col["both"]
        path([(74.5, 49), (X_LOSS, 49)], kd_col, label=kd_rows)
        path([(74.5, 39), (X_LOSS, 39)], col["both"], label="un-aug.")
        path([(74.5, 26), (X_LOSS, 26)], col["views"])

        # the memory bank: un-augmented sketch features update it, photo features are pulled to its centres
        box(
            54,
            7,
            73,
            15,
            f"sketch memory bank\n(updated every step)\n{mem}",
            "#f6d5da",
            edge=col["sketch"],
            fs=7.4,
        )
        path(
            [(38, 34), (38, 11), (54, 11)],
            col["sketch"],
            label="sketch f, un-aug.",
            label_at=1,
            dy=0.4,
            label_x=42.8,
        )
        mem_ls = "--" if state["memory"] == "no gradient (released)" else "-"
        path(
            [(42, 34), (42, 2), (x_mid, 2), (x_mid, mem_box[0])],
            col["photo"],
            ls=mem_ls,
            label="photo f, un-aug.",
            label_at=1,
            dy=0.4,
            label_x=42.8,
        )
        path([(73, 11), (X_LOSS, 11)], col["sketch"], label="class centre")
        # the batch's photos also enter the update: the reference deciding which sketches a full class keeps
        path([(63.5, 2), (63.5, 7)], col["photo"], lw=1.1)
        ax.text(
            64.2, 4.1, "reference", ha="left", va="center", fontsize=6.8, color=col["photo"], style="italic"
        )

        ax.text(
            50,
            -2.5,
            "total = w_ce·CE + w_kd·KD + w_contrastive·SupCon + w_memory·memory   (dsn_lab.step.dsn_step)",
            ha="center",
            va="bottom",
            fontsize=7.6,
        )
        handles = [
            Patch(facecolor="#f6d5da", edgecolor=col["sketch"], label="sketch"),
            Patch(facecolor="#cfe8eb", edgecolor=col["photo"], label="photo"),
            Patch(facecolor="#e4dcef", edgecolor=col["views"], label="augmented views"),
            Patch(facecolor="#e6e6e6", edgecolor=col["teacher"], label="frozen teacher"),
            Patch(facecolor=col["loss"], edgecolor="#8a5a00", label="loss (weight · function)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=5, frameon=False, fontsize=7.6)
        ax.set_title("DSN: one forward pass, four losses", fontsize="medium")
    return _finish(fig, save_to)


# ---------------------------------------------------------------------------------------------------
# notebook 02: SupCon's similarity matrix and the sketch memory bank
# ---------------------------------------------------------------------------------------------------
def _domains01(domains: Any, n: int, name: str) -> np.ndarray:
    d = _np(domains).reshape(-1)
    if d.dtype.kind == "f":  # the step's float domain column
        d = d.round().astype(int)
    if d.shape[0] != n:
        raise ValueError(f"{name}: {d.shape[0]} domains for {n} samples; pass one flag per sample (0/1).")
    out = _domain_names(d)
    bad = sorted(set(out.tolist()) - set(DOMAIN_NAMES))
    if bad:
        raise ValueError(f"{name}: domains must be 0/'sketch' or 1/'photo', found {bad}")
    return out


def plot_supcon_similarity(
    codes: Any,
    labels: Any,
    domains: Any,
    temperature: float = 0.07,
    *,
    base_temperature: float = 0.07,
    value: str = "cosine",
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    save_to: str | os.PathLike | None = None,
):
    """What :class:`dsn_lab.losses.SupConLoss` sees, as a matrix: every view of every sample is an anchor
    (a row) and is compared with every other view (a column).

    ``codes``: ``[N, views, D]`` as SupCon takes them (or ``[N, D]``, one view), L2-normalised here as in
    :func:`dsn_lab.step.dsn_step`; ``labels`` ``[N]``; ``domains`` ``[N]`` (0 sketch, 1 photo). Rows and
    columns are grouped in blocks (sketch views, then photo views; the loss does not depend on the order).
    ``value="cosine"`` shows :math:`z_i \\cdot z_a`; ``"softmax"`` shows
    :math:`\\exp(z_i \\cdot z_a/T) / \\sum_{a' \\neq i} \\exp(z_i \\cdot z_{a'}/T)`, the probability whose
    log the loss averages over the positives. Positives (same label: the other view of the same image,
    and the other images of the class, sketch or photo) are circled; the anchor itself (left out of the
    sum) is crossed. The right panel is each anchor's loss
    :math:`-(T/T_{base})\\,\\mathrm{mean}_{p}\\log` softmax; the title gives their mean over the anchors
    with a positive, which is SupConLoss's value.
    """
    import matplotlib as mpl
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    if value not in ("cosine", "softmax"):
        raise ValueError(f"plot_supcon_similarity: value must be 'cosine' or 'softmax', got {value!r}")
    if temperature <= 0 or base_temperature <= 0:
        raise ValueError(f"plot_supcon_similarity: temperatures must be > 0, got {temperature}")
    z = _np(codes).astype(float)
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3 or z.shape[0] == 0:
        raise ValueError(
            f"plot_supcon_similarity: codes must be [N, views, D] (as SupConLoss takes them), got {z.shape}"
        )
    n, views = z.shape[:2]
    lab = _np(labels).reshape(-1)
    if lab.shape[0] != n:
        raise ValueError(f"plot_supcon_similarity: {lab.shape[0]} labels for {n} samples")
    dom = _domains01(domains, n, "plot_supcon_similarity")
    z = z / np.maximum(np.linalg.norm(z, axis=2, keepdims=True), 1e-12)

    # rows: sketch views then photo views, each block in batch order
    blocks = [(d, v) for d in DOMAIN_NAMES for v in range(views) if (dom == d).any()]
    rows = [(i, v) for d, v in blocks for i in np.flatnonzero(dom == d)]
    sample, view = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    f, row_lab = z[sample, view], lab[sample]
    m = len(rows)
    sim = f @ f.T
    self_mask = np.eye(m, dtype=bool)
    pos = (row_lab[:, None] == row_lab[None, :]) & ~self_mask
    logits = np.where(self_mask, -np.inf, sim / temperature)
    top = logits.max(1, keepdims=True)
    log_prob = logits - (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))
    n_pos = pos.sum(1)
    per_anchor = (
        -(temperature / base_temperature) * np.where(pos, log_prob, 0.0).sum(1) / np.maximum(n_pos, 1)
    )
    has_pos = n_pos > 0
    loss = float(per_anchor[has_pos].mean()) if has_pos.any() else 0.0
    shown = np.where(self_mask, np.nan, sim if value == "cosine" else np.exp(log_prob))

    def name(label: Any) -> str:
        return str(class_names[int(label)]) if class_names is not None else str(label)

    side = min(max(0.3 * m + 2.2, 4.5), 8.5)
    with style_context():
        fig = _new_figure((side + 2.4, side))
        ax, ax_loss = fig.subplots(1, 2, width_ratios=[side, 1.6])
        cmap = mpl.colormaps["RdBu_r" if value == "cosine" else "viridis"].with_extremes(bad="#d9d9d9")
        norm = Normalize(-1, 1) if value == "cosine" else Normalize(0, np.nanmax(shown))
        img = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
        bar = fig.colorbar(
            img,
            ax=ax,
            location="bottom",
            shrink=0.6,
            pad=0.01,
            label="cosine z_i·z_a" if value == "cosine" else "softmax over a ≠ i at T",
        )
        bar.ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(5))
        pi, pj = np.nonzero(pos)
        ms = max(12.0, min(70.0, 2600.0 / m**2 * 4))
        # black under white: a circle that shows on dark and on light cells
        ax.scatter(pj, pi, s=ms, facecolors="none", edgecolors="black", linewidths=2.4)
        ax.scatter(pj, pi, s=ms, facecolors="none", edgecolors="white", linewidths=1.0, label="positive")
        si = np.arange(m)
        ax.scatter(si, si, s=ms * 0.7, marker="x", color="#555555", linewidths=1.0, label="self (left out)")
        # block boundaries: solid between domains, dotted between views
        bounds, centres, texts = [], [], []
        start = 0
        for d, v in blocks:
            size = int((dom == d).sum())
            centres.append(start + (size - 1) / 2)
            texts.append((f"{d}\nview {v + 1}" if views > 1 else d, _DOMAIN_COLORS[d]))
            start += size
            bounds.append((start - 0.5, v == views - 1))
        for b, domain_end in bounds[:-1]:
            style = dict(color="black", lw=1.6) if domain_end else dict(color="#444444", lw=0.8, ls=":")
            ax.axhline(b, **style)
            ax.axvline(b, **style)
        labels_txt = [name(v) for v in row_lab]
        fs = 7 if m <= 24 else 5.5
        ax.set_xticks(range(m), labels_txt, fontsize=fs, rotation=90 if m > 12 or class_names else 0)
        ax.set_yticks(range(m), labels_txt, fontsize=fs)
        ax.set_xlabel("compared view a (class)")
        ax.set_ylabel("anchor i (class)")
        top_ax = ax.secondary_xaxis("top")
        top_ax.set_xticks(centres, [t for t, _ in texts], fontsize=8)
        for tick, (_, color) in zip(top_ax.get_xticklabels(), texts):
            tick.set_color(color)
        top_ax.tick_params(length=0)
        ax.grid(False)

        bar_colors = [_DOMAIN_COLORS[dom[i]] for i in sample]
        ax_loss.barh(np.arange(m), np.where(has_pos, per_anchor, 0.0), color=bar_colors, height=0.75)
        ax_loss.axvline(loss, color="black", lw=1.0, ls="--", label=f"mean {loss:.3f}")
        ax_loss.set_xlabel("loss of anchor i")
        ax_loss.yaxis.tick_right()
        ax_loss.set_yticks(centres, [t for t, _ in texts], fontsize=8)
        for tick, (_, color) in zip(ax_loss.get_yticklabels(), texts):
            tick.set_color(color)
        ax_loss.tick_params(axis="y", length=0, labelright=True, labelleft=False)
        ax_loss.set_ylim(m - 0.5, -0.5)
        ax_loss.grid(axis="y", visible=False)
        handles, names_ = ax.get_legend_handles_labels()
        handles[0] = Line2D([], [], ls="none", marker="o", mfc="white", mec="black", mew=1.2, ms=8)
        h2, n2 = ax_loss.get_legend_handles_labels()
        fig.legend(handles + h2, names_ + n2, loc="outside upper center", ncol=3, frameon=False, fontsize=8)
        what = f"SupCon: {n} samples × {views} views, T = {temperature:g}"
        ax.set_title(title or f"{what}: loss {loss:.3f} (mean of the bars)", fontsize="medium")
    return _finish(fig, save_to)


def _bank_arrays(bank: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(memory [C, S, D], fill [C]) of a SketchMemory, a copy of one, or its state_dict."""
    if isinstance(bank, Mapping):
        mem, fill = bank.get("memory"), bank.get("fill")
    else:
        mem, fill = getattr(bank, "memory", None), getattr(bank, "fill", None)
    if mem is None or fill is None:
        raise TypeError(
            f"plot_memory_bank: {name} must be a dsn_lab.memory.SketchMemory (or its state_dict), got "
            f"{type(bank).__name__}; snapshot one before an update with copy.deepcopy(bank)."
        )
    mem, fill = _np(mem).astype(float), _np(fill).astype(int).reshape(-1)
    if mem.ndim != 3 or fill.shape[0] != mem.shape[0]:
        raise ValueError(f"plot_memory_bank: {name}: memory {mem.shape} and fill {fill.shape} do not match")
    return mem, fill


def plot_memory_bank(
    memory: Any,
    before: Any = None,
    *,
    names: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    max_classes: int = 20,
    title: str | None = None,
    save_to: str | os.PathLike | None = None,
):
    """The slots of a :class:`dsn_lab.memory.SketchMemory`: one row per class, one cell per slot.

    A slot is filled when its index is below the class's ``fill`` count (the rule of the bank: the centre
    is the mean of the first ``fill[c]`` slots). ``names`` (``{"e1": vector, ...}``) labels a slot holding
    one of those vectors; other filled slots show their cosine to the class centre. ``before``: the bank
    before an update (``copy.deepcopy(bank)``); the slots whose content changed are outlined, labelled
    ``old → new``: *added* (was empty), *replaced* (held a sketch), or *written, unused* (beyond ``fill``:
    the released row overwrite also writes the unused slots of the row it hits). ``memory`` may be a
    mapping ``{title: bank}`` (then ``before`` too, same keys) to compare banks side by side, e.g. the
    faithful and the fixed update rules. Rows: ``classes``, else the first ``max_classes``.
    """
    from matplotlib.patches import Patch, Rectangle

    panels = dict(memory) if isinstance(memory, Mapping) and "memory" not in memory else {"": memory}
    if before is None:
        befores: dict[str, Any] = dict.fromkeys(panels)
    elif len(panels) > 1 or panels.keys() != {""}:
        if not isinstance(before, Mapping) or set(before) != set(panels):
            raise ValueError(
                "plot_memory_bank: with several banks, pass before= as a dict with the same keys"
            )
        befores = dict(before)
    else:
        befores = {"": before}
    arrays = {k: _bank_arrays(b, f"memory[{k!r}]" if k else "memory") for k, b in panels.items()}
    olds = {k: _bank_arrays(b, "before") if b is not None else None for k, b in befores.items()}
    c_num, slots, _ = next(iter(arrays.values()))[0].shape
    for k, (mem, _) in arrays.items():
        old = olds[k]
        if mem.shape[:2] != (c_num, slots) or (old is not None and old[0].shape != mem.shape):
            raise ValueError(f"plot_memory_bank: banks of different shapes ({k or 'memory'} vs the others)")
    shown = list(classes) if classes is not None else list(range(min(c_num, max_classes)))
    named = [(str(k), _np(v).astype(float).reshape(-1)) for k, v in (names or {}).items()]

    def label_of(vec: np.ndarray) -> str | None:
        for key, v in named:
            if v.shape == vec.shape and np.allclose(v, vec, atol=1e-6):
                return key
        return None

    edge = {"replaced": "#e66100", "added": "#1a85ff", "written, unused": "#8f8f8f"}
    cell_w, cell_h = (0.95 if slots <= 4 else 0.62), 0.36
    width = len(panels) * (cell_w * slots + 1.5) + 0.6
    with style_context():
        fig = _new_figure((max(width, 4.5), cell_h * len(shown) + 1.7))
        axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
        for ax, (key, (mem, fill)) in zip(axes, arrays.items()):
            old = olds[key]
            for r, c in enumerate(shown):
                filled_n = int(fill[c])
                centre = mem[c, :filled_n].mean(0) if filled_n else None
                for j in range(slots):
                    filled = j < filled_n
                    rect = Rectangle(
                        (j, r), 1, 1, facecolor="#f6d5da" if filled else "white", edgecolor="#999999", lw=0.8
                    )
                    rect.set_gid("filled" if filled else "empty")
                    ax.add_patch(rect)
                    vec = mem[c, j]
                    text = label_of(vec) if filled else None
                    if filled and text is None and centre is not None:
                        den = np.linalg.norm(vec) * np.linalg.norm(centre)
                        text = f"cos {vec @ centre / den:.2f}" if den > 0 else "0"
                    change = None
                    if old is not None and not np.allclose(old[0][c, j], vec, atol=1e-7):
                        was_filled = j < int(old[1][c])
                        change = (
                            "replaced" if filled and was_filled else "added" if filled else "written, unused"
                        )
                        before_txt = label_of(old[0][c, j]) if was_filled else "empty"
                        new_txt = label_of(vec) or ("sketch" if filled else "?")
                        text = f"{before_txt or 'sketch'}→{new_txt}"
                        mark = Rectangle(
                            (j + 0.05, r + 0.08), 0.9, 0.84, facecolor="none", edgecolor=edge[change], lw=2.2
                        )
                        mark.set_gid(change)
                        ax.add_patch(mark)
                    if text is None and not filled:
                        text = "empty"
                    ax.text(
                        j + 0.5,
                        r + 0.5,
                        text,
                        ha="center",
                        va="center",
                        fontsize=8.5 if slots <= 4 else 6.5,
                        color="#222222" if filled else "#8f8f8f",
                    )
                ax.text(slots + 0.12, r + 0.5, f"{filled_n}/{slots}", ha="left", va="center", fontsize=8.5)
            ax.set_xlim(-0.05, slots + 0.8)
            ax.set_ylim(len(shown) + 0.05, -0.05)
            ax.set_xticks(np.arange(slots) + 0.5, [str(j) for j in range(slots)], fontsize=8.5)
            ax.set_yticks(
                np.arange(len(shown)) + 0.5,
                [str(class_names[c]) if class_names is not None else f"class {c}" for c in shown],
                fontsize=8.5,
            )
            ax.tick_params(length=0)
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_xlabel("slot (right: filled / slots)", fontsize=8)
            total = int(fill.sum())
            head = f"{key}: " if key else ""
            more = f" (first {len(shown)} of {c_num} classes)" if len(shown) < c_num else ""
            ax.set_title(f"{head}{total} of {c_num * slots} slots filled{more}", fontsize=9)
        handles = [
            Patch(facecolor="#f6d5da", edgecolor="#999999", label="filled (in the centre)"),
            Patch(facecolor="white", edgecolor="#999999", label="empty"),
        ]
        seen = {p.get_gid() for ax in axes for p in ax.patches}
        handles += [Patch(facecolor="none", edgecolor=e, lw=2, label=k) for k, e in edge.items() if k in seen]
        fig.legend(
            handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=8.5
        )
        if title:
            fig.suptitle(title, fontsize="medium", fontweight="bold")
    return _finish(fig, save_to)
