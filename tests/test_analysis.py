"""Tests for dsn_lab/analysis.py: domain-gap measures, projections, the training callback."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pytest
import torch
from torch import nn

from dsn_lab.analysis import GAP_KEYS, DomainGapCallback, domain_gap, project, rbf_mmd2

try:  # the real contract type when the model module exists; the same fields otherwise
    from dsn_lab.model import DSNOutput
except ImportError:  # pragma: no cover - depends on build order
    DSNOutput = namedtuple("DSNOutput", ["logits", "kd_logits", "code", "features"])


def clouds(shift: float, *, seed: int = 0, n_classes: int = 5, dim: int = 8, per_class: int = 30):
    """Gaussian class clouds; sketches are the photos' distribution moved by `shift` along axis 1."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (n_classes, dim))
    means[:, 0] += 3.0  # keep the clouds away from the origin so L2-normalising keeps the geometry
    labels = np.repeat(np.arange(n_classes), per_class)
    direction = np.zeros(dim)
    direction[1] = 1.0
    sketches = means[labels] + 0.3 * rng.normal(size=(len(labels), dim)) + shift * direction
    photos = means[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    return sketches, labels, photos, labels.copy()


# ---------------------------------------------------------------------------------------------------
# domain_gap on synthetic clouds with a known shift
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gaps_by_shift():
    return {s: domain_gap(*clouds(s), seed=0, n_permutations=100) for s in (3.0, 1.0, 0.0)}


def test_all_keys_are_floats(gaps_by_shift):
    for gap in gaps_by_shift.values():
        assert set(GAP_KEYS) <= set(gap)
        assert all(isinstance(v, float) for v in gap.values())


def test_measures_move_the_right_way_as_shift_shrinks(gaps_by_shift):
    big, mid, none = (gaps_by_shift[s] for s in (3.0, 1.0, 0.0))
    acc = [g["domain_classifier_acc"] for g in (big, mid, none)]
    assert acc[0] > acc[1] > acc[2]
    assert acc[0] > 0.95 and abs(acc[2] - 0.5) < 0.12
    mmd = [g["mmd"] for g in (big, mid, none)]
    assert mmd[0] > mmd[1] > mmd[2] and abs(mmd[2]) < 0.02
    p = [g["mmd_pvalue"] for g in (big, mid, none)]
    assert p[0] <= p[1] <= p[2] and p[0] < 0.02 and p[2] > 0.1
    cd = [g["centroid_distance"] for g in (big, mid, none)]
    assert cd[0] > cd[1] > cd[2]
    nn_agree = [g["cross_domain_nn_agreement"] for g in (big, mid, none)]
    assert nn_agree[0] < nn_agree[1] <= nn_agree[2] and nn_agree[2] > 0.9


def test_dispersion_tracks_intra_class_spread():
    s, ls, p, lp = clouds(0.0)
    rng = np.random.default_rng(1)
    wide = s + 0.5 * rng.normal(size=s.shape)  # sketches more diverse than photos
    g_wide = domain_gap(wide, ls, p, lp, n_permutations=0, normalize=False)
    g_same = domain_gap(s, ls, p, lp, n_permutations=0, normalize=False)
    assert g_wide["sketch_dispersion"] > 1.5 * g_same["sketch_dispersion"]
    assert g_wide["photo_dispersion"] == pytest.approx(g_same["photo_dispersion"])
    assert math.isnan(g_same["mmd_pvalue"])  # n_permutations=0 skips the test


def test_toy_hand_computed_geometry():
    # class 0: sketches (0,0),(2,0) -> centroid (1,0), dispersion 1; photos (1,3),(1,5) -> centroid (1,4)
    # class 1: sketches at (10,0),(10,2) -> centroid (10,1), dispersion 1; photo at (10,1)
    s = np.array([[0, 0], [2, 0], [10, 0], [10, 2]], float)
    ls = np.array([0, 0, 1, 1])
    p = np.array([[1, 3], [1, 5], [10, 1]], float)
    lp = np.array([0, 0, 1])
    g = domain_gap(s, ls, p, lp, normalize=False, n_permutations=0, cv_folds=2)
    assert g["centroid_distance"] == pytest.approx((4.0 + 0.0) / 2)
    assert g["sketch_dispersion"] == pytest.approx(1.0)
    assert g["photo_dispersion"] == pytest.approx(1.0)  # class 1 has one photo: skipped
    # nearest photos: (0,0)->(1,3) c0 ok; (2,0)->(1,3) ok; (10,0)->(10,1) ok; (10,2)->(10,1) ok
    assert g["cross_domain_nn_agreement"] == 1.0
    g2 = domain_gap(s, np.array([0, 0, 0, 1]), p, lp, normalize=False, n_permutations=0, cv_folds=2)
    assert g2["cross_domain_nn_agreement"] == pytest.approx(3 / 4)


def test_mmd_matches_brute_force_float64():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.2, size=(9, 3))
    z = np.concatenate([x, y])
    d = np.array([[np.sum((a - b) ** 2) for b in z] for a in z])
    sigma = np.sqrt(np.median([d[i, j] for i in range(16) for j in range(i + 1, 16)]))
    k = np.exp(-d / (2 * sigma**2))
    n, m = 7, 9
    kxx = sum(k[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k[n + i, n + j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k[i, n + j] for i in range(n) for j in range(m)) / (n * m)
    stat, pvalue, bw = rbf_mmd2(x, y)
    assert bw == pytest.approx(sigma)
    assert stat == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    assert math.isnan(pvalue)
    # the permutation p-value by brute force, same permutations
    stat2, p2, _ = rbf_mmd2(x, y, n_permutations=50, seed=5)
    perm_rng = np.random.default_rng(5)
    exceed = 0
    for _ in range(50):
        a = np.zeros(16, bool)
        a[perm_rng.permutation(16)[:n]] = True
        xi, yi = np.where(a)[0], np.where(~a)[0]
        v = (
            sum(k[i, j] for i in xi for j in xi if i != j) / (n * (n - 1))
            + sum(k[i, j] for i in yi for j in yi if i != j) / (m * (m - 1))
            - 2 * sum(k[i, j] for i in xi for j in yi) / (n * m)
        )
        exceed += v >= stat - 1e-12
    assert p2 == pytest.approx((1 + exceed) / 51)


def test_seeded_and_accepts_torch():
    s, ls, p, lp = clouds(1.0)
    a = domain_gap(s, ls, p, lp, seed=7, n_permutations=30)
    b = domain_gap(
        torch.from_numpy(s).float(), torch.from_numpy(ls), torch.from_numpy(p), lp, seed=7, n_permutations=30
    )
    for key in GAP_KEYS:
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)


def test_max_samples_subsamples_and_balances():
    s, ls, p, lp = clouds(3.0, per_class=60)
    g = domain_gap(s[:250], ls[:250], p, lp, max_samples=100, n_permutations=0)
    assert g["domain_classifier_acc"] > 0.9
    g_all = domain_gap(s[:250], ls[:250], p, lp, max_samples=None, n_permutations=0)
    assert g_all["centroid_distance"] == pytest.approx(g["centroid_distance"], rel=0.3)


def test_degenerate_inputs():
    s, ls, p, lp = clouds(1.0)
    with pytest.raises(ValueError, match="empty"):
        domain_gap(s[:0], ls[:0], p, lp)
    with pytest.raises(ValueError, match="dimension"):
        domain_gap(s[:, :4], ls, p, lp)
    with pytest.raises(ValueError, match="rows"):
        domain_gap(s, ls[:-1], p, lp)
    with pytest.raises(ValueError, match="NaN"):
        bad = s.copy()
        bad[0, 0] = np.nan
        domain_gap(bad, ls, p, lp)
    # no class shared between the domains: centroid distance is undefined, the rest still works
    g = domain_gap(s, ls, p, lp + 100, n_permutations=0)
    assert math.isnan(g["centroid_distance"]) and g["cross_domain_nn_agreement"] == 0.0
    # a single sketch: classifier has no folds, MMD needs 2 samples per side
    g1 = domain_gap(s[:1], ls[:1], p, lp, n_permutations=0)
    assert math.isnan(g1["domain_classifier_acc"]) and math.isnan(g1["mmd"])


# ---------------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_seeded_reproducible_and_split(method):
    s, _, p, _ = clouds(2.0, per_class=12)
    kw = {"max_iter": 400} if method == "tsne" else {}  # fewer iterations than the default 1000: fast
    a = project([s, p], method=method, seed=3, **kw)
    b = project([torch.from_numpy(s), p], method=method, seed=3, **kw)
    assert [x.shape for x in a] == [(len(s), 2), (len(p), 2)]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # joint fit keeps the shifted domains apart: a point's nearest 2-D neighbour is mostly of its own domain
    y = np.concatenate(a)
    dom = np.r_[np.zeros(len(s)), np.ones(len(p))]
    d = ((y[:, None] - y[None]) ** 2).sum(-1) + np.diag(np.full(len(y), np.inf))
    assert (dom[d.argmin(1)] == dom).mean() > 0.9


def test_pca_projection_matches_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)) * np.array([5, 3, 1, 0.5, 0.1])
    (y,) = project([x], method="pca")
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:2].T
    np.testing.assert_allclose(np.abs(y), np.abs(ref), atol=1e-8)  # up to the sign of each axis


def test_projection_errors():
    with pytest.raises(ValueError, match="unknown method"):
        project([np.zeros((5, 3)), np.ones((5, 3))], method="mds")
    with pytest.raises(ValueError, match="same D"):
        project([np.zeros((5, 3)), np.ones((5, 4))])
    with pytest.raises(TypeError, match="list"):
        project(np.zeros((5, 3)))


@pytest.fixture(scope="session")
def umap_projection():
    """UMAP runs once per test session: importing umap-learn compiles numba code (tens of seconds)."""
    s, _, p, _ = clouds(2.0, n_classes=3, per_class=15)
    return s, p, project([s, p], method="umap", seed=0, n_epochs=50)


@pytest.mark.slow
def test_umap_projection(umap_projection):
    s, p, (a, b) = umap_projection
    assert a.shape == (len(s), 2) and b.shape == (len(p), 2)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))


# ---------------------------------------------------------------------------------------------------
# the training callback on a tiny stand-in model
# ---------------------------------------------------------------------------------------------------
class TinyDSN(nn.Module):
    """Image mean colour -> code; photos get `domain_offset` added, so the gap is under our control."""

    def __init__(self, domain_offset: float):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.domain_offset = domain_offset
        self.seen_domains: list[int] = []

    def forward(self, images, domain):
        self.seen_domains.append(int(domain))
        pooled = images.mean(dim=(2, 3))
        code = self.bn(self.proj(pooled)) + self.domain_offset * float(domain)
        n = len(images)
        return DSNOutput(torch.zeros(n, 5), torch.zeros(n, 1000), code, pooled + self.domain_offset * domain)


def tiny_images(n_per_class=10, n_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    colours = torch.rand(n_classes, 3, generator=g) * 4
    images = colours[labels][:, :, None, None] + 0.1 * torch.randn(len(labels), 3, 6, 6, generator=g)
    return images, labels


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels, domain):
        self.images, self.labels, self.domain = images, labels, domain

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), self.domain


def test_callback_measures_gap_and_restores_mode():
    torch.manual_seed(0)
    sk = tiny_images(seed=1)
    ph = tiny_images(seed=2)
    far, near = TinyDSN(domain_offset=5.0), TinyDSN(domain_offset=0.0)
    near.load_state_dict(far.state_dict())
    cb = DomainGapCallback(sk, ph, every=1, n_permutations=20, batch_size=16)
    far.train()
    out_far = cb(far, epoch=0, step=0)
    assert far.training  # restored
    assert set(out_far) >= {f"gap/{k}" for k in GAP_KEYS}
    assert all(isinstance(v, float) for v in out_far.values())
    assert set(far.seen_domains) == {0, 1}
    near.eval()
    out_near = cb(near, epoch=0, step=0)
    assert not near.training
    assert out_far["gap/domain_classifier_acc"] > 0.9
    assert out_near["gap/domain_classifier_acc"] < out_far["gap/domain_classifier_acc"]
    assert out_near["gap/mmd"] < out_far["gap/mmd"]
    assert out_near["gap/cross_domain_nn_agreement"] > out_far["gap/cross_domain_nn_agreement"]


def test_callback_every_datasets_pooled_and_subset():
    sk_images, sk_labels = tiny_images(seed=1)
    ph_images, ph_labels = tiny_images(seed=2)
    model = TinyDSN(domain_offset=0.0)
    cb = DomainGapCallback(
        ListDataset(sk_images, sk_labels, 0),
        ListDataset(ph_images, ph_labels, 1),
        every=2,
        feature="pooled",
        max_samples=25,
        n_permutations=0,
        prefix="g/",
    )
    assert cb(model, epoch=1, step=10) == {}
    out = cb(model, epoch=2, step=20)
    assert "g/mmd" in out
    # feature="pooled" uses .features: the same numbers as domain_gap on the pooled means of the subset
    idx_s, idx_p = cb._sketch[2], cb._photo[2]
    assert len(idx_s) == 25
    ref = domain_gap(
        sk_images[idx_s].mean(dim=(2, 3)),
        sk_labels[idx_s],
        ph_images[idx_p].mean(dim=(2, 3)),
        ph_labels[idx_p],
        seed=0,
        n_permutations=0,
        max_samples=None,
    )
    for k in GAP_KEYS:
        a, b = out[f"g/{k}"], ref[k]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_callback_errors():
    images, labels = tiny_images()
    with pytest.raises(ValueError, match="feature"):
        DomainGapCallback((images, labels), (images, labels), feature="logits")
    with pytest.raises(ValueError, match="labels"):
        DomainGapCallback((images, labels[:-1]), (images, labels))

    class NoCode(nn.Module):
        def forward(self, images, domain):
            return images.mean(dim=(2, 3))

    cb = DomainGapCallback((images, labels), (images, labels), n_permutations=0)
    with pytest.raises(TypeError, match="DSNOutput"):
        cb(NoCode(), 0, 0)
    as_arrays = ListDataset(images.numpy(), labels, 0)  # no tensor transform: say how to fix it
    cb = DomainGapCallback(as_arrays, (images, labels), n_permutations=0)
    with pytest.raises(TypeError, match="transform"):
        cb(TinyDSN(0.0), 0, 0)


def test_callback_keeps_each_epochs_codes(tmp_path):
    """keep_codes_in: each call writes the encoded subset as epochNNN.npz; load_gap_codes reads them back in
    epoch order, the codes those of the model (float16 round trip), the labels exact."""
    from dsn_lab.analysis import load_gap_codes

    sk_images, sk_labels = tiny_images(seed=1)
    ph_images, ph_labels = tiny_images(seed=2)
    cb = DomainGapCallback(
        (sk_images, sk_labels), (ph_images, ph_labels), n_permutations=0, keep_codes_in=tmp_path / "codes"
    )
    with pytest.raises(FileNotFoundError, match="keep_codes_in"):
        load_gap_codes(tmp_path / "codes")
    models = {2: TinyDSN(domain_offset=0.0), 0: TinyDSN(domain_offset=5.0)}
    for epoch, model in models.items():
        cb(model, epoch=epoch, step=0)
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["epoch000.npz", "epoch002.npz"]
    codes = load_gap_codes(tmp_path / "codes")
    assert list(codes) == [0, 2]
    xs, ls = cb.encode(models[0], cb._sketch, 0)
    xp, lp = cb.encode(models[0], cb._photo, 1)
    np.testing.assert_allclose(codes[0]["sketch"], xs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(codes[0]["photo"], xp, rtol=1e-3, atol=1e-3)
    assert codes[0]["sketch"].dtype == np.float32
    np.testing.assert_array_equal(codes[0]["sketch_labels"], ls)
    np.testing.assert_array_equal(codes[2]["photo_labels"], lp)
    assert not list((tmp_path / "codes").glob(".*tmp*"))  # written atomically: no temporary left
    # measuring codes encoded once (notebook 06's epoch 0) gives what a call gives
    assert cb.measure(cb.codes(models[0])) == cb(models[0], epoch=0, step=0)


def test_project_sequence_starts_each_map_from_the_previous():
    from dsn_lab.analysis import project_sequence

    rng = np.random.default_rng(0)
    frames = [[rng.normal(size=(20, 8)), rng.normal(size=(20, 8)) + shift] for shift in (3.0, 0.0)]
    maps = project_sequence(frames, "tsne", perplexity=5.0, max_iter=250)
    assert [[m.shape for m in frame] for frame in maps] == [[(20, 2), (20, 2)]] * 2
    first = project(frames[0], "tsne", perplexity=5.0, max_iter=250)
    np.testing.assert_allclose(np.concatenate(maps[0]), np.concatenate(first))
    previous = np.concatenate(first)
    init = previous / previous[:, 0].std() * 1e-4  # t-SNE's own scale for an initial layout
    second = project(frames[1], "tsne", perplexity=5.0, max_iter=250, init=init)
    np.testing.assert_allclose(np.concatenate(maps[1]), np.concatenate(second))
    # PCA: each frame alone
    pca = project_sequence(frames, "pca")
    np.testing.assert_allclose(np.concatenate(pca[1]), np.concatenate(project(frames[1], "pca")))
    with pytest.raises(ValueError, match="same points"):
        project_sequence([frames[0], [frames[1][0]]])
    with pytest.raises(ValueError, match="no frames"):
        project_sequence([])
