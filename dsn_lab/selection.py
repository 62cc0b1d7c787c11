"""Model selection: which epoch's weights become ``best.pt``. Three rules, picked by ``cfg.selection_rule()``.

- ``"map"`` (default, :class:`MapSelector`): retrieval mAP@all on held-out seen data (``val_mAP@all``).
- the paired rules (``"released"``, ``"accuracy"``; :class:`PairedSelector`): the released
  ``tool.validate_paired``, ITQ mAP of held-out sketch/photo pairs (``val_paired_map``) and the class
  accuracy on them (``val_acc``).
- ``"last"`` (:class:`LastEpoch`): no validation, the last epoch is kept (released TU-Berlin).

:func:`make_selector` builds the rule's selector from the training data; for the paired rules it also
decides which training sketches are held out. Every selector embeds through :func:`dsn_lab.inference.encode`
(eval mode, fp32 unless ``cfg.eval_amp``) and is called as ``selector(model, device) -> dict`` with its
``epoch`` attribute set to the epoch just trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from dsn_lab.config import DSNConfig, SelectionRule
from dsn_lab.data import get_dataset
from dsn_lab.data.transforms import eval_transform
from dsn_lab.inference import encode, image_loader
from dsn_lab.metrics import evaluate_retrieval


class Selector(Protocol):
    name: str  # the history column the rule maximises ("" for none)
    desc: str  # one line for the start-of-run message
    epoch: int

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...


def training_sets(cfg: DSNConfig, root: Path | None, verbose: bool) -> dict[str, Any]:
    """The training sets: ``{"sketch", "photo", "root", "classes"}``, the ``data`` :func:`make_selector`
    takes (sketch and photo splits must list the same classes)."""
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


def has_split(cfg: DSNConfig, root: Path | None, split: str, domain: str) -> bool:
    """Whether ``cfg.dataset`` has ``split``/``domain`` under ``root`` (nothing is downloaded or built)."""
    try:
        get_dataset(cfg.dataset, root, split=split, domain=domain, check="none", verbose=False, build=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def heldout_sketches(cfg: DSNConfig, data: dict[str, Any], verbose: bool) -> tuple[Any, Any]:
    """(held-out seen-class sketches, remaining training sketches) for the paired (released) rule.

    Real datasets: the "test" split (held-out sketches of the seen classes, as released). Otherwise a
    seeded ``val_fraction`` of each class's training sketches (classes with one sketch keep it).
    """
    root = data["root"]
    if has_split(cfg, root, "test", "sketch"):
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


def paired_sets(cfg: DSNConfig, data: dict[str, Any], verbose: bool) -> tuple[Any, Any, Any, bool]:
    """(held-out sketches, photos to pair them with, training sketches, whether class accuracy means anything)
    for the paired rules. A dataset with held-out *concepts* and one sketch per concept (EmojiSketch: the
    "val" split) pairs val sketches with val photos: the released score (paired ITQ mAP) is defined there,
    the classifier's accuracy is not (those concepts have no logit), so it is not reported."""
    root = data["root"]
    single_sketch = len({label for _, label in data["sketch"].samples}) == len(data["sketch"].samples)
    held_concepts = has_split(cfg, root, "val", "sketch") and not has_split(cfg, root, "test", "sketch")
    if single_sketch and held_concepts:
        val_sk, val_ph = (
            get_dataset(cfg.dataset, root, split="val", domain=d, verbose=verbose)
            for d in ("sketch", "photo")
        )
        return val_sk, val_ph, data["sketch"], False
    heldout, train_sketches = heldout_sketches(cfg, data, verbose)
    return heldout, data["photo"], train_sketches, True


class MapSelector:
    """Retrieval mAP (DSN evaluation defaults) on held-out seen data.

    EmojiSketch (and any dataset with a "val" split): the held-out training concepts, val sketches vs val
    photos. Real datasets: the held-out seen-class sketches ("test" split) against a seeded sample of
    ``val_fraction`` of the seen-class training photos (the release pairs the same two sets).
    """

    name = "val_mAP@all"
    epoch = 0

    def __init__(self, cfg: DSNConfig, data: dict[str, Any], verbose: bool) -> None:
        root = data["root"]
        self.cfg = cfg
        if has_split(cfg, root, "val", "sketch") and has_split(cfg, root, "val", "photo"):
            self.query = get_dataset(cfg.dataset, root, split="val", domain="sketch", verbose=verbose)
            self.gallery = get_dataset(cfg.dataset, root, split="val", domain="photo", verbose=verbose)
            self.desc = f"{len(self.query.classes)} held-out training concepts ('val' split)"
        elif has_split(cfg, root, "test", "sketch"):
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

    def _embed(self, model: nn.Module, dataset: Any, domain: int, device: torch.device) -> Any:
        cfg = self.cfg
        batches = image_loader(
            dataset,
            transform=eval_transform(cfg.image_size),
            batch_size=max(cfg.sketches_per_batch + cfg.photos_per_batch, 16),
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
        )
        return encode(model, batches, domain=domain, device=device, amp=cfg.eval_amp, normalize=True)

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        q, ql = self._embed(model, self.query, 0, device)
        g, gl = self._embed(model, self.gallery, 1, device)
        res = evaluate_retrieval(q, ql, g, gl, on_missing="skip")
        return {f"val_{k}": float(v) for k, v in res.items() if k.startswith(("mAP", "P@"))}


class PairedSelector:
    """The released ``tool.validate_paired``: ``val_batches`` batches of (held-out sketch, photo) pairs.

    Each training photo (seeded order) is paired with a random held-out sketch of its class; a batch holds
    ``(sketches_per_batch + photos_per_batch) // 2`` pairs (released: 96 // 2). ``rule.redraw_pairs``
    (released: a shuffled loader and ``np.random.choice`` per item) draws new pairs every epoch, seeded by
    (seed, epoch); otherwise the pairs are fixed. Reports the classification accuracy of sketches and photos
    (``val_acc``) and, as the released function returns, the mAP of ITQ binary codes (``rule.itq_variant``;
    fitted on the sketches, each set centred by its own mean: ``compressITQ``) of the L2-normalised hashing
    codes, sketches vs photos (``val_paired_map``). fp32 unless ``eval_amp``. The released function feeds
    each pair batch as one forward; in eval mode every row's output is independent of the batch, so the
    sketches and the photos of the pairs are embedded as two passes.
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

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        pairs = self.pairs(self.epoch)
        tf = eval_transform(self.cfg.image_size)
        out: dict[str, dict[str, np.ndarray]] = {}
        labels: dict[str, np.ndarray] = {}
        for name, dataset, idx, flag in (
            ("sketch", self.heldout, [i for i, _ in pairs], 0),
            ("photo", self.photos, [j for _, j in pairs], 1),
        ):
            batches = image_loader(dataset.subset(idx), transform=tf, batch_size=self.batch)
            out[name], labels[name] = encode(
                model,
                batches,
                domain=flag,
                device=device,
                amp=self.cfg.eval_amp,
                output=("code", "logits"),
                normalize=("code",),
            )
        lab = labels["sketch"]  # a pair's photo has its sketch's class
        res = evaluate_retrieval(
            out["sketch"]["code"],
            lab,
            out["photo"]["code"],
            lab,
            codes="itq",
            itq_variant=self.rule.itq_variant,
        )
        scores = {"val_paired_map": float(res["mAP@all"])}
        if self.classify:
            hits = sum(int((out[k]["logits"].argmax(1) == labels[k]).sum()) for k in out)
            scores["val_acc"] = hits / max(2 * len(pairs), 1)
        return scores


class LastEpoch:
    """selection="last": no validation; every epoch replaces best.pt, so the last one is kept."""

    name = "last_epoch"
    desc = "the last epoch (no validation)"
    epoch = 0

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {}


def make_selector(cfg: DSNConfig, data: dict[str, Any], verbose: bool = False) -> tuple[Selector, Any]:
    """(the selector of ``cfg.selection_rule()``, the sketches to train on).

    ``data``: the training sets, ``{"sketch", "photo", "root", "classes"}``. The paired rules may hold out
    part of the training sketches (see :func:`paired_sets`); the other rules train on all of them.
    """
    rule = cfg.selection_rule()
    if rule.metric == "val_mAP@all":
        return MapSelector(cfg, data, verbose), data["sketch"]
    if rule.metric:
        heldout, photos, train_sketches, classify = paired_sets(cfg, data, verbose)
        return PairedSelector(cfg, heldout, photos, rule, classify=classify), train_sketches
    return LastEpoch(), data["sketch"]
