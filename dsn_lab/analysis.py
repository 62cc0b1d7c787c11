"""Domain-gap measures and 2-D projections: DSN's claim, as numbers and as pictures.

DSN (Wang et al., IJCAI 2021) claims to *smooth the domain gap* between sketches and photos and to
*reduce the intra-class diversity of sketches*. A t-SNE plot alone cannot show that (its layout depends on
perplexity and seed), so :func:`domain_gap` turns the claim into measures that move one way as the gap
shrinks:

========================== ====================== ===============================================
key                        smaller gap means      what it is
========================== ====================== ===============================================
domain_classifier_acc      down, towards 0.5      cross-validated linear sketch-vs-photo classifier
mmd                        down, towards 0        unbiased RBF-kernel MMD^2 between the domains
mmd_pvalue                 up                     permutation test of "same distribution"
centroid_distance          down                   per-class sketch centroid to photo centroid
sketch_dispersion          down (DSN's 2nd claim) mean distance of a sketch to its class centroid
photo_dispersion           (reference)            the same for photos
cross_domain_nn_agreement  up                     share of sketches whose nearest photo is same-class
========================== ====================== ===============================================

:func:`project` maps several feature arrays to 2-D with one joint fit (PCA, t-SNE, UMAP), and
:class:`DomainGapCallback` records the measures during training (``callback(model, epoch, step) -> dict``).

Inputs may be numpy arrays or torch tensors; everything is computed in float64 numpy on the CPU.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dsn_lab._atomic import atomic_path
from dsn_lab.inference import encode

__all__ = ["domain_gap", "project", "DomainGapCallback", "GAP_KEYS", "rbf_mmd2"]

#: The measures :func:`domain_gap` returns, in a stable order (plots use it).
GAP_KEYS = (
    "domain_classifier_acc",
    "mmd",
    "mmd_pvalue",
    "centroid_distance",
    "sketch_dispersion",
    "photo_dispersion",
    "cross_domain_nn_agreement",
)


# ---------------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------------
def _as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """numpy or torch (any device, with or without grad) -> numpy array of ``dtype``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}") from exc


def _check_pair(feats: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    f = _as_numpy(feats, f"{name}_feats")
    lab = _as_numpy(labels, f"{name}_labels", dtype=np.int64).reshape(-1)
    if f.ndim != 2:
        raise ValueError(f"{name}_feats: expected shape [N, D], got {f.shape}")
    if f.shape[0] == 0:
        raise ValueError(f"{name}_feats is empty: domain_gap needs at least one {name} feature")
    if f.shape[0] != lab.shape[0]:
        raise ValueError(f"{name}_feats has {f.shape[0]} rows but {name}_labels has {lab.shape[0]} entries")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name}_feats contains NaN or inf values (did training diverge?)")
    return f, lab


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [len(a), len(b)], clipped at 0 (float64 round-off)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


# ---------------------------------------------------------------------------------------------------
# the measures
# ---------------------------------------------------------------------------------------------------
def _domain_classifier_acc(xs: np.ndarray, xp: np.ndarray, rng: np.random.Generator, cv_folds: int) -> float:

    n = min(len(xs), len(xp))  # balance by subsampling the larger domain: chance is then exactly 0.5
    folds = min(cv_folds, n)
    if folds < 2:
        return math.nan
    xs = xs[rng.choice(len(xs), n, replace=False)]
    xp = xp[rng.choice(len(xp), n, replace=False)]
    x = np.concatenate([xs, xp])
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():  # a separable problem may not "converge"; the accuracy is still right
        warnings.simplefilter("ignore")
        scores = cross_val_score(clf, x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def _mmd_from_kernel(k: np.ndarray, assign: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 for each row of ``assign`` (1 = first sample, 0 = second) from the pooled kernel."""
    ka = assign @ k  # [P, N]
    s_xx = (ka * assign).sum(1)
    s_xy = ka.sum(1) - s_xx
    s_yy = k.sum() - s_xx - 2.0 * s_xy
    diag = np.diag(k)
    tr_x = assign @ diag
    tr_y = diag.sum() - tr_x
    return (s_xx - tr_x) / (n * (n - 1)) + (s_yy - tr_y) / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def rbf_mmd2(
    x: Any,
    y: Any,
    *,
    bandwidth: float | None = None,
    n_permutations: int = 0,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Unbiased MMD^2 between samples ``x`` [n, D] and ``y`` [m, D] with a Gaussian RBF kernel.

    ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; ``sigma`` is ``bandwidth`` or, by default, the median
    heuristic (Gretton et al., 2012): the median Euclidean distance between distinct points of the pooled
    sample. The unbiased estimate (Gretton et al. 2012, eq. 3)::

        MMD^2_u = 1/(n(n-1)) sum_{i!=j} k(x_i,x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i,y_j)
                  - 2/(nm) sum_{i,j} k(x_i,y_j)

    is 0 in expectation when the two distributions are equal (so it may be slightly negative then).

    With ``n_permutations > 0`` the p-value of a permutation test is ``(1 + #{b: MMD^2_b >= MMD^2}) /
    (1 + B)``, where ``MMD^2_b`` is the statistic after shuffling the domain labels of the pooled sample
    (seeded by ``seed``); otherwise the p-value is NaN. Returns ``(mmd2, pvalue, sigma)``.
    """
    x = _as_numpy(x, "x")
    y = _as_numpy(y, "y")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"rbf_mmd2 needs at least 2 samples on each side, got {n} and {m}")
    z = np.concatenate([x, y])
    d2 = _sq_dists(z, z)
    if bandwidth is None:
        off = d2[np.triu_indices(len(z), k=1)]
        sigma = float(np.sqrt(np.median(off)))
        if sigma <= 0.0:  # more than half the pairs coincide: fall back to the mean distance
            sigma = float(np.sqrt(off.mean())) or 1.0
    else:
        sigma = float(bandwidth)
        if sigma <= 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    k = np.exp(-d2 / (2.0 * sigma * sigma))
    assign = np.r_[np.ones(n), np.zeros(m)][None, :]
    stat = float(_mmd_from_kernel(k, assign, n, m)[0])
    pvalue = math.nan
    if n_permutations > 0:
        rng = np.random.default_rng(seed)
        exceed = 0
        for start in range(0, n_permutations, 64):  # batches of permutations keep memory at 64 x N
            b = min(64, n_permutations - start)
            perm = np.zeros((b, n + m))
            for row in range(b):
                perm[row, rng.permutation(n + m)[:n]] = 1.0
            exceed += int((_mmd_from_kernel(k, perm, n, m) >= stat - 1e-12).sum())
        pvalue = (1.0 + exceed) / (1.0 + n_permutations)
    return stat, pvalue, sigma


def _class_centroids(x: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): x[labels == c].mean(0) for c in np.unique(labels)}


def _dispersion(x: np.ndarray, labels: np.ndarray) -> float:
    per_class = []
    for c in np.unique(labels):
        xc = x[labels == c]
        if len(xc) < 2:  # a single sample is its own centroid: no information, skip it
            continue
        per_class.append(np.linalg.norm(xc - xc.mean(0), axis=1).mean())
    return float(np.mean(per_class)) if per_class else math.nan


def _nn_agreement(xs: np.ndarray, ls: np.ndarray, xp: np.ndarray, lp: np.ndarray) -> float:
    hits = 0
    for start in range(0, len(xs), 1024):  # chunks keep the distance matrix small
        d = _sq_dists(xs[start : start + 1024], xp)
        hits += int((lp[d.argmin(1)] == ls[start : start + 1024]).sum())
    return hits / len(xs)


def _subsample(x: np.ndarray, lab: np.ndarray, max_samples: int | None, rng: np.random.Generator):
    if max_samples is None or len(x) <= max_samples:
        return x, lab
    idx = np.sort(rng.choice(len(x), int(max_samples), replace=False))
    return x[idx], lab[idx]


def domain_gap(
    sketch_feats: Any,
    sketch_labels: Any,
    photo_feats: Any,
    photo_labels: Any,
    *,
    seed: int = 0,
    max_samples: int | None = 1000,
    normalize: bool = True,
    n_permutations: int = 200,
    cv_folds: int = 5,
) -> dict[str, float]:
    """Measure the gap between sketch and photo features; every entry is a float.

    Arguments are ``[N, D]`` features and ``[N]`` integer class labels per domain (numpy or torch). The
    measures (``s`` a sketch feature, ``p`` a photo feature, ``C`` the classes, ``mu^S_c`` / ``mu^P_c``
    the mean sketch / photo feature of class ``c``):

    - ``"domain_classifier_acc"``: mean accuracy over ``cv_folds`` stratified folds of a logistic
      regression (standardised inputs, C = 1) predicting the domain: ``acc = 1/K sum_k 1/|T_k|
      sum_{i in T_k} [y_hat_i = d_i]``. The larger domain is subsampled to the size of the smaller one, so
      **0.5 means no linearly detectable gap** and 1.0 a linearly separable one.
    - ``"mmd"``: unbiased MMD^2 with an RBF kernel, median-heuristic bandwidth (see :func:`rbf_mmd2`);
      ~0 for equal distributions. ``"mmd_bandwidth"`` is the sigma used.
    - ``"mmd_pvalue"``: permutation-test p-value of ``"mmd"`` (``n_permutations`` shuffles of the domain
      labels, seeded); small = the gap is real. NaN when ``n_permutations=0``.
    - ``"centroid_distance"``: ``1/|C'| sum_{c in C'} ||mu^S_c - mu^P_c||_2`` over the classes ``C'``
      present in both domains (NaN if none).
    - ``"sketch_dispersion"`` / ``"photo_dispersion"``: mean intra-class distance to the centroid,
      ``1/|C| sum_c 1/|X_c| sum_{x in X_c} ||x - mu_c||_2`` per domain (classes with one sample skipped).
    - ``"cross_domain_nn_agreement"``: ``1/|S| sum_s [label(argmin_p ||s - p||_2) = label(s)]``, the share of
      sketches whose nearest photo (Euclidean) has the same class: a label-aware, retrieval-like measure.

    ``normalize=True`` (default) L2-normalises every feature first, so **all distances are on the unit
    sphere** (Euclidean there is a monotone function of cosine, and 2 is the largest possible distance).
    This makes the values comparable across epochs and models, whose feature scales drift during training;
    set ``normalize=False`` for raw Euclidean geometry.

    ``max_samples`` caps each domain by a seeded random subsample (default 1000 per domain) because MMD
    needs an (n+m)^2 kernel matrix and the classifier a cross-validation; ``None`` uses everything.
    ``seed`` drives the subsample, the classifier folds and the permutations: equal inputs and seed give
    equal results.
    """
    xs, ls = _check_pair(sketch_feats, sketch_labels, "sketch")
    xp, lp = _check_pair(photo_feats, photo_labels, "photo")
    if xs.shape[1] != xp.shape[1]:
        raise ValueError(
            f"sketch features have dimension {xs.shape[1]} but photo features {xp.shape[1]}: "
            "encode both domains with the same model head"
        )
    rng = np.random.default_rng(seed)
    xs, ls = _subsample(xs, ls, max_samples, rng)
    xp, lp = _subsample(xp, lp, max_samples, rng)
    if normalize:
        xs, xp = _l2_normalise(xs), _l2_normalise(xp)

    out: dict[str, float] = {}
    out["domain_classifier_acc"] = _domain_classifier_acc(xs, xp, rng, cv_folds)
    if len(xs) >= 2 and len(xp) >= 2:
        mmd2, pvalue, sigma = rbf_mmd2(
            xs, xp, n_permutations=n_permutations, seed=int(rng.integers(2**31 - 1))
        )
    else:
        mmd2 = pvalue = sigma = math.nan
    out["mmd"], out["mmd_pvalue"], out["mmd_bandwidth"] = mmd2, pvalue, sigma

    cs, cp = _class_centroids(xs, ls), _class_centroids(xp, lp)
    shared = sorted(set(cs) & set(cp))
    out["centroid_distance"] = (
        float(np.mean([np.linalg.norm(cs[c] - cp[c]) for c in shared])) if shared else math.nan
    )
    out["sketch_dispersion"] = _dispersion(xs, ls)
    out["photo_dispersion"] = _dispersion(xp, lp)
    out["cross_domain_nn_agreement"] = float(_nn_agreement(xs, ls, xp, lp))
    return out


# ---------------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------------
def project(
    feats_list: Sequence[Any],
    method: str = "pca",
    seed: int = 0,
    *,
    normalize: bool = False,
    pca_dims: int | None = 50,
    **kw: Any,
) -> list[np.ndarray]:
    """Map each array of ``feats_list`` ([N_i, D], same D) to ``[N_i, 2]`` with **one joint fit**.

    Fitting once on all arrays together (e.g. sketches and photos, or the same points before and after
    training when both live in the same space) puts them in one map, so their relative positions mean
    something; two separate t-SNE or UMAP fits are not comparable with each other.

    - ``"pca"``: scikit-learn PCA (full SVD: deterministic).
    - ``"tsne"``: scikit-learn's ``TSNE`` (``init="pca"``, ``random_state=seed``). Chosen over openTSNE
      because scikit-learn is already a dependency and is deterministic for a given ``random_state``;
      ``perplexity`` (default 30) is clipped to ``(N - 1) / 3`` for small inputs.
    - ``"umap"``: umap-learn's ``UMAP(random_state=seed)`` (seeding makes it deterministic and single
      threaded). Imported lazily: importing it compiles numba code (tens of seconds on first use).
      ``n_neighbors`` (default 15) is clipped to ``N - 1``.

    For t-SNE and UMAP, inputs wider than ``pca_dims`` are first reduced to ``pca_dims`` dimensions by PCA
    (standard practice: faster, and removes noise dimensions); ``pca_dims=None`` disables that.
    ``normalize=True`` L2-normalises the features first (the geometry :func:`domain_gap` measures).
    Extra keyword arguments go to the scikit-learn / umap-learn estimator.
    """
    if isinstance(feats_list, np.ndarray) or hasattr(feats_list, "detach"):
        raise TypeError("project expects a list of [N, D] arrays, e.g. [sketch_feats, photo_feats]")
    arrays = [_as_numpy(f, f"feats_list[{i}]") for i, f in enumerate(feats_list)]
    if not arrays:
        raise ValueError("project: feats_list is empty")
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != arrays[0].shape[1]:
            raise ValueError(
                f"project: feats_list[{i}] has shape {a.shape}; every array must be [N, D] with the same D "
                f"({arrays[0].shape[1] if arrays[0].ndim == 2 else '?'})"
            )
    sizes = [len(a) for a in arrays]
    x = np.concatenate(arrays)
    n = len(x)
    if n < 3:
        raise ValueError(f"project needs at least 3 points in total, got {n}")
    if normalize:
        x = _l2_normalise(x)
    method = method.lower()

    if method != "pca" and pca_dims is not None and x.shape[1] > pca_dims and n > pca_dims:
        x = PCA(n_components=pca_dims, svd_solver="full").fit_transform(x)

    if method == "pca":
        y = PCA(n_components=2, svd_solver="full", **kw).fit_transform(x)
        if x.shape[1] < 2:  # a 1-D input: pad so every output is [N, 2]
            y = np.pad(y, ((0, 0), (0, 2 - y.shape[1])))
    elif method == "tsne":
        kw.setdefault("perplexity", 30.0)
        kw["perplexity"] = float(min(kw["perplexity"], max(1.0, (n - 1) / 3.0)))
        kw.setdefault("init", "pca")
        y = TSNE(n_components=2, random_state=seed, **kw).fit_transform(x)
    elif method == "umap":
        try:
            import umap  # lazy: numba compiles on import
        except ImportError as exc:  # pragma: no cover - umap-learn is a dependency
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from exc
        kw.setdefault("n_neighbors", 15)
        kw["n_neighbors"] = int(max(2, min(kw["n_neighbors"], n - 1)))
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": expected
            warnings.simplefilter("ignore", UserWarning)
            y = umap.UMAP(n_components=2, random_state=seed, **kw).fit_transform(x)
    else:
        raise ValueError(f"project: unknown method {method!r}; use 'pca', 'tsne' or 'umap'")
    y = np.asarray(y, dtype=np.float64)
    return [part for part in np.split(y, np.cumsum(sizes)[:-1])]


def project_sequence(
    frames: Sequence[Sequence[Any]], method: str = "tsne", seed: int = 0, **kw: Any
) -> list[list[np.ndarray]]:
    """:func:`project` each frame (e.g. the codes of the same images at every epoch), each frame's map
    starting from the previous one's layout, so the maps read as a sequence: a point moves only as far as
    its neighbourhood changed, instead of every map being rotated and mirrored anew.

    ``frames``: a list of frames, each a list of arrays as :func:`project` takes (same points, same order in
    every frame). t-SNE and UMAP take the previous layout as ``init`` (for t-SNE rescaled to the standard
    deviation 1e-4 of its PCA initialisation); PCA fits each frame alone. ``kw`` go to :func:`project`.
    """
    if not frames:
        raise ValueError("project_sequence: no frames")
    sizes = [sum(len(a) for a in frame) for frame in frames]
    if len(set(sizes)) != 1:
        raise ValueError(f"project_sequence: every frame must hold the same points; sizes {sizes}")
    out: list[list[np.ndarray]] = []
    for frame in frames:
        extra = dict(kw)
        if out and method.lower() in ("tsne", "umap"):
            previous = np.concatenate(out[-1])
            if method.lower() == "tsne":
                previous = previous / max(float(previous[:, 0].std()), 1e-12) * 1e-4
            extra["init"] = previous
        out.append(project(frame, method=method, seed=seed, **extra))
    return out


# ---------------------------------------------------------------------------------------------------
# training callback
# ---------------------------------------------------------------------------------------------------
class DomainGapCallback:
    """Training callback ``callback(model, epoch, step) -> dict[str, float]`` recording :func:`domain_gap`.

    ``sketch_data`` / ``photo_data``: either ``(images [N, 3, H, W] tensor, labels [N])`` or a torch
    ``Dataset`` whose items are ``(image, label, ...)`` (e.g. :func:`dsn_lab.data.get_dataset` with an eval
    transform). At construction a fixed, seeded subset of at most ``max_samples`` items per domain is
    chosen, so every call measures the same images and encoding stays cheap.

    Each call (on epochs where ``epoch % every == 0``; other epochs return ``{}``) encodes both domains
    with ``model(images, domain)`` (domain 0 sketches, 1 photos) under ``torch.no_grad()`` in eval mode
    (the previous train/eval mode is restored), takes ``.code`` (``feature="code"``, the hashing code the
    retrieval uses) or ``.features`` (``feature="pooled"``, the backbone's pooled feature that the memory
    loss acts on), and returns the :func:`domain_gap` entries with keys prefixed ``"gap/"``.

    ``device=None`` uses the device of the model's parameters. Call it yourself on the untrained model to
    get the "before training" row: ``cb(model, epoch=0, step=0)``. ``gap_kwargs`` go to :func:`domain_gap`
    (default ``n_permutations=100`` to keep per-epoch cost low).

    ``keep_codes_in``: a folder; each call also writes the encoded subset there as
    ``epoch<NNN>.npz`` (``sketch``, ``sketch_labels``, ``photo``, ``photo_labels``, float16 codes), so the
    maps of the gap over training can be drawn after the run (:func:`load_gap_codes`).
    """

    def __init__(
        self,
        sketch_data: Any,
        photo_data: Any,
        every: int = 1,
        device: Any = None,
        feature: str = "code",
        *,
        batch_size: int = 64,
        max_samples: int | None = 500,
        seed: int = 0,
        prefix: str = "gap/",
        keep_codes_in: str | os.PathLike[str] | None = None,
        **gap_kwargs: Any,
    ) -> None:
        if feature not in ("code", "pooled"):
            raise ValueError(f"DomainGapCallback: feature must be 'code' or 'pooled', got {feature!r}")
        if every < 1:
            raise ValueError(f"DomainGapCallback: every must be >= 1, got {every}")
        self.every = int(every)
        self.device = device
        self.feature = feature
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.prefix = prefix
        self.keep_codes_in = None if keep_codes_in is None else Path(keep_codes_in)
        gap_kwargs.setdefault("n_permutations", 100)
        gap_kwargs.setdefault("max_samples", None)  # the subset below is already the cap
        self.gap_kwargs = gap_kwargs
        rng = np.random.default_rng(seed)
        self._sketch = self._prepare(sketch_data, "sketch_data", max_samples, rng)
        self._photo = self._prepare(photo_data, "photo_data", max_samples, rng)

    @staticmethod
    def _prepare(data: Any, name: str, max_samples: int | None, rng: np.random.Generator):
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            images, labels = data
            labels = torch.as_tensor(labels).reshape(-1)
            if images.ndim != 4 or len(images) != len(labels):
                raise ValueError(
                    f"DomainGapCallback {name}: expected (images [N, C, H, W], labels [N]), got images "
                    f"{tuple(images.shape)} and {len(labels)} labels"
                )
            n = len(images)
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            images, labels, n = data, None, len(data)
        else:
            raise TypeError(
                f"DomainGapCallback {name}: expected (images tensor, labels) or a torch Dataset, "
                f"got {type(data).__name__}"
            )
        if n == 0:
            raise ValueError(f"DomainGapCallback {name} is empty")
        idx = np.arange(n)
        if max_samples is not None and n > max_samples:
            idx = np.sort(rng.choice(n, int(max_samples), replace=False))
        return images, labels, idx

    def _batches(self, prepared):
        images, labels, idx = prepared
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start : start + self.batch_size]
            if labels is not None:
                t = torch.as_tensor(chunk)
                yield images[t], labels[t]
            else:
                items = [images[int(i)] for i in chunk]
                if not isinstance(items[0][0], torch.Tensor):
                    raise TypeError(
                        f"DomainGapCallback: the dataset returned a {type(items[0][0]).__name__} image; "
                        "build it with a tensor transform, e.g. "
                        "get_dataset(..., transform=eval_transform(size))"
                    )
                yield (
                    torch.stack([torch.as_tensor(it[0]) for it in items]),
                    torch.as_tensor([int(it[1]) for it in items]),
                )

    def encode(self, model: Any, prepared, domain: int):
        """Features [N, D] (float32 numpy) and labels [N] of one domain's subset (the package's one
        embedding loop, :func:`dsn_lab.inference.encode`: eval mode, no gradient, fp32)."""
        output = "code" if self.feature == "code" else "features"
        return encode(model, self._batches(prepared), domain=domain, device=self.device, output=output)

    def codes(self, model: Any) -> dict[str, np.ndarray]:
        """The model's codes of the fixed subset, as :func:`load_gap_codes` returns one epoch's: ``sketch``,
        ``sketch_labels``, ``photo``, ``photo_labels`` (e.g. the untrained model's, for an epoch 0)."""
        xs, ls = self.encode(model, self._sketch, 0)
        xp, lp = self.encode(model, self._photo, 1)
        return {"sketch": xs, "sketch_labels": ls, "photo": xp, "photo_labels": lp}

    def __call__(self, model: Any, epoch: int, step: int) -> dict[str, float]:
        if epoch % self.every != 0:
            return {}
        codes = self.codes(model)
        if self.keep_codes_in is not None:
            save_gap_codes(self.keep_codes_in / f"epoch{epoch:03d}.npz", **codes)
        return self.measure(codes)

    def measure(self, codes: dict[str, Any]) -> dict[str, float]:
        """The ``gap/...`` entries of codes :meth:`codes` returned (or :func:`load_gap_codes` read), as a
        call measures them: encode once, then both measure and draw the same codes."""
        gap = domain_gap(
            codes["sketch"],
            codes["sketch_labels"],
            codes["photo"],
            codes["photo_labels"],
            seed=self.seed,
            **self.gap_kwargs,
        )
        return {f"{self.prefix}{k}": float(v) for k, v in gap.items()}


def save_gap_codes(
    path: str | os.PathLike[str], sketch: Any, sketch_labels: Any, photo: Any, photo_labels: Any
) -> Path:
    """Write one epoch's codes (float16) and labels to ``path`` (``.npz``), atomically."""
    path = Path(path)
    arrays = {
        "sketch": np.asarray(sketch, np.float16),
        "sketch_labels": np.asarray(sketch_labels, np.int64),
        "photo": np.asarray(photo, np.float16),
        "photo_labels": np.asarray(photo_labels, np.int64),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def load_gap_codes(folder: str | os.PathLike[str]) -> dict[int, dict[str, np.ndarray]]:
    """The codes a :class:`DomainGapCallback` with ``keep_codes_in=folder`` wrote: ``{epoch: arrays}``
    in epoch order (float32 codes). A folder without any is an error that says where they come from."""
    folder = Path(folder)
    files = sorted(folder.glob("epoch[0-9][0-9][0-9].npz"))
    if not files:
        raise FileNotFoundError(
            f"{folder}: no epochNNN.npz code files. They are written by DomainGapCallback(keep_codes_in=...) "
            "during training; course runs (dsn_lab.course.ensure_run) keep them in <run folder>/gap_codes."
        )
    out = {}
    for f in files:
        with np.load(f) as z:
            out[int(f.stem[5:])] = {
                k: (z[k].astype(np.float32) if k in ("sketch", "photo") else z[k]) for k in z
            }
    return out
