"""Paired sketch/photo batching: composition, views, determinism, epochs, config wiring."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T

from dsn_lab.config import get_preset
from dsn_lab.data import get_dataset
from dsn_lab.data.batching import PairedLoader, paired_loader_from_config
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, augment_transform, eval_transform


@pytest.fixture
def pair(tmp_path):
    root = make_synthetic_emojisketch(tmp_path / "e", n_train=6, per_class=3, size=32)
    return (
        get_dataset("emojisketch", root, split="train", domain="sketch", verbose=False),
        get_dataset("emojisketch", root, split="train", domain="photo", verbose=False),
    )


def _batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return list(loader)


def _same(a, b):
    return all(
        torch.equal(x[k], y[k])
        for x, y in zip(a, b)
        for k in ("sketch", "photo", "sketch_label", "photo_label")
    ) and all(
        torch.equal(u, v)
        for x, y in zip(a, b)
        for k in ("sketch_views", "photo_views")
        for u, v in zip(x[k], y[k])
    )


def test_batch_composition(pair):
    sketches, photos = pair
    loader = PairedLoader(sketches, photos, 4, 8, augment_views=2, image_size=32, seed=0)
    assert len(loader) == min(18 // 4, 18 // 8) == 2  # the shorter loader ends the epoch (released zip)
    batches = _batches(loader)
    assert len(batches) == 2
    for b in batches:
        assert b["sketch"].shape == (4, 3, 32, 32) and b["photo"].shape == (8, 3, 32, 32)
        assert len(b["sketch_views"]) == 2 and all(v.shape == (4, 3, 32, 32) for v in b["sketch_views"])
        assert len(b["photo_views"]) == 2 and all(v.shape == (8, 3, 32, 32) for v in b["photo_views"])
        assert b["sketch_label"].dtype == torch.long and b["photo_label"].shape == (8,)
        assert not torch.equal(b["photo_views"][0], b["photo"])  # the views are augmented
    # within an epoch, no image repeats (a permutation, full batches only)
    seen = torch.cat([b["photo"].flatten(1) for b in batches])
    assert len({tuple(row.tolist()) for row in seen}) == 16


def test_labels_match_images(pair):
    """Without the released affine step the plain image is exactly eval_transform(image): check its label."""
    sketches, photos = pair
    plain = eval_transform(32)
    loader = PairedLoader(sketches, photos, 4, 8, image_size=32, seed=3, base_affine=False)
    b = _batches(loader)[0]
    refs = torch.stack([plain(photos.load_image(i)[0]) for i in range(len(photos))])
    for img, label in zip(b["photo"], b["photo_label"]):
        hits = [i for i in range(len(photos)) if torch.equal(refs[i], img)]
        assert hits and all(photos.samples[i][1] == int(label) for i in hits)


def test_same_seed_same_batches_new_epoch_new_order(pair):
    sketches, photos = pair
    a = _batches(PairedLoader(sketches, photos, 4, 8, image_size=32, seed=7))
    b = _batches(PairedLoader(sketches, photos, 4, 8, image_size=32, seed=7))
    assert _same(a, b)
    c = _batches(PairedLoader(sketches, photos, 4, 8, image_size=32, seed=7), epoch=1)
    assert not torch.equal(torch.cat([x["photo"] for x in a]), torch.cat([x["photo"] for x in c]))
    d = _batches(PairedLoader(sketches, photos, 4, 8, image_size=32, seed=8))
    assert not _same(a, d)


def test_workers_do_not_change_batches(pair):
    sketches, photos = pair
    a = _batches(PairedLoader(sketches, photos, 4, 8, image_size=32, seed=1, num_workers=0), epoch=2)
    b = _batches(PairedLoader(sketches, photos, 4, 8, image_size=32, seed=1, num_workers=2), epoch=2)
    assert _same(a, b)


def test_global_rng_untouched_and_steps_per_epoch(pair):
    sketches, photos = pair
    state = torch.get_rng_state()
    loader = PairedLoader(sketches, photos, 4, 8, image_size=32, seed=0, steps_per_epoch=5)
    batches = _batches(loader)
    assert torch.equal(state, torch.get_rng_state())
    assert len(loader) == 5 and len(batches) == 5 and all(b["photo"].shape[0] == 8 for b in batches)


def test_too_small_dataset(pair):
    sketches, photos = pair
    with pytest.raises(ValueError, match="Too few images"):
        PairedLoader(sketches, photos, 4, 64, image_size=32)


def test_config_batch_sizes(tmp_path):
    root = make_synthetic_emojisketch(tmp_path / "e", n_train=6, per_class=14, size=16)
    s = get_dataset("emojisketch", root, split="train", domain="sketch", verbose=False)
    p = get_dataset("emojisketch", root, split="train", domain="photo", verbose=False)
    cfg = get_preset("tuberlin-paper", image_size=16, num_workers=0)
    loader = paired_loader_from_config(cfg, s, p)
    b = next(iter(loader))
    assert (
        b["sketch"].shape[0] == 9 and b["photo"].shape[0] == 81 and len(b["photo_views"]) == cfg.augment_views
    )
    sk = get_preset("sketchy-s1-paper")
    assert (sk.sketches_per_batch, sk.photos_per_batch) == (32, 64)


def test_transforms_match_release():
    aug = augment_transform(224).transforms
    flip = next(t for t in aug if isinstance(t, T.RandomHorizontalFlip))
    jitter_apply = next(t for t in aug if isinstance(t, T.RandomApply))
    jitter = jitter_apply.transforms[0]
    gray = next(t for t in aug if isinstance(t, T.RandomGrayscale))
    norm = next(t for t in aug if isinstance(t, T.Normalize))
    assert flip.p == 0.5 and jitter_apply.p == 0.8 and gray.p == 0.2
    assert (
        jitter.brightness == (0.6, 1.4) and jitter.contrast == (0.6, 1.4) and jitter.saturation == (0.6, 1.4)
    )
    assert jitter.hue == (-0.1, 0.1)
    assert tuple(norm.mean) == IMAGENET_MEAN and tuple(norm.std) == IMAGENET_STD
    assert next(t for t in eval_transform(224).transforms if isinstance(t, T.Resize)).size == (224, 224)


# ---- class-aligned sampling ---------------------------------------------------------------------------
def _aligned(sketches, photos, s=3, p=7, **kw):
    kw.setdefault("image_size", 32)
    kw.setdefault("seed", 0)
    return PairedLoader(sketches, photos, s, p, batch_sampler="class_aligned", **kw)


def _check_aligned(b, s, p):
    sl, pl = b["sketch_label"].tolist(), b["photo_label"].tolist()
    assert len(sl) == s and len(pl) == p
    assert len(set(sl)) == s, "the concepts of one step must be distinct"
    assert set(sl) == set(pl), "each sketch concept has photos in its batch, and no photo is of another one"
    counts = sorted((pl.count(c) for c in set(sl)), reverse=True)
    per, extra = divmod(p, s)
    assert counts == [per + 1] * extra + [per] * (s - extra)


def test_class_aligned_composition_and_epoch(pair):
    sketches, photos = pair  # 6 concepts, 3 sketches and 3 photos each
    loader = _aligned(sketches, photos, 3, 7)
    assert len(loader) == 6 // 3  # one epoch = each concept once
    for epoch in range(3):
        batches = _batches(loader, epoch)
        assert len(batches) == 2
        for b in batches:
            _check_aligned(b, 3, 7)
            assert b["sketch"].shape == (3, 3, 32, 32) and b["photo"].shape == (7, 3, 32, 32)
            assert len(b["photo_views"]) == 2 and b["photo_views"][0].shape == (7, 3, 32, 32)
        covered = sorted(torch.cat([b["sketch_label"] for b in batches]).tolist())
        assert covered == list(range(6)), "an epoch visits every concept once"


def test_class_aligned_samples_with_replacement_when_a_concept_is_short(pair):
    sketches, photos = pair
    loader = _aligned(sketches, photos, 2, 10, steps_per_epoch=7)  # 5 photos per concept, 3 available
    batches = _batches(loader)
    assert len(batches) == 7
    for b in batches:
        _check_aligned(b, 2, 10)


def test_class_aligned_images_carry_their_labels(pair):
    sketches, photos = pair
    plain = eval_transform(32)
    loader = _aligned(sketches, photos, 3, 6, base_affine=False, seed=5)
    for ds, key in ((sketches, "sketch"), (photos, "photo")):
        refs = torch.stack([plain(ds.load_image(i)[0]) for i in range(len(ds))])
        for b in _batches(loader):
            for img, label in zip(b[key], b[f"{key}_label"]):
                hits = [i for i in range(len(ds)) if torch.equal(refs[i], img)]
                assert hits and all(ds.samples[i][1] == int(label) for i in hits)


def test_class_aligned_deterministic(pair):
    sketches, photos = pair
    a = _batches(_aligned(sketches, photos, seed=7), epoch=1)
    b = _batches(_aligned(sketches, photos, seed=7, num_workers=2), epoch=1)
    assert _same(a, b)
    c = _batches(_aligned(sketches, photos, seed=7), epoch=2)
    d = _batches(_aligned(sketches, photos, seed=8), epoch=1)
    assert not _same(a, c) and not _same(a, d)
    # the random sampler with the same sizes is a different schedule
    assert not _same(a, _batches(PairedLoader(sketches, photos, 3, 7, image_size=32, seed=7), epoch=1))


def test_class_aligned_subset_and_errors(pair):
    sketches, photos = pair
    sub = torch.utils.data.Subset(sketches, [i for i, (_, c) in enumerate(sketches.samples) if c < 4])
    loader = _aligned(sub, photos, 2, 4, steps_per_epoch=4)
    for b in _batches(loader):
        _check_aligned(b, 2, 4)
        assert max(b["sketch_label"].tolist()) < 4  # only concepts that have a sketch
    with pytest.raises(ValueError, match="concepts"):
        _aligned(sub, photos, 5, 10)
    with pytest.raises(ValueError, match="batch_sampler"):
        PairedLoader(sketches, photos, 3, 6, batch_sampler="balanced")


def test_config_batch_sampler_wiring(pair):
    sketches, photos = pair
    assert get_preset("sketchy-s1-paper").batch_sampler == "random"  # the released sampling by default
    assert get_preset("emoji-demo").batch_sampler == "class_aligned"
    cfg = get_preset("cpu-quick", image_size=32, batch_sampler="class_aligned", sketches_per_batch=3)
    loader = paired_loader_from_config(cfg, sketches, photos)
    assert loader.batch_sampler == "class_aligned" and len(loader) == cfg.steps_per_epoch
    _check_aligned(next(iter(loader)), 3, cfg.photos_per_batch)
