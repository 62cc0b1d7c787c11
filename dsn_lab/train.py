"""The DSN training loop: plain PyTorch, resumable, AMP, gradient accumulation, DDP.

One step, as in the released ``src/train_cse_resnet_sketchy_ext.py``: a paired batch of S sketches and P
photos, each with two augmented views, goes through the model in **one** forward pass
``[sketch, photo, sketch_v1, photo_v1, sketch_v2, photo_v2]`` with the domain flags (0 sketch, 1 photo).
CE and the SAKE distillation use the un-augmented images (the KD target comes from the frozen ImageNet
teacher and the WordNet ``cid_mask`` row of each label); SupCon uses the L2-normalised hashing codes of the
augmented views; the sketch memory bank is updated with the un-augmented pooled features and gives the
memory term (flushed every epoch). The step is :func:`dsn_lab.step.dsn_step` (public form
:func:`dsn_lab.step.dsn_losses`); this module adds the optimiser, accumulation, DDP, checkpoints and logs.
Every quirk of the released code is a config field (``cfg.quirks()``); ``faithful=True`` turns them all on.

Differences from the release, each on purpose: the two loaders are seeded per (seed, epoch, position)
instead of shuffled by global RNG (so a resumed run sees the same batches); the in-batch ``randperm``
shuffle is dropped (the order inside a batch changes no loss); model selection is by retrieval mAP on
held-out seen data unless ``selection`` asks for the released rule.

Checkpoints (``<output_dir>/last.pt`` every epoch and every ``checkpoint_every`` optimiser steps,
``best.pt`` at the best validation score) hold only tensors and plain containers, so they load with
``torch.load(weights_only=True)``: model, optimiser, GradScaler, schedule position, memory bank, RNG states
(torch, CUDA, numpy, python), data position (epoch and batch within it), the config as JSON and the
history. Resuming from ``last.pt`` reproduces an uninterrupted run (bit for bit in deterministic CPU mode).

Under ``torchrun --nproc-per-node N`` the same :func:`train` uses DistributedDataParallel: the config's
batch sizes are the *global* batch, each rank takes a contiguous slice of it, the memory bank is updated
with features gathered from all ranks (so every rank holds the same bank), SupCon is computed on the
gathered codes of the whole batch, and logged values are averaged over ranks.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsn_lab._atomic import atomic_write_bytes
from dsn_lab.config import SELECTIONS as _CONFIG_SELECTIONS
from dsn_lab.config import DSNConfig, SelectionRule

CHECKPOINT_FORMAT = "dsn_lab.checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
CONFIG_JSON = "config.json"
SELECTIONS = _CONFIG_SELECTIONS
#: Fields that may differ between a checkpoint and the config that resumes it (they change no result).
RESUME_IGNORED_FIELDS = (
    "output_dir",
    "data_root",
    "num_workers",
    "log_every",
    "checkpoint_every",
    "max_train_seconds",
    "notes",
    "preset",
)
#: Testing hook (fault injection, used by the reliability tests): "TERM@BATCH" makes loss term TERM NaN at
#: the BATCH-th training batch of the run (counted from 1 over all epochs), e.g. "contrastive@3".
FAULT_ENV = "DSN_LAB_FAULT_NAN"

Callback = Callable[[nn.Module, int, int], dict]


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; training stopped and the last good checkpoint was kept."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not ours, or from another config."""


@dataclass
class TrainResult:
    """What :func:`train` returns. ``history`` is the list of rows also written to history.json/.csv."""

    output_dir: Path
    final_checkpoint: Path
    best_checkpoint: Path | None
    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    selection: str
    stopped: str = "completed"  # "completed" | "time budget"
    planned_steps: int = 0  # optimiser steps the config asks for (epochs x steps per epoch)
    num_classes: int = 0
    classes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------------------------------
def _say(msg: str, verbose: bool = True) -> None:
    if not verbose:
        return
    try:
        from tqdm.auto import tqdm

        tqdm.write(msg)
    except Exception:  # noqa: BLE001 - printing must never fail a run
        print(msg, flush=True)


def _fmt_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, suffix="")


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------
def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` atomically (temp file in the same folder, fsync, ``os.replace``).

    A process killed mid-write leaves the previous file intact (and at worst a ``.last.pt.tmp-*`` file,
    removed on the next start).
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    _atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a dsn_lab checkpoint safely (``weights_only=True``), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} not found. Fix: pass the path of a last.pt / best.pt written by "
            "dsn_lab.train (its output_dir)."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"Cannot load checkpoint {path}: it is empty (0 bytes): truncated or corrupted, e.g. by an "
            "interrupted copy. Fix: use another checkpoint (best.pt, or an earlier copy), or delete it and "
            "train again."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            why = (
                "it contains Python objects other than tensors and plain containers, so it was refused "
                "(dsn_lab loads with weights_only=True and never runs code from a checkpoint)"
            )
        else:
            first_line = (text.splitlines() or ["no message"])[0][:200]
            why = f"it is truncated or corrupted ({type(exc).__name__}: {first_line})"
        raise CheckpointError(
            f"Cannot load checkpoint {path}: {why}. Fix: use another checkpoint (best.pt, or an earlier "
            "copy), "
            "or delete it and train again."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a dsn_lab checkpoint (no 'format': {CHECKPOINT_FORMAT!r} entry). Fix: pass a "
            "last.pt / best.pt written by dsn_lab.train; released DSN checkpoints need converting first."
        )
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer dsn_lab (checkpoint version {ckpt.get('version')}, this one "
            "reads "
            f"{CHECKPOINT_VERSION}). Fix: upgrade dsn_lab."
        )
    return ckpt


def checkpoint_config(ckpt: dict[str, Any]) -> DSNConfig:
    """The :class:`DSNConfig` stored in a checkpoint."""
    return DSNConfig.from_dict(json.loads(ckpt["config"]))


def check_resume_config(cfg: DSNConfig, saved: DSNConfig, path: Path) -> None:
    """Raise :class:`CheckpointError` naming every field that differs (except the harmless ones)."""
    diff = cfg.diff(saved, ignore=RESUME_IGNORED_FIELDS)
    if diff:
        lines = "\n".join(f"  {k}: this run {a!r}, checkpoint {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(
            f"Checkpoint {path} was written with another config; differing fields:\n{lines}\n"
            "Fix: resume with the checkpoint's settings (e.g. --set "
            + " ".join(f"{k}={json.dumps(b)}" for k, (_, b) in sorted(diff.items()))
            + "), or use another output_dir to start a new run."
        )


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": list(py_state[1]), "gauss": py_state[2]},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _set_determinism(deterministic: bool, device: torch.device, cudnn: str = "auto") -> None:
    """``deterministic=True`` wins (bit-reproducible; benchmark off). Otherwise on CUDA: ``cudnn="released"``
    sets ``cudnn.deterministic = True`` and then ``cudnn.benchmark = True``, as the released script does
    (module level, then ``main``); ``"auto"``: benchmark only."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        if cudnn == "released":
            torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = True


# ---------------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str | torch.device | None) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def _gather(x: torch.Tensor, d: _Dist) -> torch.Tensor:
    """Concatenate equal-sized tensors from all ranks in rank order (no gradient)."""
    if not d.enabled:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _gather_keep_local(x: torch.Tensor, d: _Dist) -> torch.Tensor:
    """All ranks' rows in rank order, this rank's rows still attached to the graph."""
    if not d.enabled:
        return x
    parts = list(_gather(x.detach(), d).chunk(d.world))
    parts[d.rank] = x
    return torch.cat(parts)


def _mean_over_ranks(values: dict[str, float], d: _Dist, device: torch.device) -> dict[str, float]:
    if not d.enabled or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.tolist())}


def _any_over_ranks(flag: bool, d: _Dist, device: torch.device) -> bool:
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _broadcast_float(value: float, d: _Dist, device: torch.device) -> float:
    if not d.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def _slice_batch(batch: dict[str, Any], d: _Dist) -> dict[str, Any]:
    """This rank's contiguous share of a global paired batch."""
    if not d.enabled:
        return batch

    def part(t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0] // d.world
        return t[d.rank * n : (d.rank + 1) * n]

    return {k: [part(v) for v in val] if isinstance(val, list) else part(val) for k, val in batch.items()}


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
def _has_split(cfg: DSNConfig, root: Path | None, split: str, domain: str) -> bool:
    from dsn_lab.data import get_dataset

    try:
        get_dataset(cfg.dataset, root, split=split, domain=domain, check="none", verbose=False, build=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def _datasets(cfg: DSNConfig, root: Path | None, verbose: bool) -> dict[str, Any]:
    from dsn_lab.data import get_dataset

    sk = get_dataset(cfg.dataset, root, split="train", domain="sketch", verbose=verbose)
    ph = get_dataset(
        cfg.dataset, root if root is not None else sk.root, split="train", domain="photo", verbose=verbose
    )
    if list(sk.classes) != list(ph.classes):
        raise ValueError(
            f"{cfg.dataset}: the sketch and photo training splits list different classes "
            f"({len(sk.classes)} vs {len(ph.classes)}); the split files under {sk.root} disagree."
        )
    return {"sketch": sk, "photo": ph, "root": Path(sk.root), "classes": list(sk.classes)}


def _heldout_sketches(cfg: DSNConfig, data: dict[str, Any], verbose: bool) -> tuple[Any, Any]:
    """(held-out seen-class sketches, remaining training sketches) for the paired (released) rule.

    Real datasets: the "test" split (held-out sketches of the seen classes, as released). Otherwise a
    seeded ``val_fraction`` of each class's training sketches (classes with one sketch keep it).
    """
    from dsn_lab.data import get_dataset

    root = data["root"]
    if _has_split(cfg, root, "test", "sketch"):
        test = get_dataset(cfg.dataset, root, split="test", domain="sketch", verbose=verbose)
        if list(test.classes) == data["classes"]:
            return test, data["sketch"]
    sk = data["sketch"]
    rng = np.random.default_rng([cfg.seed, 7])
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(sk.samples):
        by_class.setdefault(label, []).append(i)
    held, kept = [], []
    for _label, idx in sorted(by_class.items()):
        idx = list(rng.permutation(idx))
        k = int(round(len(idx) * cfg.val_fraction)) if len(idx) > 1 else 0
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        held += idx[:k]
        kept += idx[k:]
    if not held:
        raise ValueError(
            f"selection={cfg.quirk('selection')!r} needs held-out sketches of the training classes, but "
            f"{cfg.dataset} has no 'test' split and no class has more than one training sketch. "
            "Fix: use selection='map' (retrieval mAP on the held-out 'val' concepts)."
        )
    return sk.subset(sorted(held)), sk.subset(sorted(kept))


def _paired_sets(cfg: DSNConfig, data: dict[str, Any], verbose: bool) -> tuple[Any, Any, Any, bool]:
    """(held-out sketches, photos to pair them with, training sketches, whether class accuracy means anything)
    for the paired rules. A dataset with held-out *concepts* and one sketch per concept (EmojiSketch: the
    "val" split) pairs val sketches with val photos: the released score (paired ITQ mAP) is defined there,
    the classifier's accuracy is not (those concepts have no logit), so it is not reported."""
    from dsn_lab.data import get_dataset

    root = data["root"]
    single_sketch = len({label for _, label in data["sketch"].samples}) == len(data["sketch"].samples)
    held_concepts = _has_split(cfg, root, "val", "sketch") and not _has_split(cfg, root, "test", "sketch")
    if single_sketch and held_concepts:
        val_sk, val_ph = (
            get_dataset(cfg.dataset, root, split="val", domain=d, verbose=verbose)
            for d in ("sketch", "photo")
        )
        return val_sk, val_ph, data["sketch"], False
    heldout, train_sketches = _heldout_sketches(cfg, data, verbose)
    return heldout, data["photo"], train_sketches, True


# ---------------------------------------------------------------------------------------------------
# model selection
# ---------------------------------------------------------------------------------------------------
class _MapSelector:
    """Retrieval mAP (DSN evaluation defaults) on held-out seen data.

    EmojiSketch (and any dataset with a "val" split): the held-out training concepts, val sketches vs val
    photos. Real datasets: the held-out seen-class sketches ("test" split) against a seeded sample of
    ``val_fraction`` of the seen-class training photos (the release pairs the same two sets).
    """

    name = "val_mAP@all"

    def __init__(self, cfg: DSNConfig, data: dict[str, Any], verbose: bool) -> None:
        from dsn_lab.data import get_dataset

        root = data["root"]
        self.cfg = cfg
        if _has_split(cfg, root, "val", "sketch") and _has_split(cfg, root, "val", "photo"):
            self.query = get_dataset(cfg.dataset, root, split="val", domain="sketch", verbose=verbose)
            self.gallery = get_dataset(cfg.dataset, root, split="val", domain="photo", verbose=verbose)
            self.desc = f"{len(self.query.classes)} held-out training concepts ('val' split)"
        elif _has_split(cfg, root, "test", "sketch"):
            self.query = get_dataset(cfg.dataset, root, split="test", domain="sketch", verbose=verbose)
            photos = data["photo"]
            n = max(1, int(round(len(photos) * cfg.val_fraction)))
            idx = np.sort(np.random.default_rng([cfg.seed, 11]).permutation(len(photos))[:n])
            self.gallery = photos.subset(idx.tolist())
            self.desc = (
                f"held-out seen-class sketches ('test' split) vs {n:,} seen photos "
                f"({cfg.val_fraction:.0%} sample)"
            )
        else:
            raise ValueError(
                f"selection='map' needs held-out seen data: {cfg.dataset} under {root} has neither a 'val' "
                "split nor a 'test' sketch split. Fix: use selection='accuracy'."
            )

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from dsn_lab.embed import extract_features
        from dsn_lab.metrics import evaluate_retrieval

        bs = max(self.cfg.sketches_per_batch + self.cfg.photos_per_batch, 16)
        kw = dict(
            batch_size=bs,
            device=device,
            amp=self.cfg.eval_amp,
            image_size=self.cfg.image_size,
            num_workers=self.cfg.num_workers,
        )
        q, ql = extract_features(model, self.query, domain=0, **kw)
        g, gl = extract_features(model, self.gallery, domain=1, **kw)
        res = evaluate_retrieval(q, ql, g, gl, on_missing="skip")
        return {f"val_{k}": float(v) for k, v in res.items() if k.startswith(("mAP", "P@"))}


class _PairedSelector:
    """The released ``tool.validate_paired``: ``val_batches`` batches of (held-out sketch, photo) pairs.

    Each training photo (seeded order) is paired with a random held-out sketch of its class; a batch holds
    ``(sketches_per_batch + photos_per_batch) // 2`` pairs (released: 96 // 2). ``rule.redraw_pairs``
    (released: a shuffled loader and ``np.random.choice`` per item) draws new pairs every epoch, seeded by
    (seed, epoch); otherwise the pairs are fixed. Reports the classification accuracy of sketches and photos
    (``val_acc``) and, as the released function returns, the mAP of ITQ binary codes (``rule.itq_variant``;
    fitted on the sketches, each set centred by its own mean: ``compressITQ``) of the L2-normalised hashing
    codes, sketches vs photos (``val_paired_map``). fp32 unless ``eval_amp``.
    """

    def __init__(
        self, cfg: DSNConfig, heldout: Any, photos: Any, rule: SelectionRule, classify: bool = True
    ) -> None:
        self.cfg, self.rule, self.classify = cfg, rule, classify
        self.name = rule.metric
        self.heldout, self.photos = heldout, photos
        self.epoch = 0
        self.sk_by_class: dict[int, list[int]] = {}
        for i, (_, label) in enumerate(heldout.samples):
            self.sk_by_class.setdefault(label, []).append(i)
        self.batch = max(1, (cfg.sketches_per_batch + cfg.photos_per_batch) // 2)
        pairs = self.pairs(0)
        if not pairs:
            raise ValueError("selection: no training photo has a held-out sketch of its class.")
        self.desc = (
            f"{cfg.selection_rule()}: {len(pairs):,} held-out sketch/photo pairs ({cfg.val_batches} batches "
            f"max{', redrawn each epoch' if rule.redraw_pairs else ''}), {rule.itq_variant} ITQ"
        )

    def pairs(self, epoch: int) -> list[tuple[int, int]]:
        """(held-out sketch index, photo index) pairs of ``epoch``."""
        seed = [self.cfg.seed, 13, epoch] if self.rule.redraw_pairs else [self.cfg.seed, 13]
        rng = np.random.default_rng(seed)
        limit = self.batch * self.cfg.val_batches
        pairs: list[tuple[int, int]] = []
        for j in rng.permutation(len(self.photos)):
            label = self.photos.samples[j][1]
            if label in self.sk_by_class:
                pairs.append((int(rng.choice(self.sk_by_class[label])), int(j)))
            if len(pairs) >= limit:
                break
        return pairs

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from dsn_lab.data.transforms import eval_transform
        from dsn_lab.embed import unwrap
        from dsn_lab.metrics import evaluate_retrieval

        net = unwrap(model)
        tf = eval_transform(self.cfg.image_size)
        pairs = self.pairs(self.epoch)
        correct, total = 0, 0
        s_codes, p_codes, labels = [], [], []
        amp_dtype = (
            torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
        )
        use_amp = bool(self.cfg.eval_amp) and device.type == "cuda"
        for start in range(0, len(pairs), self.batch):
            chunk = pairs[start : start + self.batch]
            s_img, s_lab = zip(*(self.heldout.load_image(i) for i, _ in chunk))
            p_img, p_lab = zip(*(self.photos.load_image(j) for _, j in chunk))
            x = torch.stack([tf(im) for im in s_img + p_img]).to(device)
            dom = torch.cat([torch.zeros(len(chunk)), torch.ones(len(chunk))]).to(device)[:, None]
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                out = net(x, dom)
            y = torch.tensor(list(s_lab) + list(p_lab), device=device)
            correct += int((out[0].argmax(1) == y).sum().item())
            total += len(y)
            code = F.normalize(out[2].float(), dim=1).cpu()
            s_codes.append(code[: len(chunk)])
            p_codes.append(code[len(chunk) :])
            labels.append(torch.tensor(s_lab))
        sk, ph, lab = torch.cat(s_codes).numpy(), torch.cat(p_codes).numpy(), torch.cat(labels).numpy()
        res = evaluate_retrieval(sk, lab, ph, lab, codes="itq", itq_variant=self.rule.itq_variant)
        out = {"val_paired_map": float(res["mAP@all"])}
        if self.classify:
            out["val_acc"] = correct / max(total, 1)
        return out


class _LastEpoch:
    """selection="last": no validation; every epoch replaces best.pt, so the last one is kept."""

    name = "last_epoch"
    desc = "the last epoch (no validation)"

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {}


# ---------------------------------------------------------------------------------------------------
# optimisation
# ---------------------------------------------------------------------------------------------------
def _param_groups(model: nn.Module, cfg: DSNConfig) -> list[dict[str, Any]]:
    """Backbone and head parameter groups; the backbone's lr is ``lr * backbone_lr_mult``.

    The backbone is the model's ``backbone`` attribute when it has one, else parameters whose names start
    with "backbone."/"features."/"original_model."; everything else (hashing layer, classifier, KD head)
    is the head.
    """
    mult = float(getattr(cfg, "backbone_lr_mult", 1.0))
    body = getattr(model, "backbone", None)
    body_ids = {id(p) for p in body.parameters()} if isinstance(body, nn.Module) else set()
    backbone, head = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_body = id(p) in body_ids or (
            not body_ids and name.split(".")[0] in ("backbone", "features", "original_model")
        )
        (backbone if is_body else head).append(p)
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * mult, "lr_mult": mult, "name": "backbone"})
    if head:
        groups.append({"params": head, "lr": cfg.lr, "lr_mult": 1.0, "name": "head"})
    return groups


def _make_optimizer(model: nn.Module, cfg: DSNConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}: use 'adam' (paper), 'adamw' or 'sgd'.")


def lr_factor(
    cfg: DSNConfig, epoch: int, opt_step: int, total_steps: int, elapsed: float | None = None
) -> float:
    """Multiplier of the base lr.

    "exp" (released): ``lr_decay ** (epoch / epochs)``, constant within an epoch. "cosine": half a cosine
    over the run's optimiser steps; with ``max_train_seconds`` set (and ``lr_follows_time``, the default),
    progress is the larger of the step and the time fraction, so the schedule ends when the time budget
    does. "constant": 1.
    """
    if cfg.lr_schedule == "exp":
        return float(cfg.lr_decay ** (epoch / max(cfg.epochs, 1)))
    if cfg.lr_schedule == "cosine":
        progress = opt_step / max(total_steps, 1)
        if cfg.max_train_seconds and cfg.lr_follows_time and elapsed is not None:
            progress = max(progress, elapsed / cfg.max_train_seconds)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.lr_schedule == "constant":
        return 1.0
    raise ValueError(
        f"Unknown lr_schedule {cfg.lr_schedule!r}: use 'exp' (released), 'cosine' or 'constant'."
    )


def _amp_setup(cfg: DSNConfig, device: torch.device) -> tuple[bool, torch.dtype | None, bool]:
    """(autocast on, dtype, use GradScaler): bf16 where supported, else fp16 + GradScaler; off on the CPU."""
    if not cfg.amp or device.type != "cuda":
        return False, None, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


# ---------------------------------------------------------------------------------------------------
# history
# ---------------------------------------------------------------------------------------------------
def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    _atomic_write_text(out / HISTORY_JSON, json.dumps(history, indent=1, default=float))
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    _atomic_write_text(out / HISTORY_CSV, buf.getvalue())


def load_history(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The history rows of a run folder (history.json)."""
    return json.loads((Path(output_dir) / HISTORY_JSON).read_text())


def _fault_injection() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return None
    term, _, at = spec.partition("@")
    return term, int(at or 1)


# ---------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------
def train(
    cfg: DSNConfig,
    *,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> TrainResult:
    """Train DSN as configured by ``cfg``; returns a :class:`TrainResult`.

    ``resume=True`` continues from ``<output_dir>/last.pt`` when it exists (else starts afresh); a
    checkpoint from another config raises :class:`CheckpointError` naming the differing fields. Without
    ``resume``, an output_dir that already holds a run raises unless ``overwrite=True``. ``callbacks``
    (``callback(model, epoch, step) -> dict``) run at each epoch end in eval mode, their results go into
    the history. ``data_root`` overrides ``cfg.data_root``; ``device`` defaults to CUDA when available.
    A NaN/Inf loss raises :class:`TrainingDivergedError` naming the term; ``last.pt`` stays the last
    good checkpoint.
    """
    d = _init_distributed(device)
    try:
        return _Trainer(cfg, callbacks, resume, data_root, device, overwrite, verbose, d).run()
    finally:
        if d.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()


class _Trainer:
    def __init__(
        self,
        cfg: DSNConfig,
        callbacks: Sequence[Callback],
        resume: bool,
        data_root: str | os.PathLike[str] | None,
        device: str | torch.device | None,
        overwrite: bool,
        verbose: bool,
        d: _Dist,
    ) -> None:
        self.rule = cfg.selection_rule()  # raises on an unknown selection, naming the choices
        if d.enabled and cfg.contrastive_dim is not None:
            raise ValueError(
                "contrastive_dim (the SupCon projection head) is not supported under DDP yet: the head runs "
                "outside the wrapped forward. Fix: contrastive_dim=None (released), or train on one process."
            )
        if cfg.grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {cfg.grad_accum_steps}.")
        self.cfg, self.callbacks, self.d = cfg, list(callbacks), d
        self.verbose = verbose and d.main
        if device is None:
            device = f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        root = data_root if data_root is not None else cfg.data_root
        self.data_root = Path(root).expanduser() if root is not None else None
        self.out = Path(cfg.output_dir)
        self.last_path, self.best_path = self.out / LAST_NAME, self.out / BEST_NAME
        self.resume_ckpt: dict[str, Any] | None = None
        if resume and self.last_path.is_file():
            self.resume_ckpt = load_checkpoint(self.last_path)
            check_resume_config(cfg, checkpoint_config(self.resume_ckpt), self.last_path)
        elif resume:
            _say(f"resume: no checkpoint at {self.last_path}; starting a new run", self.verbose)
        elif self.last_path.is_file() and not overwrite:
            raise FileExistsError(
                f"{self.out} already holds a run ({self.last_path}). Fix: pass resume=True (--resume) to "
                "continue it, overwrite=True (--overwrite) to start again, or set another output_dir."
            )
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.tmp-*"):  # leftovers of a write killed mid-way
                with contextlib.suppress(OSError):
                    stale.unlink()

    # ---- setup ------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, dev = self.cfg, self.device
        _seed_all(cfg.seed)
        _set_determinism(cfg.deterministic, dev, cfg.quirk("cudnn"))
        from dsn_lab.data.batching import paired_loader_from_config
        from dsn_lab.memory import SketchMemory
        from dsn_lab.model import build_model, build_teacher

        self.data = _datasets(cfg, self.data_root, self.verbose)
        self.classes = self.data["classes"]
        self.num_classes = len(self.classes)
        train_sketches = self.data["sketch"]
        if self.rule.metric == "val_mAP@all":
            self.selector: Any = _MapSelector(cfg, self.data, self.verbose)
        elif self.rule.metric:
            heldout, photos, train_sketches, classify = _paired_sets(cfg, self.data, self.verbose)
            self.selector = _PairedSelector(cfg, heldout, photos, self.rule, classify=classify)
        else:
            self.selector = _LastEpoch()
        if self.d.enabled and (cfg.sketches_per_batch % self.d.world or cfg.photos_per_batch % self.d.world):
            raise ValueError(
                f"DDP with {self.d.world} processes: sketches_per_batch ({cfg.sketches_per_batch}) and "
                f"photos_per_batch ({cfg.photos_per_batch}) are the global batch and must divide evenly. "
                "Fix: --set sketches_per_batch=... photos_per_batch=... or another process count."
            )
        from dsn_lab.data.transforms import affine_from_config

        self.loader = paired_loader_from_config(
            cfg, train_sketches, self.data["photo"], seed=cfg.seed, base_affine=affine_from_config(cfg)
        )

        model = build_model(cfg, self.num_classes).to(dev)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.teacher = None
        use_kd = cfg.use_kd and cfg.w_kd != 0 and cfg.teacher
        if use_kd:
            self.teacher = build_teacher(cfg)
            if self.teacher is None:
                _say(
                    f"no ImageNet teacher for backbone {cfg.backbone!r} (pretrained={cfg.pretrained}): "
                    "the KD term is off for this run",
                    self.verbose,
                )
                use_kd = False
            else:
                self.teacher = self.teacher.to(dev).eval()
                if cfg.channels_last:
                    self.teacher = self.teacher.to(memory_format=torch.channels_last)
                for p in self.teacher.parameters():
                    p.requires_grad_(False)
        self.cid = None
        if use_kd and cfg.kdneg != 0:
            from dsn_lab.semantics import cid_mask_for

            try:
                table = cid_mask_for(cfg.dataset, self.classes, faithful=cfg.faithful)
            except Exception as exc:  # noqa: BLE001 - re-raised with the fix
                raise RuntimeError(
                    "The KD term needs the WordNet class/ImageNet similarity (cid_mask), which failed: "
                    f"{exc}\n"
                    "Or train without it: set kdneg=0 (plain distillation) or use_kd=False."
                ) from exc
            self.cid = torch.as_tensor(table, dtype=torch.float32, device=dev)
        self.use_kd = use_kd
        self.memory = None
        if cfg.use_memory:
            self.memory = SketchMemory(
                self.num_classes,
                cfg.memory_slots,
                model.feature_dim,
                faithful=cfg.quirk("memory_row_overwrite"),
                detach_loss=not cfg.quirk("memory_grad"),
            ).to(dev)
        self.hooks = self._step_hooks()
        self.optimizer = _make_optimizer(model, cfg)
        self.amp_on, self.amp_dtype, use_scaler = _amp_setup(cfg, dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.net: nn.Module = model
        if self.d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            unused = not (use_kd and cfg.use_contrastive)
            self.net = DDP(
                model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=unused
            )

    # ---- run records ------------------------------------------------------------------------------
    def _record_run(self, resumed: bool) -> None:
        """config.json and environment.json in the run folder (the environment also goes into checkpoints)."""
        from dsn_lab.provenance import environment_record, write_environment

        self.environment = environment_record() if self.d.main else {}
        if self.d.main:
            _atomic_write_text(self.out / CONFIG_JSON, self.cfg.to_json())
            self.environment = write_environment(self.out, self.environment, resumed=resumed)

    def _step_hooks(self) -> Any:
        """How DDP joins :func:`dsn_lab.step.dsn_step` (identity on one process)."""
        from dsn_lab.step import StepHooks

        d = self.d
        if not d.enabled:
            return StepHooks()

        def memory_weight(loss: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
            # a mean over this rank's photos whose class is in the bank; reweight so that the average over
            # ranks is the mean over all such photos of the global batch
            import torch.distributed as dist

            local = (self.memory.fill.index_select(0, lp) > 0).sum().to(loss.dtype)
            everywhere = local.detach().clone()
            dist.all_reduce(everywhere)
            return loss * local * d.world / everywhere.clamp(min=1.0)

        return StepHooks(
            gather=lambda t: _gather(t, d),
            gather_keep_local=lambda t: _gather_keep_local(t, d),
            memory_weight=memory_weight,
        )

    # ---- checkpoint payload -----------------------------------------------------------------------
    def _payload(self, epoch: int, batch: int, finished: bool) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_json(),
            "backbone": self.cfg.backbone,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "memory": self.memory.state_dict() if self.memory is not None else {},
            "rng": _rng_state(),
            "position": {
                "epoch": int(epoch),
                "batch": int(batch),
                "opt_step": int(self.opt_step),
                "batches_seen": int(self.batches_seen),
                "elapsed": float(self.elapsed()),
                "finished": finished,
            },
            "best": {"metric": self.best_metric, "epoch": self.best_epoch, "name": self.selector.name},
            "history": json.dumps(self.history, default=float),
            "stopped": self.stopped,
            "environment": json.dumps(getattr(self, "environment", {})),
        }

    def _save(self, epoch: int, batch: int, *, finished: bool = False, best: bool = False) -> None:
        if not self.d.main:
            return
        payload = self._payload(epoch, batch, finished)
        save_checkpoint(payload, self.last_path)
        if best:
            save_checkpoint(payload, self.best_path)
        _write_history(self.out, self.history)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.memory is not None and ckpt.get("memory"):
            self.memory.load_state_dict(ckpt["memory"])
        pos = ckpt["position"]
        self.start_epoch, self.start_batch = int(pos["epoch"]), int(pos["batch"])
        self.opt_step, self.batches_seen = int(pos["opt_step"]), int(pos["batches_seen"])
        self.elapsed_before = float(pos["elapsed"])
        self.best_metric, self.best_epoch = ckpt["best"]["metric"], ckpt["best"]["epoch"]
        self.history = json.loads(ckpt["history"])
        _say(
            f"resumed from {self.last_path}: epoch {self.start_epoch + 1}, batch {self.start_batch}, "
            f"optimiser step {self.opt_step}",
            self.verbose,
        )

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t0)

    # ---- one step ---------------------------------------------------------------------------------
    def _step_losses(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], float]:
        """(loss to back-propagate, total to log, unweighted terms, accuracy) of one micro-batch.

        The step itself is :func:`dsn_lab.step.dsn_step`; DDP joins it through ``self.hooks``.
        """
        from dsn_lab.step import dsn_step

        cfg = self.cfg
        res = dsn_step(
            self.net,
            _slice_batch(batch, self.d),
            cfg.replace(use_kd=self.use_kd),
            teacher=self.teacher,
            memory=self.memory,
            cid_mask=self.cid,
            autocast_dtype=self.amp_dtype if self.amp_on else None,
            hooks=self.hooks,
        )
        logits, labels = res.logits, res.labels
        terms = dict(res.terms)
        logged = res.total
        fault = self.fault
        if fault is not None and fault[1] == self.batches_seen + 1 and fault[0] in terms:
            terms[fault[0]] = terms[fault[0]] * float("nan")
            logged = logged + terms[fault[0]]
        total = logged
        if self.d.enabled and "contrastive" in terms:
            # gradient flows only through this rank's rows; DDP averages over ranks, so scale by the world
            # size to get the gradient of the whole-batch SupCon (the value logged stays unscaled)
            total = total + (self.d.world - 1) * cfg.w_contrastive * terms["contrastive"]
        acc = float((logits.argmax(1) == labels).float().mean().item())
        return total, logged, terms, acc

    # ---- validation -------------------------------------------------------------------------------
    def _validate(self, epoch: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        value = float("nan")
        if self.d.main:
            self.model.eval()
            t = time.perf_counter()
            self.selector.epoch = epoch  # paired rules that redraw their pairs draw this epoch's
            try:
                row.update(self.selector(self.model, self.device))
                for cb in self.callbacks:
                    row.update({k: v for k, v in (cb(self.model, epoch, self.opt_step) or {}).items()})
            finally:
                self.model.train()
            row["eval_seconds"] = time.perf_counter() - t
            value = float(row.get(self.selector.name, float("nan")))
        if self.d.enabled:
            import torch.distributed as dist

            dist.barrier()
        value = _broadcast_float(value, self.d, self.device)
        if self.rule.keep == "last":  # released TU-Berlin: model_best.pth.tar is written every epoch
            self.best_metric, self.best_epoch = (value if math.isfinite(value) else None), epoch
            return {**row, "is_best": True}
        is_best = math.isfinite(value) and (self.best_metric is None or value > self.best_metric)
        if is_best:
            self.best_metric, self.best_epoch = value, epoch
        return {**row, "is_best": is_best}

    # ---- run --------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.cfg
        self._build()
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.start_epoch = self.start_batch = self.opt_step = self.batches_seen = 0
        self.elapsed_before = 0.0
        self.stopped = "completed"
        self.fault = _fault_injection()
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
            self.stopped = str(self.resume_ckpt.get("stopped", "completed"))
            if self.resume_ckpt["position"].get("finished") and self.stopped == "completed":
                return self._result()
        self.stopped = "completed"
        if cfg.max_train_seconds and self.elapsed_before >= cfg.max_train_seconds:
            _say(
                f"resume: the time budget max_train_seconds={cfg.max_train_seconds:.0f} is already spent "
                f"({self.elapsed_before:.0f}s); raise it to train on",
                self.verbose,
            )
            self.stopped = "time budget"
            return self._result()
        self._record_run(resumed=self.resume_ckpt is not None)
        rng_to_restore = self.resume_ckpt["rng"] if self.resume_ckpt is not None else None
        self.resume_ckpt = None
        steps = len(self.loader)
        accum = cfg.grad_accum_steps
        steps_per_epoch_opt = math.ceil(steps / accum)
        total_opt = steps_per_epoch_opt * cfg.epochs
        self.t0 = time.perf_counter()
        _say(
            f"training {cfg.backbone} on {cfg.dataset}: {self.num_classes} classes, {cfg.epochs} epochs x "
            f"{steps} batches ({cfg.sketches_per_batch} sketches + {cfg.photos_per_batch} photos"
            f"{f', accumulated x{accum}' if accum > 1 else ''}), device {self.device}"
            f"{f' x{self.d.world} ranks' if self.d.enabled else ''}, AMP "
            f"{self.amp_dtype if self.amp_on else 'off'}; KD {'on' if self.use_kd else 'off'}; "
            f"selection: {self.selector.desc}; output {self.out}",
            self.verbose,
        )
        first_log_done = self.batches_seen > 0
        stop = False
        for epoch in range(self.start_epoch, cfg.epochs):
            if stop:
                break
            self.loader.set_epoch(epoch)
            start_batch = self.start_batch if epoch == self.start_epoch else 0
            if start_batch >= steps:
                start_batch = steps
            if start_batch == 0 and self.memory is not None and cfg.memory_flush == "epoch":
                self.memory.flush()
            self.net.train()
            iterator = iter(self.loader)
            for _ in range(start_batch):  # data position of a resumed run: same batches, same order
                next(iterator)
            if rng_to_restore is not None:
                _set_rng_state(rng_to_restore)
                rng_to_restore = None
            bar = None
            if self.verbose:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=steps,
                    initial=start_batch,
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    leave=False,
                    dynamic_ncols=True,
                    disable=None,  # no bar in a log or a pipe (its redraws would read as lines there)
                )
            sums: dict[str, float] = {}
            count = 0
            t_log = time.perf_counter()
            b = start_batch
            self.optimizer.zero_grad(set_to_none=True)
            try:
                for b in range(start_batch, steps):
                    batch = next(iterator)
                    boundary = (b + 1) % accum == 0 or b == steps - 1
                    factor = lr_factor(cfg, epoch, self.opt_step, total_opt, self.elapsed())
                    for g in self.optimizer.param_groups:
                        g["lr"] = cfg.lr * g.get("lr_mult", 1.0) * factor
                    sync = (
                        self.net.no_sync() if (self.d.enabled and not boundary) else contextlib.nullcontext()
                    )
                    with sync:
                        total, logged, terms, acc = self._step_losses(batch)
                        values = {k: float(v.detach().item()) for k, v in terms.items()}
                        values["total"] = float(logged.detach().item())
                        bad = [k for k, v in values.items() if not math.isfinite(v)]
                        if bad and len(bad) > 1:
                            bad = [k for k in bad if k != "total"]
                        if _any_over_ranks(bool(bad), self.d, self.device):
                            self._diverged(epoch, b, bad, values)
                        self.scaler.scale(total / accum).backward()
                    self.batches_seen += 1
                    values["acc"] = acc
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    if boundary:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                        self.optimizer.zero_grad(set_to_none=True)
                        self.opt_step += 1
                    if bar is not None:
                        bar.update(1)
                    last = b == steps - 1
                    if boundary and (count >= cfg.log_every or last or not first_log_done):
                        row = self._log_row(epoch, b, sums, count, time.perf_counter() - t_log)
                        if not first_log_done:
                            first_log_done = True
                            self._first_log(row, epoch, b, steps, total_opt)
                        if bar is not None:
                            bar.set_postfix(
                                {k: f"{row[k]:.3f}" for k in ("loss", "loss_ce", "acc") if k in row}
                            )
                        sums, count, t_log = {}, 0, time.perf_counter()
                    if (
                        boundary
                        and cfg.checkpoint_every
                        and self.opt_step % cfg.checkpoint_every == 0
                        and not last
                    ):
                        self._save(epoch, b + 1)
                    if boundary and cfg.max_train_seconds:
                        over = self.elapsed() >= cfg.max_train_seconds
                        if _any_over_ranks(over, self.d, self.device):
                            stop = True
                            self.stopped = "time budget"
                            break
            finally:
                if bar is not None:
                    bar.close()
            if count:
                self._log_row(epoch, b, sums, count, time.perf_counter() - t_log)
            # epoch end (or the time budget): validate, record, checkpoint
            done_batches = b + 1 if stop else steps
            row = {
                "kind": "epoch",
                "epoch": epoch + (done_batches / steps),
                "step": self.opt_step,
                "elapsed": self.elapsed(),
            }
            val = self._validate(epoch + 1)
            is_best = val.pop("is_best")
            row.update(val)
            row["best"] = self.best_metric
            self.history.append(row)
            metric = row.get(self.selector.name)
            _say(
                f"epoch {epoch + 1}/{cfg.epochs}"
                + (
                    f" (stopped at batch {done_batches}/{steps}: time budget {cfg.max_train_seconds:.0f}s)"
                    if stop
                    else ""
                )
                + (f": {self.selector.name} {metric:.4f}" if metric is not None else "")
                + (" (best)" if is_best else "")
                + f", elapsed {_fmt_seconds(self.elapsed())}",
                self.verbose,
            )
            if stop:
                _say(
                    f"WARNING: max_train_seconds={cfg.max_train_seconds:g} stopped training at optimiser "
                    f"step {self.opt_step} of {total_opt}: a shorter run than configured, so its numbers are "
                    "not comparable with a complete run. Raise max_train_seconds (or unset it) to train on.",
                    self.verbose,
                )
            finished = not stop and epoch == cfg.epochs - 1
            if stop:
                self._save(epoch, done_batches, best=is_best)
            else:
                self._save(epoch + 1, 0, finished=finished, best=is_best)
        return self._result()

    def _log_row(
        self, epoch: int, b: int, sums: dict[str, float], count: int, seconds: float
    ) -> dict[str, Any]:
        means = _mean_over_ranks({k: v / count for k, v in sums.items()}, self.d, self.device)
        row: dict[str, Any] = {
            "kind": "step",
            "epoch": epoch + (b + 1) / len(self.loader),
            "step": self.opt_step,
            "batch": b + 1,
        }
        row["loss"] = means.pop("total")
        row["acc"] = means.pop("acc")
        for k, v in means.items():
            row[f"loss_{k}"] = v
        for g in self.optimizer.param_groups:
            row["lr" if g.get("name") in ("head", None) else f"lr_{g['name']}"] = g["lr"]
        row["time_per_step"] = seconds / max(count, 1)
        if self.memory is not None:
            row["memory_used"] = self.memory.used_fraction()
        self.history.append(row)
        return row

    def _first_log(self, row: dict[str, Any], epoch: int, b: int, steps: int, total_opt: int) -> None:
        per_step = self.elapsed() / max(self.batches_seen, 1)
        remaining = (self.cfg.epochs * steps) - (epoch * steps + b + 1)
        eta = remaining * per_step
        if self.cfg.max_train_seconds:
            eta = min(eta, max(self.cfg.max_train_seconds - self.elapsed(), 0.0))
        terms = ", ".join(f"{k[5:]} {v:.3f}" for k, v in row.items() if k.startswith("loss_"))
        _say(
            f"first step: {per_step:.2f} s/batch measured ({row['time_per_step']:.2f} s in the last "
            f"{self.cfg.log_every if self.batches_seen > 1 else 1}); ETA {_fmt_seconds(eta)} for "
            f"{remaining} more batches; loss {row['loss']:.3f} ({terms}), acc {row['acc']:.3f}",
            self.verbose,
        )

    def _diverged(self, epoch: int, b: int, bad: list[str], values: dict[str, float]) -> None:
        if self.d.main:
            self.history.append(
                {
                    "kind": "diverged",
                    "epoch": epoch + (b + 1) / len(self.loader),
                    "step": self.opt_step,
                    "batch": b + 1,
                    "terms": ",".join(bad),
                    **{f"loss_{k}": v for k, v in values.items()},
                }
            )
            _write_history(self.out, self.history)
        names = ", ".join(f"'{k}' = {values.get(k, float('nan'))}" for k in bad) or "'total'"
        have = (
            f"the last good checkpoint is {self.last_path}"
            if self.last_path.is_file()
            else "no checkpoint was written yet (set checkpoint_every to write them more often)"
        )
        raise TrainingDivergedError(
            f"Loss term {names} is not finite at epoch {epoch + 1}, batch {b + 1} (optimiser step "
            f"{self.opt_step}); training stopped before that update, and {have}. Fix: lower lr, check the "
            "data of this batch, or turn AMP off (amp=False); resume=True continues from the checkpoint."
        )

    def _result(self) -> TrainResult:
        return TrainResult(
            output_dir=self.out,
            final_checkpoint=self.last_path,
            best_checkpoint=self.best_path if self.best_path.is_file() else None,
            history=self.history,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            selection=self.selector.name,
            stopped=self.stopped,
            planned_steps=math.ceil(len(self.loader) / self.cfg.grad_accum_steps) * self.cfg.epochs,
            num_classes=self.num_classes,
            classes=list(self.classes),
        )


# ---------------------------------------------------------------------------------------------------
# loading a trained model
# ---------------------------------------------------------------------------------------------------
def load_trained_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, DSNConfig, dict[str, Any]]:
    """(model in eval mode, its config, the checkpoint dict) from a dsn_lab checkpoint.

    The model is built without downloading pretrained weights (they are overwritten by the checkpoint).
    """
    from dsn_lab.model import build_model

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg.replace(pretrained=False), int(ckpt["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit a {cfg.backbone} model with {ckpt['num_classes']} classes and "
            f"hashing_dim {cfg.hashing_dim}: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), cfg, ckpt


def iter_history(rows: Sequence[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    """The history rows of one kind ("step", "epoch" or "diverged")."""
    return (r for r in rows if r.get("kind") == kind)
