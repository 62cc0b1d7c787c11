"""Paired sketch/photo batches as in the released DSN training loop, made deterministic.

The released code zips two shuffled DataLoaders (Sketchy: 32 sketches + 64 photos per step; TU-Berlin 9 + 81),
so the shorter loader ends the epoch, and every image comes with two extra augmented views for the
contrastive loss. Here each sample's order and augmentation are derived from (seed, epoch, position), so the
same seed gives the same batches whatever the number of DataLoader workers, and each epoch a new order.

``batch_sampler="class_aligned"`` (not in the released code) makes every step draw S distinct concepts and,
for each, a sketch and P/S photos of the same concept. The released independent sampling almost never puts a
sketch and a photo of one concept in the same batch when there are hundreds of concepts (EmojiSketch: 512),
so the contrastive loss and the memory bank get no cross-domain positives there.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from dsn_lab.data.transforms import ReleasedAffine, augment_transform, eval_transform


def _load(base: Any, index: int) -> tuple[Any, int]:
    """(PIL image, label) from a SketchPhotoDataset, a Subset of one, or a dataset giving (PIL, label, ..)."""
    if isinstance(base, Subset):
        return _load(base.dataset, int(base.indices[index]))
    if hasattr(base, "load_image"):
        return base.load_image(index)
    item = base[index]
    image, label = item[0], int(item[1])
    if isinstance(image, torch.Tensor):
        raise TypeError("PairedLoader needs datasets that return PIL images: build them with transform=None.")
    return image, label


class _ViewDataset(Dataset):
    """Item (index, seed) -> (plain image, [augmented views], label); all randomness from ``seed``."""

    def __init__(
        self, base: Dataset, image_size: int, augment_views: int, base_affine: bool | ReleasedAffine
    ) -> None:
        self.base = base
        self.views = augment_views
        self.plain = eval_transform(image_size)
        self.aug = augment_transform(image_size)
        # base_affine: True (the default ReleasedAffine), False (none) or a ReleasedAffine to use
        self.affine = (
            base_affine
            if isinstance(base_affine, ReleasedAffine)
            else (ReleasedAffine() if base_affine else None)
        )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        index, seed = int(key[0]), int(key[1])
        image, label = _load(self.base, index)
        if self.affine is not None:
            image = self.affine(image, random.Random(seed))
        with torch.random.fork_rng(devices=[]):  # seed the torchvision transforms without touching the caller
            torch.manual_seed(seed)
            views = [self.aug(image) for _ in range(self.views)]
        return self.plain(image), views, label


class _SeededSampler(Sampler):
    """Yields ``steps * batch`` keys (index, seed): concatenated seeded permutations, full batches only."""

    def __init__(self, n: int, batch: int, steps: int, seed: int, stream: int) -> None:
        self.n, self.batch, self.steps, self.seed, self.stream = n, batch, steps, seed, stream
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps * self.batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        total = self.steps * self.batch
        usable = (self.n // self.batch) * self.batch
        order: list[np.ndarray] = []
        count, npass = 0, 0
        while count < total:
            perm = np.random.default_rng([self.seed, self.stream, self.epoch, npass]).permutation(self.n)[
                :usable
            ]
            order.append(perm)
            count += len(perm)
            npass += 1
        indices = np.concatenate(order)[:total]
        seeds = np.random.default_rng([self.seed, self.stream, self.epoch, 2**31 - 1]).integers(
            0, 2**62, total
        )
        return iter([(int(i), int(s)) for i, s in zip(indices, seeds)])


def _labels_of(ds: Any) -> list[int]:
    """Labels of every item without decoding images (``.samples``/``.labels``; a Subset maps its indices)."""
    if isinstance(ds, Subset):
        base = _labels_of(ds.dataset)
        return [base[int(i)] for i in ds.indices]
    if hasattr(ds, "samples"):
        return [int(label) for _, label in ds.samples]
    if hasattr(ds, "labels"):
        return [int(label) for label in ds.labels]
    return [_load(ds, i)[1] for i in range(len(ds))]


class _AlignedPlan:
    """The class-aligned schedule of one epoch: per step, S concepts and their sketch/photo keys.

    Concepts (those with both a sketch and a photo) come from concatenated seeded permutations cut into
    groups of S distinct concepts; each concept gets one sketch and ``P // S`` photos (the first ``P % S``
    concepts one more), drawn without replacement inside the concept when it has enough, else with
    replacement (the augmentation seeds still differ). Everything follows from (seed, epoch, step), so a
    resumed run sees the same batches.
    """

    def __init__(
        self, sketch_labels: list[int], photo_labels: list[int], s: int, p: int, steps: int | None, seed: int
    ) -> None:
        by_s: dict[int, list[int]] = {}
        by_p: dict[int, list[int]] = {}
        for i, c in enumerate(sketch_labels):
            by_s.setdefault(c, []).append(i)
        for i, c in enumerate(photo_labels):
            by_p.setdefault(c, []).append(i)
        self.concepts = np.array(sorted(set(by_s) & set(by_p)), dtype=np.int64)
        if len(self.concepts) < s:
            raise ValueError(
                f"batch_sampler='class_aligned' needs {s} concepts with both a sketch and a photo per batch, "
                f"but only {len(self.concepts)} have both. Lower sketches_per_batch or use 'random'."
            )
        self.by_s = {c: np.array(v) for c, v in by_s.items()}
        self.by_p = {c: np.array(v) for c, v in by_p.items()}
        self.s, self.p, self.seed = s, p, seed
        self.steps = int(steps) if steps else len(self.concepts) // s
        self._cache: tuple[int, tuple[list[tuple[int, int]], list[tuple[int, int]]]] | None = None

    def keys(self, epoch: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(sketch keys, photo keys) of the whole epoch, ``steps * S`` and ``steps * P`` (index, seed)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n, s = len(self.concepts), self.s
        usable = (n // s) * s
        order: list[np.ndarray] = []
        count, npass = 0, 0
        while count < self.steps * s:
            rng = np.random.default_rng([self.seed, 2, epoch, npass])
            order.append(self.concepts[rng.permutation(n)[:usable]])
            count += usable
            npass += 1
        chosen = np.concatenate(order)[: self.steps * s].reshape(self.steps, s)
        per, extra = divmod(self.p, s)
        sk_keys: list[tuple[int, int]] = []
        ph_keys: list[tuple[int, int]] = []
        for step, concepts in enumerate(chosen):
            rng = np.random.default_rng([self.seed, 3, epoch, step])
            for j, c in enumerate(concepts):
                pool_s, pool_p = self.by_s[int(c)], self.by_p[int(c)]
                k = per + (1 if j < extra else 0)
                sk_keys.append((int(rng.choice(pool_s)), int(rng.integers(0, 2**62))))
                picks = rng.choice(pool_p, size=k, replace=len(pool_p) < k) if k else []
                ph_keys.extend((int(i), int(rng.integers(0, 2**62))) for i in picks)
        self._cache = (epoch, (sk_keys, ph_keys))
        return sk_keys, ph_keys


class _AlignedSampler(Sampler):
    """One stream (0 sketches, 1 photos) of an :class:`_AlignedPlan`."""

    def __init__(self, plan: _AlignedPlan, stream: int, batch: int) -> None:
        self.plan, self.stream, self.batch = plan, stream, batch
        self.epoch = 0

    def __len__(self) -> int:
        return self.plan.steps * self.batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.plan.keys(self.epoch)[self.stream])


BATCH_SAMPLERS = ("random", "class_aligned")


class PairedLoader:
    """Each step: S sketches and P photos, each with ``augment_views`` augmented views.

    Iterating yields dicts {"sketch": [S,3,H,W], "sketch_views": [[S,3,H,W]] * views, "sketch_label": Long[S],
    "photo": ..., "photo_views": ..., "photo_label": Long[P]}. ``len()`` is the number of steps per epoch:
    ``steps_per_epoch`` if given (the loaders then cycle), else that of the shorter loader (the released zip).
    ``base_affine=True`` adds the released affine augmentation (p 0.7) before all views, as ``aug=True`` did.
    Call :meth:`set_epoch` before each epoch for a new order; the same seed and epoch give the same batches.

    ``batch_sampler``: "random" (released: sketches and photos drawn independently) or "class_aligned"
    (S distinct concepts per step, each with one sketch and P/S photos of the same concept; an epoch is
    ``concepts // S`` steps unless ``steps_per_epoch`` is given).
    """

    def __init__(
        self,
        sketch_ds: Dataset,
        photo_ds: Dataset,
        sketches_per_batch: int = 32,
        photos_per_batch: int = 64,
        augment_views: int = 2,
        image_size: int = 224,
        num_workers: int = 0,
        seed: int = 0,
        steps_per_epoch: int | None = None,
        *,
        base_affine: bool | ReleasedAffine = True,
        pin_memory: bool | None = None,
        batch_sampler: str = "random",
    ) -> None:
        if sketches_per_batch < 1 or photos_per_batch < 1:
            raise ValueError("sketches_per_batch and photos_per_batch must be >= 1.")
        n_s, n_p = len(sketch_ds), len(photo_ds)
        if n_s < sketches_per_batch or n_p < photos_per_batch:
            raise ValueError(
                f"Too few images for one batch: {n_s} sketches for {sketches_per_batch} per batch, "
                f"{n_p} photos for {photos_per_batch}. Lower the batch sizes."
            )
        if batch_sampler not in BATCH_SAMPLERS:
            raise ValueError(
                f"Unknown batch_sampler {batch_sampler!r}: use one of {', '.join(BATCH_SAMPLERS)}."
            )
        self.batch_sampler = batch_sampler
        self.seed = seed
        plan = None
        if batch_sampler == "class_aligned":
            plan = _AlignedPlan(
                _labels_of(sketch_ds),
                _labels_of(photo_ds),
                sketches_per_batch,
                photos_per_batch,
                steps_per_epoch,
                seed,
            )
            self.steps = plan.steps
        else:
            natural = min(n_s // sketches_per_batch, n_p // photos_per_batch)
            self.steps = int(steps_per_epoch) if steps_per_epoch else natural
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._samplers: list[Any] = []
        self._loaders = []
        for stream, (ds, batch) in enumerate(((sketch_ds, sketches_per_batch), (photo_ds, photos_per_batch))):
            if plan is not None:
                sampler: Any = _AlignedSampler(plan, stream, batch)
            else:
                sampler = _SeededSampler(len(ds), batch, self.steps, seed, stream)
            self._samplers.append(sampler)
            self._loaders.append(
                DataLoader(
                    _ViewDataset(ds, image_size, augment_views, base_affine),
                    batch_size=batch,
                    sampler=sampler,
                    drop_last=True,
                    num_workers=num_workers,
                    pin_memory=pin,
                    persistent_workers=num_workers > 0,
                    generator=torch.Generator().manual_seed(seed + stream),  # leaves the global RNG alone
                )
            )

    def set_epoch(self, epoch: int) -> None:
        for sampler in self._samplers:
            sampler.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for (s, s_views, s_label), (p, p_views, p_label) in zip(*self._loaders):
            yield {
                "sketch": s,
                "sketch_views": list(s_views),
                "sketch_label": s_label.long(),
                "photo": p,
                "photo_views": list(p_views),
                "photo_label": p_label.long(),
            }


def paired_loader_from_config(
    cfg: Any, sketch_ds: Dataset, photo_ds: Dataset, *, seed: int | None = None, **overrides: Any
) -> PairedLoader:
    """A :class:`PairedLoader` with the batch composition, views, size and workers of a ``DSNConfig``."""
    kw = dict(
        sketches_per_batch=cfg.sketches_per_batch,
        photos_per_batch=cfg.photos_per_batch,
        augment_views=cfg.augment_views,
        image_size=cfg.image_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed if seed is None else seed,
        steps_per_epoch=cfg.steps_per_epoch,
        batch_sampler=getattr(cfg, "batch_sampler", "random"),
    )
    kw.update(overrides)
    return PairedLoader(sketch_ds, photo_ds, **kw)
