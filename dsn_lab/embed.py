"""Feature extraction (eval mode, batched, optional AMP) with an on-disk cache.

Why a cache: a gallery of 17,101 Sketchy photos takes minutes to embed on a GPU and much longer on a CPU;
notebooks, ``python -m dsn_lab evaluate`` and the retrieval widget all need the same arrays. The cache key is
a hash of everything that decides the result -- the weights (a state-dict hash, or a checkpoint hash the
caller passes as ``model_key``), the dataset (name, split, root, the sample list with each file's size and
modification time), the transform, the domain flag, the output kind, normalisation and AMP -- so a stale
entry (weights changed, images replaced, another transform) is never used: it simply has another key.
Each entry also stores its key and row count, and is checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import nn
from torch.utils.data import Dataset

from dsn_lab._atomic import atomic_path
from dsn_lab.checkpoint import load_trained_model
from dsn_lab.data import default_root, get_dataset
from dsn_lab.data.emojisketch import IMAGE_SIZE
from dsn_lab.data.transforms import eval_transform
from dsn_lab.inference import encode, image_loader, unwrap
from dsn_lab.metrics import evaluate_retrieval
from dsn_lab.model import build_backbone, domain_column
from dsn_lab.provenance import environment_record, read_environment

OUTPUTS = ("code", "features", "logits")
CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------------
def frozen_feature_cache(dataset: str, backbone_name: str, model: nn.Module) -> dict[str, Any]:
    """``cache_dir`` and ``model_key`` for :func:`extract_features` of an untrained model's pooled ImageNet
    features: the package's feature cache beside the dataset's default folder, keyed by the backbone's name
    and weights (the head does not change the pooled feature). The demo and the benchmarks share entries."""
    return {
        "cache_dir": default_root(dataset).parent / "features",
        "model_key": f"frozen-{backbone_name}-{state_dict_hash(model.backbone)}",
    }


def state_dict_hash(model: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes), hex, 24 characters.

    Cost: one pass over the weights (about 0.1 s for a ResNet-50 on a CPU). Weights on a GPU are copied to
    the host for hashing.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def file_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex, 24 characters): the cache key of a checkpoint file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:24]


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset's content: name, split, domain, root, size and a hash of its samples.

    The sample hash covers each listed file's relative path, label, size and mtime (a ``stat`` per file,
    about 0.3 s for 75,000 files), so replaced images invalidate the cache.
    """
    base = dataset
    indices = None
    while isinstance(base, torch.utils.data.Subset):
        indices = list(base.indices) if indices is None else [base.indices[i] for i in indices]
        base = base.dataset
    samples = list(getattr(base, "samples", []))
    if indices is not None and samples:
        samples = [samples[i] for i in indices]
    root = getattr(base, "root", None)
    h = hashlib.sha256()
    for rel, label in samples:
        entry = f"{rel}|{label}"
        if root is not None:
            try:
                st = os.stat(Path(root) / rel)
                entry += f"|{st.st_size}|{st.st_mtime_ns}"
            except OSError:
                entry += "|missing"
        h.update(entry.encode() + b"\n")
    if not samples:
        h.update(f"len={len(dataset)}|{type(base).__name__}|{id(base)}".encode())
    return {
        "name": str(getattr(base, "name", type(base).__name__)),
        "split": str(getattr(base, "split", "")),
        "domain": str(getattr(base, "domain", "")),
        "root": str(Path(root).resolve()) if root is not None else "",
        "size": len(dataset),
        "samples": h.hexdigest()[:24],
    }


def _transform_repr(transform: Any) -> str:
    return " ".join(repr(transform).split())


# ---------------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------------
def _domain_flag(domain: int | str | None, dataset: Any) -> int:
    if domain is None:
        base = dataset
        while isinstance(base, torch.utils.data.Subset):
            base = base.dataset
        if not hasattr(base, "domain_id"):
            raise ValueError("extract_features: pass domain=0 (sketch) or 1 (photo) for this dataset.")
        return int(base.domain_id)
    if isinstance(domain, str):
        if domain not in ("sketch", "photo"):
            raise ValueError(f"extract_features: domain must be 'sketch', 'photo', 0 or 1, got {domain!r}.")
        return 0 if domain == "sketch" else 1
    if int(domain) not in (0, 1):
        raise ValueError(f"extract_features: domain must be 0 (sketch) or 1 (photo), got {domain!r}.")
    return int(domain)


def compute_features(
    model: nn.Module,
    dataset: Dataset,
    *,
    domain: int,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: bool | torch.dtype = False,
    output: str = "code",
    normalize: bool = True,
    num_workers: int = 0,
    transform: Callable | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``dataset`` with no cache: ``(feats float32 [N, D], labels int64 [N])``, in dataset order.

    The loop is :func:`dsn_lab.inference.encode` (eval mode for the pass, the previous mode restored after;
    ``amp``: the package's AMP policy, or an explicit autocast dtype).
    """
    if output not in OUTPUTS:
        raise ValueError(f"extract_features: output must be one of {OUTPUTS}, got {output!r}.")
    net = unwrap(model)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    loader = image_loader(
        dataset,
        transform=transform,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    return encode(
        net,
        loader,
        domain=domain,
        device=dev,
        amp=amp,
        output=output,
        normalize=normalize,
        progress=progress,
        desc=f"embed {getattr(dataset, 'split', '')}/{domain}",
    )


def cache_key(
    model_key: str,
    fingerprint: dict[str, Any],
    *,
    domain: int,
    output: str,
    normalize: bool,
    amp: bool,
    transform: str,
) -> str:
    """Hex key (24 characters) of one cache entry; see the module docstring for what goes in."""
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "model": model_key,
            "data": fingerprint,
            "domain": domain,
            "output": output,
            "normalize": normalize,
            "amp": bool(amp),
            "transform": transform,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cache_path(cache_dir: Path, fingerprint: dict[str, Any], domain: int, key: str) -> Path:
    safe = "".join(
        c if c.isalnum() or c in "-_" else "_" for c in f"{fingerprint['name']}_{fingerprint['split']}"
    )
    return cache_dir / f"{safe}_d{domain}_{key}.npz"


def _read_entry(path: Path, key: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key or z["feats"].shape[0] != n or z["labels"].shape[0] != n:
                return None
            return z["feats"].astype(np.float32), z["labels"].astype(np.int64)
    except Exception:  # noqa: BLE001 - truncated zip, bad header, missing key: recompute and overwrite
        return None


def _write_entry(path: Path, key: str, feats: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> None:
    with atomic_path(path, prefix=f".{path.stem}-", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=np.array(key), feats=feats, labels=labels, meta=np.array(json.dumps(meta)))


def extract_features(
    model: nn.Module,
    dataset: Dataset,
    *,
    domain: int | str | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    output: str = "code",
    normalize: bool = True,
    transform: Callable | None = None,
    image_size: int | None = None,
    model_key: str | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every image of ``dataset``: ``(feats float32 [N, D], labels int64 [N])``, in dataset order.

    ``output``: "code" (the hashing layer, what DSN retrieves with; default), "features" (pooled backbone
    feature) or "logits". ``normalize=True`` L2-normalises each row, as the released test script does before
    Euclidean ranking. ``domain``: 0 / "sketch" or 1 / "photo" (the CSE flag); default: the dataset's own.
    Images: a dataset built with ``transform=None`` gets ``transform`` or, failing that,
    ``dsn_lab.data.transforms.eval_transform(image_size)`` (``image_size`` required then); a dataset with its
    own transform is used as is. ``cache_dir``: where entries live (None: no cache). ``model_key``
    identifies the weights (e.g. :func:`file_hash` of a checkpoint); default: :func:`state_dict_hash`.
    """
    flag = _domain_flag(domain, dataset)
    if transform is None and getattr(dataset, "transform", None) is None and image_size is not None:
        transform = eval_transform(image_size)
    if transform is None and getattr(dataset, "transform", None) is None and hasattr(dataset, "load_image"):
        raise ValueError(
            "extract_features: the dataset has no transform; pass image_size= (the eval transform at that "
            "size is used) or transform=."
        )
    kwargs = dict(
        domain=flag,
        batch_size=batch_size,
        device=device,
        amp=amp,
        output=output,
        normalize=normalize,
        num_workers=num_workers,
        transform=transform,
        progress=progress,
    )
    if cache_dir is None:
        return compute_features(model, dataset, **kwargs)
    fingerprint = dataset_fingerprint(dataset)
    tr = _transform_repr(transform if transform is not None else getattr(dataset, "transform", None))
    key = cache_key(
        model_key or state_dict_hash(unwrap(model)),
        fingerprint,
        domain=flag,
        output=output,
        normalize=normalize,
        amp=amp,
        transform=tr,
    )
    cache = Path(cache_dir).expanduser()
    path = _cache_path(cache, fingerprint, flag, key)
    hit = _read_entry(path, key, len(dataset)) if path.is_file() else None
    if hit is not None:
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        hit = _read_entry(path, key, len(dataset)) if path.is_file() else None  # another process wrote it
        if hit is not None:
            return hit
        feats, labels = compute_features(model, dataset, **kwargs)
        meta = {
            "fingerprint": fingerprint,
            "domain": flag,
            "output": output,
            "normalize": normalize,
            "transform": tr,
            "model_key": model_key or "state_dict",
        }
        _write_entry(path, key, feats, labels, meta)
    return feats, labels


def cache_entries(cache_dir: str | os.PathLike[str]) -> list[Path]:
    """The cache files in ``cache_dir`` (for inspection and cleaning)."""
    folder = Path(cache_dir).expanduser()
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------------
# evaluating a checkpoint on the unseen classes
# ---------------------------------------------------------------------------------------------------
#: Published zero-shot numbers (DESIGN.md, Fidelity note 6): mAP@all / P@100 on the unseen classes.
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "sketchy-s1": {
        "SAKE (paper)": {"mAP@all": 0.547, "P@100": 0.692},
        "DSN (paper)": {"mAP@all": 0.583, "P@100": 0.704},
    },
    "tuberlin": {
        "SAKE (paper)": {"mAP@all": 0.475, "P@100": 0.599},
        "DSN (paper)": {"mAP@all": 0.484, "P@100": 0.591},
    },
}
METRIC_COLUMNS = ("mAP@all", "P@100", "mAP@200", "P@200")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    split: str = "zero",
    device: str | torch.device | None = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    binary: bool = True,
    progress: bool = True,
    amp: bool = False,
    features: bool = False,
) -> dict[str, Any]:
    """Zero-shot retrieval of a trained checkpoint: sketches of ``split`` query the photos of ``split``.

    The one "load a checkpoint, embed a split, score it" of the package: ``python -m dsn_lab evaluate``, the
    demo and the notebooks call it (after :func:`dsn_lab.train.train` when they train first).

    Features are computed in fp32, as released. ``amp=True`` (opt-in) embeds under CUDA autocast (bf16, else
    fp16; no effect on the CPU): faster, at a small cost in mAP. Measured on the demo checkpoint
    (``python benchmarks/bench_eval_amp.py runs/emoji-demo/best.pt``, bf16 autocast on the 2-core CPU, since
    no GPU was available): mAP@all 0.3275 -> 0.3261 (-0.0015), mAP@200 -0.0014, P@100 -0.0003; a GPU run of
    the same command gives the CUDA figure. The binary row uses the checkpoint config's ITQ variant
    (``cfg.quirk("itq_variant")``: "released" for faithful runs, else Gong's), recorded as ``"itq_variant"``.

    Returns ``{"checkpoint", "dataset", "split", "hashing_dim", "n_queries", "n_gallery", "real": metrics,
    "binary": metrics (ITQ codes; absent with binary=False), "paper": PAPER_RESULTS row,
    "environment": the training session's environment record (None for older runs), "eval_environment":
    this process's}``. Features are cached in ``cache_dir`` keyed by the checkpoint file's hash (None: no
    cache). ``progress``: the datasets' count lines and the embedding progress bars. ``features=True`` adds
    ``"features": (query codes, query labels, gallery codes, gallery labels)`` (numpy arrays, L2-normalised,
    what was scored: for a domain-gap measure or a figure; not JSON, so drop it before writing the dict).
    """
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    model, cfg, ckpt = load_trained_model(checkpoint, dev)
    root = data_root if data_root is not None else cfg.data_root
    root_path = Path(root).expanduser() if root is not None else None
    query = get_dataset(cfg.dataset, root_path, split=split, domain="sketch", verbose=progress)
    gallery = get_dataset(
        cfg.dataset,
        root_path if root_path is not None else query.root,
        split=split,
        domain="photo",
        verbose=progress,
    )
    key = file_hash(checkpoint) if cache_dir is not None else None
    kw = dict(
        batch_size=batch_size,
        device=dev,
        amp=amp,
        cache_dir=cache_dir,
        image_size=cfg.image_size,
        model_key=key,
        num_workers=num_workers,
        progress=progress,
    )
    q, ql = extract_features(model, query, domain=0, **kw)
    g, gl = extract_features(model, gallery, domain=1, **kw)
    out: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "dataset": cfg.dataset,
        "split": split,
        "backbone": cfg.backbone,
        "hashing_dim": cfg.hashing_dim,
        "epoch": ckpt.get("position", {}).get("epoch"),
        "n_queries": int(len(ql)),
        "n_gallery": int(len(gl)),
    }
    real = evaluate_retrieval(q, ql, g, gl)
    out["real"] = {k: float(real[k]) for k in METRIC_COLUMNS if k in real}
    if binary:
        variant = cfg.quirk("itq_variant")
        bin_res = evaluate_retrieval(q, ql, g, gl, codes="itq", itq_variant=variant)
        out["itq_variant"] = variant
        out["binary"] = {k: float(bin_res[k]) for k in METRIC_COLUMNS if k in bin_res}
    out["paper"] = PAPER_RESULTS.get(cfg.dataset, {})
    out["environment"] = _training_environment(Path(checkpoint), ckpt)
    out["eval_environment"] = environment_record()
    if features:
        out["features"] = (q, ql, g, gl)
    return out


def evaluate_frozen_backbone(
    root: str | os.PathLike[str] | None,
    *,
    dataset: str = "emojisketch",
    backbone: str = "efficientnet_lite0",
    split: str = "zero",
    image_size: int = IMAGE_SIZE,
    batch_size: int = 64,
    max_per_split: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Zero-shot retrieval with frozen ImageNet pooled features (no training): the floor any training beats.

    Sketches of ``split`` query its photos through ``backbone``'s ImageNet trunk (EfficientNet-Lite0 by
    default; its FiLM layer is the identity, so the domain flag has no effect); mAP@all is VOC AP averaged
    per class (:func:`dsn_lab.metrics.evaluate_retrieval`). Cosine ranking (= Euclidean on L2-normalised
    features) is the headline; raw-feature Euclidean and a random ranking (chance level, 10 draws) are
    given for reference. ``max_per_split``: at most that many sketches and photos (a smoke test).

    Returns ``{"mAP@all (cosine)", "mAP@200 (cosine)", "P@100 (cosine)", "P@200 (cosine)", the same four
    "(euclidean, raw features)", "mAP@all (random ranking)", "classes", "queries", "gallery"}``.
    """
    trunk = build_backbone(backbone, pretrained=True)[0].to(device).eval()

    def pooled(images: torch.Tensor, domain: int) -> torch.Tensor:  # the trunk takes the flag as a column
        return trunk(images, domain_column(domain, images.shape[0], images))

    feats = {}
    for domain, flag in (("sketch", 0), ("photo", 1)):
        ds: Dataset = get_dataset(dataset, root, split=split, domain=domain, verbose=False)
        if max_per_split is not None:
            ds = torch.utils.data.Subset(ds, range(min(max_per_split, len(ds))))
        loader = image_loader(ds, transform=eval_transform(image_size), batch_size=batch_size)
        feats[domain] = encode(pooled, loader, domain=flag, device=device, output=None, progress=progress)
    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    keys = ("mAP@all", "mAP@200", "P@100", "P@200")
    res: dict[str, float] = {}
    for dist, label in (("cosine", "cosine"), ("euclidean", "euclidean, raw features")):
        r = evaluate_retrieval(q, ql, g, gl, distance=dist)
        res.update({f"{k} ({label})": float(r[k]) for k in keys})
    rng = np.random.default_rng(0)
    res["mAP@all (random ranking)"] = float(
        np.mean(
            [
                evaluate_retrieval(
                    rng.standard_normal((len(ql), 8)), ql, rng.standard_normal((len(gl), 8)), gl
                )["mAP@all"]
                for _ in range(10)
            ]
        )
    )
    res["classes"], res["queries"], res["gallery"] = float(len(np.unique(ql))), float(len(ql)), float(len(gl))
    return res


def _training_environment(checkpoint: Path, ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The environment record of the session that wrote ``checkpoint``: from the checkpoint itself (newer
    runs), else the run folder's environment.json; None for runs made before either existed."""
    raw = ckpt.get("environment")
    if raw:
        try:
            rec = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            rec = None
        if isinstance(rec, dict) and rec:
            return rec
    return read_environment(checkpoint.parent)


def format_results_table(result: dict[str, Any]) -> str:
    """A plain-text table in the paper's layout: published rows, then this run's real and binary rows."""
    cols = METRIC_COLUMNS
    head = f"{'method':<34}" + "".join(f"{c:>9}" for c in cols)
    lines = [
        f"{result['dataset']} -- unseen classes ({result['split']} split): {result['n_queries']:,} sketch "
        f"queries, {result['n_gallery']:,} photos",
        head,
        "-" * len(head),
    ]

    def row(name: str, vals: dict[str, float]) -> str:
        return f"{name:<34}" + "".join(f"{vals[c]:>9.3f}" if c in vals else f"{'-':>9}" for c in cols)

    for name, vals in result.get("paper", {}).items():
        lines.append(row(name, vals))
    dim = result.get("hashing_dim")
    lines.append(row(f"this run, real-valued ({dim}-d)", result["real"]))
    if "binary" in result:
        released = result.get("itq_variant") == "released"  # the released ITQ rotation (vh @ u.T)
        lines.append(
            row(f"this run, binary ITQ ({dim} bits{', released' if released else ''})", result["binary"])
        )
    if not result.get("paper"):
        lines.append("(no published numbers for this dataset/split: an extension)")
    return "\n".join(lines)
