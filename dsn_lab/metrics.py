"""Retrieval metrics under each published ZS-SBIR protocol, and ITQ binary codes.

Papers in zero-shot sketch-based image retrieval all print "mAP@all" and "P@100", but the reference code
behind them computes these numbers in different ways. :func:`evaluate_retrieval` implements every variant that
the reference code we could read uses, as keyword options, with the DSN/SAKE protocol as the default:

============  ===========================================  ===============================================
option        DSN / SAKE (default)                         ZSE-SBIR (CVPR 2023) and most later papers
============  ===========================================  ===============================================
ranking       Euclidean (``scipy.cdist``) on L2-normalised  Euclidean on L2-normalised features
              hashing codes (``get_features`` normalises)   (``F.pairwise_distance``)
AP            VOC interpolated (``VOCap``)                 VOC interpolated (``voc_ap``)
``mAP@200``   same AP on the top 200, #pos capped at 200   same as DSN/SAKE
``P@K``       hits in top K / min(K, gallery size)         hits in top min(K, #pos) / min(K, #pos)
averaging     per class (``np.nanmean`` over the queries   plain mean over queries (``np.nanmean``)
              of each query class, then over classes)
binary codes  ITQ fit on the *query* (sketch) codes, each  none
              set centred by its own mean, Hamming
              ranking (= ``cdist`` on 0/1 codes)
============  ===========================================  ===============================================

Sources: ``src/tool.py`` (``compressITQ``, ``ITQ``, ``eval_AP_inner``, ``VOCap``, ``eval_precision``) and
``src/test_cse_resnet_{sketchy,tuberlin}_zeroshot.py`` of github.com/haowang1992/DSN (a fork of
github.com/qliu24/SAKE, whose evaluation code is the same minus ITQ); ``utils/ap.py`` (``calculate``,
``voc_eval``, ``precision_eval``) and ``utils/valid.py`` of github.com/buptLinfy/ZSE-SBIR.
So ``average="query", p_at_k_over="positives", normalize=True`` gives the ZSE-SBIR protocol.

Exact definitions (``r_k`` = rank of the k-th positive, 1-based; ``n_pos`` = positives of the query class in
the gallery; ``P(k) = k / r_k``):

- plain AP = ``sum_k P(k) / n_pos``; interpolated (VOC) AP = ``sum_k max_{k' >= k} P(k') / n_pos``.
- ``mAP@M``: the same, counting only positives with ``r_k <= M`` and dividing by ``min(M, n_pos)``.
- ``P@K``: (positives in the top K) / min(K, gallery size); with ``p_at_k_over="positives"`` it is
  (positives in the top min(K, n_pos)) / min(K, n_pos), exactly as ZSE-SBIR's ``precision_eval``.

Ties (equal computed distances; common on Hamming codes): broken by gallery index, the earlier gallery item
ranks first (a stable sort). The released codes use ``np.argsort``'s default introsort, whose order among
ties is unspecified, so their ITQ numbers depend on it; ours are deterministic.

Implementation: torch, chunked over queries (the chunk size comes from ``memory_budget_mb``, so the extra
memory is bounded whatever the gallery size), on the GPU when the inputs are there (or ``device=``). The sort
is a stable radix sort on integer keys that order like the floating-point distances; AP and P@K are computed
from the ranks of the positives only, with no per-query Python loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

Distance = Literal["euclidean", "cosine", "hamming"]

# peak bytes per (query, gallery) cell of a chunk: scores, sort keys, sort values + indices, hits
_BYTES_PER_CELL = 48


# ----------------------------------------------------------------------------------------------------
# input handling


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{name}: expected a numeric array or tensor, got {type(x).__name__} ({e})"
            ) from e
    if not (
        t.is_floating_point()
        or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)
    ):
        raise ValueError(f"{name}: expected real-valued features, got dtype {t.dtype}")
    return t


def _check_feats(x: Any, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [n, dim], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name}: empty (0 rows); retrieval needs at least one query and one gallery item")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: features have dimension 0")
    # a sum is finite whenever every entry is (one fast reduction); only when it is not (a NaN/inf, or an
    # overflow of large finite values) is the elementwise check needed
    if t.is_floating_point() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise ValueError(
            f"{name}: {bad} row(s) contain NaN or inf; check the feature extraction (e.g. a "
            "diverged model or a zero vector L2-normalised) before evaluating"
        )
    return t


def _labels_np(x: Any, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {a.shape}")
    return a


def _resolve_device(device: Any, *tensors: torch.Tensor) -> torch.device:
    if device is not None:
        return torch.device(device)
    for t in tensors:
        if t.device.type != "cpu":
            return t.device
    return torch.device("cpu")


def _binary_to_pm1(t: torch.Tensor, name: str) -> torch.Tensor:
    """Accept codes in {-1, +1}, {0, 1} or bool; return float ±1."""
    if t.dtype == torch.float32 and t.ndim == 2 and bool((t.abs() == 1).all()):
        return t
    vals = torch.unique(t)
    allowed_pm = set(vals.tolist()) <= {-1, 1}
    allowed_01 = set(vals.tolist()) <= {0, 1}
    if allowed_pm:
        return t.float()
    if allowed_01:
        return t.float() * 2 - 1
    raise ValueError(
        f"{name}: distance='hamming' needs binary codes (values in {{-1, 1}} or {{0, 1}}); "
        f"got values such as {vals[:5].tolist()}. Use codes='itq' to binarise real-valued "
        "features."
    )


# ----------------------------------------------------------------------------------------------------
# ITQ


@dataclass
class ITQ:
    """Iterative quantisation (Gong & Lazebnik, CVPR 2011): PCA to ``bits`` dims, then an orthogonal rotation
    that makes ``sign(V R)`` close to ``V R``. ``encode`` gives ±1 codes (``int8``)."""

    mean: np.ndarray  # [dim] mean of the fit set
    components: np.ndarray  # [dim, bits] PCA directions, largest variance first
    rotation: np.ndarray  # [bits, bits] orthogonal
    loss_history: list[float] = field(default_factory=list)  # ||B - V R||^2 / n before each update

    @property
    def bits(self) -> int:
        return int(self.rotation.shape[0])

    def project(self, x: Any, center: Literal["fit", "self"] = "fit") -> torch.Tensor:
        """Real-valued rotated PCA projection (float64), before taking signs."""
        t = _check_feats(x, "ITQ input").double()
        if t.shape[1] != self.mean.shape[0]:
            raise ValueError(f"ITQ input: dimension {t.shape[1]} != fitted dimension {self.mean.shape[0]}")
        mean = t.mean(0, keepdim=True) if center == "self" else torch.as_tensor(self.mean, device=t.device)
        proj = torch.as_tensor(self.components @ self.rotation, device=t.device)
        return (t - mean) @ proj

    def encode(self, x: Any, center: Literal["fit", "self"] = "fit") -> Any:
        """±1 codes [n, bits] (``int8``; ``> 0`` maps to +1, as ``compressITQ``). Same array type as ``x``.

        ``center="self"`` subtracts the mean of ``x`` itself instead of the fit-set mean: the released DSN
        code (``compressITQ``) centres the query and the gallery set each by its own mean."""
        codes = torch.where(self.project(x, center) > 0, 1, -1).to(torch.int8)
        return codes if isinstance(x, torch.Tensor) else codes.cpu().numpy()


def itq_fit(
    feats: Any,
    bits: int | None = None,
    n_iter: int = 50,
    seed: int = 0,
    *,
    variant: Literal["gong", "released"] = "gong",
    device: Any = None,
) -> ITQ:
    """Fit ITQ on ``feats`` [n, dim]; ``bits=None`` keeps every PCA direction (``bits = dim``, as the released
    DSN code, which turns the 64-d hashing code into 64 bits).

    ``variant="gong"`` is the Procrustes update of the paper and its MATLAB code (``R = V U^T`` for
    ``svd(B^T V) = U S V^T``): the quantisation loss never increases. ``variant="released"`` reproduces the
    Python port in DSN's ``tool.py``, which reads ``np.linalg.svd``'s third output (``V^T``) as if it were
    MATLAB's ``V`` and so sets ``R = V^T U^T`` (still orthogonal, not the minimiser), with the initial
    rotation drawn after ``np.random.seed(n_iter)`` (``seed`` is ignored)."""
    t = _check_feats(feats, "ITQ fit features")
    dev = _resolve_device(device, t)
    x = t.to(dev, torch.float64)
    n, dim = x.shape
    bits = dim if bits is None else int(bits)
    if not 1 <= bits <= dim:
        raise ValueError(f"itq_fit: bits must be in 1..{dim} (the feature dimension), got {bits}")
    if n < 2:
        raise ValueError("itq_fit: need at least 2 samples to estimate a covariance")
    if variant not in ("gong", "released"):
        raise ValueError(f"itq_fit: variant must be 'gong' or 'released', got {variant!r}")
    mean = x.mean(0, keepdim=True)
    xc = x - mean
    evals, evecs = torch.linalg.eigh(xc.T @ xc / (n - 1))
    components = evecs[:, torch.argsort(evals, descending=True, stable=True)[:bits]]
    v = xc @ components
    rng = np.random.RandomState(n_iter) if variant == "released" else np.random.default_rng(seed)
    r0 = rng.randn(bits, bits) if variant == "released" else rng.standard_normal((bits, bits))
    u0, _, _ = np.linalg.svd(r0)
    rot = torch.as_tensor(u0[:, :bits], device=dev)
    history = []
    for _ in range(n_iter):
        z = v @ rot
        b = torch.where(z >= 0, 1.0, -1.0).to(torch.float64)
        history.append(float(((b - z) ** 2).sum() / n))
        ub, _, vh = torch.linalg.svd(b.T @ v)
        rot = vh @ ub.T if variant == "released" else vh.T @ ub.T
    return ITQ(
        mean=mean[0].cpu().numpy(),
        components=components.cpu().numpy(),
        rotation=rot.cpu().numpy(),
        loss_history=history,
    )


# ----------------------------------------------------------------------------------------------------
# scores and ranking


def _prepare(
    q: torch.Tensor, g: torch.Tensor, distance: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.dtype]:
    """Return (query, gallery, gallery term, dtype) so that the ranking score of a chunk is
    ``gallery_term - 2 q g^T`` (Euclidean), ``-q g^T`` (cosine) or ``(bits - q g^T) / 2`` (Hamming)."""
    if distance == "hamming":
        # ±1 codes: dot products are small integers, exact in float32, so the fast int32 sort applies
        return _binary_to_pm1(q, "query codes"), _binary_to_pm1(g, "gallery codes"), None, torch.float32
    q, g = q.to(dtype), g.to(dtype)
    if distance == "cosine":
        qn, gn = q.norm(dim=1, keepdim=True), g.norm(dim=1, keepdim=True)
        if bool((qn == 0).any()) or bool((gn == 0).any()):
            raise ValueError("distance='cosine': a feature vector is all zeros, its cosine is undefined")
        return q / qn, g / gn, None, dtype
    if distance == "euclidean":
        return q, g, torch.einsum("ij,ij->i", g, g), dtype  # sum of squares without a [G, D] temporary
    raise ValueError(f"distance must be 'euclidean', 'cosine' or 'hamming', got {distance!r}")


def _chunk_scores(
    qc: torch.Tensor, g: torch.Tensor, gterm: torch.Tensor | None, distance: str
) -> torch.Tensor:
    """Scores that order like the distances (smaller = closer). Euclidean omits ||q||^2 (constant per row)."""
    dots = qc @ g.T  # in-place updates below keep the chunk's peak memory at one [B, G] float tensor
    if distance == "euclidean":
        return dots.mul_(-2).add_(gterm[None, :])
    if distance == "cosine":
        return dots.neg_()
    return dots.neg_().add_(g.shape[1]).mul_(0.5)


def _order_keys(scores: torch.Tensor) -> torch.Tensor:
    """Integer keys that order like the float scores (same bits, negative values' magnitude bits flipped),
    made in place: integer sorts (radix) and searches are about twice as fast as on floats."""
    s = scores.add_(0.0)  # in place (the caller hands over its scores); turns -0.0 into +0.0 so zeros tie
    if s.dtype == torch.float64:
        k = s.view(torch.int64)
        mask = k >> 63
        k ^= mask.bitwise_and_(0x7FFFFFFFFFFFFFFF)
    elif s.dtype == torch.float32:
        k = s.view(torch.int32)
        mask = k >> 31
        k ^= mask.bitwise_and_(0x7FFFFFFF)
    else:
        return s
    return k


def _stable_argsort(scores: torch.Tensor) -> torch.Tensor:
    """Stable ascending argsort along dim 1 (ties keep gallery order). Consumes ``scores``."""
    return torch.sort(_order_keys(scores), dim=1, stable=True).indices


def _positive_ranks_sorted(
    keys: torch.Tensor, hits_of: torch.Tensor, qid: torch.Tensor, width: int
) -> torch.Tensor:
    """0-based ranks of each query's positives, ascending, padded with int64 max: the full stable sort."""
    nrow = keys.shape[0]
    order = torch.sort(keys, dim=1, stable=True).indices
    hits = hits_of[order] == qid[:, None]
    del order
    rows, cols = hits.nonzero(as_tuple=True)  # row-major: within a row, increasing rank
    del hits
    npos = torch.bincount(rows, minlength=nrow)
    j = torch.arange(rows.numel(), device=keys.device) - (torch.cumsum(npos, 0) - npos)[rows]
    rank0 = torch.full((nrow, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=keys.device)
    rank0[rows, j] = cols
    return rank0


def _true_distances(q: torch.Tensor, g: torch.Tensor, idx: torch.Tensor, distance: str) -> torch.Tensor:
    gs = g[idx]  # [n, k, d]
    if distance == "euclidean":
        return (gs - q[:, None, :]).norm(dim=2)
    if distance == "cosine":
        return 1 - (gs * q[:, None, :]).sum(2)
    return ((g.shape[1] - (gs * q[:, None, :]).sum(2)) * 0.5).round()


def rank_gallery(
    query: Any,
    gallery: Any,
    *,
    distance: Distance = "euclidean",
    topk: int | None = None,
    normalize: bool = False,
    return_distances: bool = False,
    device: Any = None,
    dtype: torch.dtype = torch.float64,
) -> Any:
    """Gallery indices sorted from nearest to farthest, for one query ``[dim]`` or a few ``[n, dim]``.

    Same ranking as :func:`evaluate_retrieval` (ties by gallery index). Returns ``int64`` numpy indices
    ``[k]`` / ``[n, k]`` (``k = topk`` or the gallery size); with ``return_distances=True`` a pair
    ``(indices, distances)`` (Euclidean distance, ``1 - cos`` or the Hamming distance). Meant for a few
    queries (the explorer widget); for whole test sets use :func:`evaluate_retrieval`."""
    single = (isinstance(query, torch.Tensor) and query.ndim == 1) or (
        not isinstance(query, torch.Tensor) and np.ndim(query) == 1
    )
    qt = _check_feats(_as_tensor(query, "query").reshape(1, -1) if single else query, "query")
    gt = _check_feats(gallery, "gallery")
    if qt.shape[1] != gt.shape[1]:
        raise ValueError(f"query dimension {qt.shape[1]} != gallery dimension {gt.shape[1]}")
    dev = _resolve_device(device, qt, gt)
    qt, gt = qt.to(dev), gt.to(dev)
    if normalize and distance != "hamming":
        qt, gt = _l2(qt.to(dtype), "query"), _l2(gt.to(dtype), "gallery")
    qp, gp, gterm, _ = _prepare(qt, gt, distance, dtype)
    k = gt.shape[0] if topk is None else max(1, min(int(topk), gt.shape[0]))
    idx = _stable_argsort(_chunk_scores(qp, gp, gterm, distance))[:, :k]
    out_idx = idx.cpu().numpy()
    if single:
        out_idx = out_idx[0]
    if not return_distances:
        return out_idx
    dist = _true_distances(qp, gp, idx, distance).cpu().numpy()
    return out_idx, (dist[0] if single else dist)


def _l2(t: torch.Tensor, name: str) -> torch.Tensor:
    n = t.norm(dim=1, keepdim=True)
    if bool((n == 0).any()):
        raise ValueError(f"{name}: normalize=True but a feature vector is all zeros")
    return t / n


# ----------------------------------------------------------------------------------------------------
# evaluation


def _rev_cummax(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(torch.cummax(torch.flip(x, [1]), dim=1).values, [1])


def evaluate_retrieval(
    query_feats: Any,
    query_labels: Any,
    gallery_feats: Any,
    gallery_labels: Any,
    *,
    distance: Distance = "euclidean",
    average: Literal["class", "query"] = "class",
    ks: tuple[int, ...] = (100, 200),
    map_at: tuple[int, ...] = (200,),
    interpolated: bool = True,
    p_at_k_over: Literal["gallery", "positives"] = "gallery",
    codes: Literal["real", "itq"] = "real",
    normalize: bool = False,
    itq_bits: int | None = None,
    itq_fit_on: Any = "query",
    itq_center: Literal["each", "fit"] = "each",
    itq_variant: Literal["gong", "released"] = "gong",
    itq_iters: int = 50,
    itq_seed: int = 0,
    on_missing: Literal["error", "zero", "skip"] = "error",
    per_query: bool = False,
    device: Any = None,
    dtype: torch.dtype = torch.float64,
    memory_budget_mb: float = 512,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Zero-shot SBIR metrics: ``"mAP@all"``, ``"P@K"`` for K in ``ks``, ``"mAP@M"`` for M in ``map_at``.

    Inputs are numpy arrays or torch tensors: features ``[n, dim]``, labels ``[n]`` (any integer or string
    labels). Defaults are the DSN/SAKE protocol (see the module docstring for what each option means and which
    paper's code uses it): Euclidean ranking of real-valued codes, VOC-interpolated AP over the whole ranking,
    ``mAP@200`` = the same AP on the top 200 with the positive count capped at 200, ``P@K`` over
    ``min(K, gallery size)``, per-class averaging (mean over the queries of each query class, then over
    classes).

    Options:
        distance: ``"euclidean"`` | ``"cosine"`` | ``"hamming"`` (features already binary, ±1 or 0/1).
        average: ``"class"`` (DSN/SAKE) or ``"query"`` (ZSE-SBIR and most later papers).
        interpolated: VOC-interpolated AP (True, all the reference codes) or plain non-interpolated AP.
        p_at_k_over: ``"gallery"``: hits in top K / min(K, gallery); ``"positives"``: hits in the top
            min(K, #positives) / min(K, #positives) (ZSE-SBIR's ``precision_eval``).
        normalize: L2-normalise both feature sets first. The released DSN, SAKE and ZSE-SBIR pipelines all
            do this at feature extraction (``F.normalize``), so pass ``normalize=True`` on raw model codes to
            match them (Euclidean on unit vectors ranks as cosine).
        codes: ``"itq"`` binarises with ITQ and ranks by Hamming distance (the released DSN code ranks
            ``cdist`` on 0/1 codes, the square root of the Hamming distance: the same ranking).
            ``itq_fit_on``: ``"query"`` (released DSN code: ``compressITQ(query, gallery)`` fits on the
            sketches), ``"gallery"``, ``"both"``, or an array of features to fit on. ``itq_center="each"``
            centres query and gallery by their own means before projecting (released code); ``"fit"`` uses
            the fit-set mean for both. ``itq_bits`` (default: the feature dimension, as released),
            ``itq_variant`` (``"gong"`` or ``"released"``, see :func:`itq_fit`), ``itq_iters``, ``itq_seed``.
        on_missing: a query whose class has no item in the gallery has no defined AP (the released code gets
            NaN there and then a NaN mean). ``"error"`` (default) raises ValueError naming the classes;
            ``"zero"`` scores those queries 0 on every metric and warns; ``"skip"`` leaves them out and warns.
        per_query: also return ``"AP_per_query"`` (the mAP@all AP of each query), ``"AP@M_per_query"``,
            ``"P@K_per_query"`` (float64 arrays in query order; NaN for skipped queries), ``"classes"`` (the
            query classes, sorted) and ``"mAP_per_class"`` (mean AP of each of them).
        device: where to compute (default: the inputs' device, else the CPU). dtype: float type of the
            distance computation (float64 by default, to rank like ``scipy.cdist``; float32 is faster on
            GPUs).
        memory_budget_mb: bound on the extra memory of one chunk of queries; sets the chunk size.
        progress: tqdm bar over chunks (default: only for large problems).

    Ties are broken by gallery index (stable sort). Returns Python floats, plus the per-query arrays when
    asked, and ``"n_queries"``, ``"n_gallery"``.
    """
    if average not in ("class", "query"):
        raise ValueError(f"average must be 'class' or 'query', got {average!r}")
    if p_at_k_over not in ("gallery", "positives"):
        raise ValueError(f"p_at_k_over must be 'gallery' or 'positives', got {p_at_k_over!r}")
    if codes not in ("real", "itq"):
        raise ValueError(f"codes must be 'real' or 'itq', got {codes!r}")
    if on_missing not in ("error", "zero", "skip"):
        raise ValueError(f"on_missing must be 'error', 'zero' or 'skip', got {on_missing!r}")
    if distance not in ("euclidean", "cosine", "hamming"):
        raise ValueError(f"distance must be 'euclidean', 'cosine' or 'hamming', got {distance!r}")
    ks, map_at = tuple(int(k) for k in ks), tuple(int(m) for m in map_at)
    if any(k < 1 for k in ks + map_at):
        raise ValueError(f"ks and map_at must be positive integers, got ks={ks}, map_at={map_at}")

    q = _check_feats(query_feats, "query_feats")
    g = _check_feats(gallery_feats, "gallery_feats")
    ql, gl = _labels_np(query_labels, "query_labels"), _labels_np(gallery_labels, "gallery_labels")
    if len(ql) != q.shape[0]:
        raise ValueError(f"query_labels has {len(ql)} entries but query_feats has {q.shape[0]} rows")
    if len(gl) != g.shape[0]:
        raise ValueError(f"gallery_labels has {len(gl)} entries but gallery_feats has {g.shape[0]} rows")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    dev = _resolve_device(device, q, g)

    # labels -> contiguous ids over the union
    try:
        uniq, inv = np.unique(np.concatenate([ql, gl]), return_inverse=True)
    except TypeError as e:
        raise ValueError(f"labels must be comparable (all numbers or all strings): {e}") from e
    qid, gid = inv[: len(ql)].astype(np.int64), inv[len(ql) :].astype(np.int64)
    npos_class = np.bincount(gid, minlength=len(uniq))
    missing = np.unique(qid[npos_class[qid] == 0])
    keep = np.ones(len(qid), dtype=bool)
    if len(missing):
        names = [str(uniq[m]) for m in missing[:10]]
        msg = (
            f"{len(missing)} query class(es) have no item in the gallery (e.g. {names}); their AP is "
            "undefined"
        )
        if on_missing == "error":
            raise ValueError(
                msg + ". Check that query and gallery use the same label ids, or pass "
                "on_missing='zero' / 'skip'."
            )
        warnings.warn(msg + (": scored 0." if on_missing == "zero" else ": left out."), stacklevel=2)
        if on_missing == "skip":
            keep = npos_class[qid] > 0
            if not keep.any():
                raise ValueError(
                    "on_missing='skip': no query has a positive in the gallery; nothing to evaluate"
                )

    # features -> what is ranked
    if codes == "itq":
        if normalize:
            q = _l2(q.to(dev, torch.float64), "query_feats")
            g = _l2(g.to(dev, torch.float64), "gallery_feats")
        if isinstance(itq_fit_on, str):
            if itq_fit_on not in ("query", "gallery", "both"):
                raise ValueError(
                    f"itq_fit_on must be 'query', 'gallery', 'both' or an array, got {itq_fit_on!r}"
                )
            fit = {"query": q, "gallery": g}.get(itq_fit_on)
            fit = torch.cat([q.to(dev), g.to(dev)]) if fit is None else fit
        else:
            fit = _check_feats(itq_fit_on, "itq_fit_on")
            if normalize:
                fit = _l2(fit.to(dev, torch.float64), "itq_fit_on")
        model = itq_fit(fit, itq_bits, itq_iters, itq_seed, variant=itq_variant, device=dev)
        center = "self" if itq_center == "each" else "fit"
        q = model.encode(q.to(dev), center=center).float()
        g = model.encode(g.to(dev), center=center).float()
        distance = "hamming"
    elif normalize and distance != "hamming":
        q, g = _l2(q.to(dev, dtype), "query_feats"), _l2(g.to(dev, dtype), "gallery_feats")

    q, g = q.to(dev), g.to(dev)
    qp, gp, gterm, sdtype = _prepare(q, g, distance, dtype)
    n_q, n_g = qp.shape[0], gp.shape[0]
    gid_t = torch.as_tensor(gid, device=dev, dtype=torch.int32)
    qid_t = torch.as_tensor(qid, device=dev, dtype=torch.int32)
    npos_t = torch.as_tensor(npos_class, device=dev, dtype=torch.int64)

    chunk = int(max(1, min(n_q, memory_budget_mb * 2**20 // (_BYTES_PER_CELL * n_g))))
    n_chunks = math.ceil(n_q / chunk)
    if progress is None:
        progress = n_q * n_g > 5e7
    ap_all = torch.zeros(n_q, dtype=torch.float64, device=dev)
    ap_at = {m: torch.zeros(n_q, dtype=torch.float64, device=dev) for m in map_at}
    p_at = {k: torch.zeros(n_q, dtype=torch.float64, device=dev) for k in ks}

    for c in tqdm(range(n_chunks), desc="evaluate_retrieval", unit="chunk", disable=not progress):
        sl = slice(c * chunk, min(n_q, (c + 1) * chunk))
        qc = qid_t[sl].long()
        npos = npos_t[qc]  # [B] positives of each query's class
        width = max(1, int(npos.max()))
        keys = _order_keys(_chunk_scores(qp[sl], gp, gterm, distance))
        # (sorting only the positives and placing the negatives by binary search is no faster on the CPU)
        rank0 = _positive_ranks_sorted(keys, gid_t, qid_t[sl], width)
        del keys
        valid = rank0 < n_g
        jj = torch.arange(1, width + 1, device=dev, dtype=torch.float64)[None, :]
        prec = torch.where(valid, jj / (rank0.clamp(max=n_g) + 1).double(), 0.0)
        nposf = npos.double()
        safe = nposf.clamp(min=1)
        ap_all[sl] = (_rev_cummax(prec) if interpolated else prec).sum(1) / safe
        for m in map_at:
            pm = torch.where(rank0 < m, prec, 0.0)
            ap_at[m][sl] = (_rev_cummax(pm) if interpolated else pm).sum(1) / nposf.clamp(max=m).clamp(min=1)
        for k in ks:
            if p_at_k_over == "gallery":
                p_at[k][sl] = (rank0 < k).sum(1).double() / min(k, n_g)
            else:
                lim = npos.clamp(max=k)
                p_at[k][sl] = (rank0 < lim[:, None]).sum(1).double() / lim.clamp(min=1).double()
        del prec, rank0, valid

    # average
    keep_t = torch.as_tensor(keep, device=dev)
    cls_of = qid_t.long()

    def _avg(v: torch.Tensor) -> float:
        v, cl = v[keep_t], cls_of[keep_t]
        if average == "query":
            return float(v.mean())
        sums = torch.zeros(len(uniq), dtype=torch.float64, device=dev).index_add_(0, cl, v)
        cnt = torch.bincount(cl, minlength=len(uniq))
        present = cnt > 0
        return float((sums[present] / cnt[present]).mean())

    out: dict[str, Any] = {"mAP@all": _avg(ap_all)}
    for k in ks:
        out[f"P@{k}"] = _avg(p_at[k])
    for m in map_at:
        out[f"mAP@{m}"] = _avg(ap_at[m])
    out["n_queries"], out["n_gallery"] = int(keep.sum()), n_g
    if per_query:

        def _np(v: torch.Tensor) -> np.ndarray:
            a = v.cpu().numpy().copy()
            a[~keep] = np.nan
            return a

        out["AP_per_query"] = _np(ap_all)
        for m in map_at:
            out[f"AP@{m}_per_query"] = _np(ap_at[m])
        for k in ks:
            out[f"P@{k}_per_query"] = _np(p_at[k])
        qcls = np.unique(qid[keep])
        aq = out["AP_per_query"]
        out["classes"] = uniq[qcls]
        out["mAP_per_class"] = np.array([aq[(qid == c) & keep].mean() for c in qcls])
    return out
