"""The notebooks' exercises: the checks of dsn_lab.exercises (a right answer passes, a wrong one is caught
with a message, an unanswered one says so without raising unless strict), the solutions in
notebooks/solutions/ (each answers the exercises of its notebook, in order), the logic rule's exemption of
cells tagged ``exercise`` only, and each notebook executed with its solutions in place, strict (slow).

How the solutions run: a solution file holds, per exercise, the filled-in ``exercise`` cell and a strict
check; CI executes the notebook itself with each ``exercise`` cell replaced by the solution's cell of the
same exercise (so the solutions run in the notebook they answer, after its own cells), in the Colab-like
runtime of tests/test_notebooks.py, with ``DSN_LAB_EXERCISES_STRICT=1`` so the notebook's check cells raise
on anything but a pass.
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dsn_lab import exercises as ex
from dsn_lab.config import QUIRKS, get_preset
from dsn_lab.course import ablation_table
from dsn_lab.data import get_dataset
from dsn_lab.data.batching import paired_loader_from_config
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.losses import SupConLoss
from dsn_lab.memory import SketchMemory
from dsn_lab.metrics import itq_fit
from dsn_lab.step import dsn_losses
from dsn_lab.train import train
from dsn_lab.widgets import Explorer, FeatureSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_notebooks as tnb  # noqa: E402
from test_notebooks import colab_like  # noqa: E402, F401 - the session fixture of the Colab-like runtime

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "solutions"
# notebook -> its solutions; the notebooks without exercises yet are not listed
WITH_EXERCISES = {
    "01_data_preparation.ipynb": "01_data_preparation_solutions.py",
    "02_model_and_losses.ipynb": "02_model_and_losses_solutions.py",
    "03_training.ipynb": "03_training_solutions.py",
    "04_evaluation.ipynb": "04_evaluation_solutions.py",
    "06_domain_gap.ipynb": "06_domain_gap_solutions.py",
    "00_setup.ipynb": "00_setup_solutions.py",
    "05_ablations.ipynb": "05_ablations_solutions.py",
    "07_retrieval_explorer.ipynb": "07_retrieval_explorer_solutions.py",
}
HEADER = re.compile(r"^# Exercise (\d\d\.\d+)\b", re.M)


def _status(res: ex.CheckResult, status: str, *words: str) -> None:
    assert res.status == status, res
    assert bool(res) == (status == "pass")
    for w in words:
        assert w in res.message, (w, res.message)


def _all_modes(check, wrong_answer, *args, **kwargs) -> None:
    """Unanswered: a message, no exception (default), ExerciseError (strict); a wrong answer likewise."""
    _status(check(None, *args, **kwargs), "unanswered", "not answered yet")
    with pytest.raises(ex.ExerciseError, match="not answered"):
        check(None, *args, strict=True, **kwargs)
    _status(check(wrong_answer, *args, **kwargs), "fail", "✗")
    with pytest.raises(ex.ExerciseError, match="✗"):
        check(wrong_answer, *args, strict=True, **kwargs)


def test_strict_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv(ex.STRICT_ENV, "1")
    with pytest.raises(ex.ExerciseError):
        ex.check_temperature_sweep(None, torch.zeros(2, 2, 3), torch.zeros(2), [0.1])
    monkeypatch.setenv(ex.STRICT_ENV, "0")
    _status(ex.check_temperature_sweep(None, torch.zeros(2, 2, 3), torch.zeros(2), [0.1]), "unanswered")
    # strict=False wins over the environment
    monkeypatch.setenv(ex.STRICT_ENV, "1")
    _status(ex.check_lr_schedule(None, get_preset("emoji-quick"), 4, strict=False), "unanswered")


# ---------------------------------------------------------------------------------------------------
# 01
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_emojisketch(tmp_path_factory.mktemp("data") / "synth", per_class=3, size=32)


def test_photos_per_class(synth):
    ds = get_dataset("emojisketch", synth, split="zero", domain="photo", verbose=False)
    right = {c: sum(1 for label in ds.labels if label == i) for i, c in enumerate(ds.classes)}
    _status(ex.check_photos_per_class(right, synth), "pass", "✓", f"{sum(right.values())} photos")
    off = dict(right, **{ds.classes[0]: right[ds.classes[0]] + 1})
    _status(ex.check_photos_per_class(off, synth), "fail", "1 counts off", ds.classes[0])
    assert "sketch counts" not in ex.check_photos_per_class(off, synth).message
    sketches = dict.fromkeys(right, 1)  # what counting EmojiSketch's sketches gives: one per concept
    _status(ex.check_photos_per_class(sketches, synth), "fail", "look like sketch counts")
    _all_modes(ex.check_photos_per_class, {k: v for k, v in right.items() if k != ds.classes[1]}, synth)
    _status(ex.check_photos_per_class([1, 2], synth), "fail", "expected a dict")


def _splits(root: Path, train: list[str], zero: list[str]) -> Path:
    (root / "splits").mkdir(parents=True)
    for split, names in (("train", train), ("zero", zero)):
        (root / "splits" / f"classes_{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_name_overlaps_follow_the_builders_rule(tmp_path):
    root = _splits(
        tmp_path,
        ["computer_mouse", "elephant", "cars_on_road", "mouse_trap", "apple_pie"],
        ["mouse", "ant", "car_(sedan)"],
    )
    want = {("computer_mouse", "mouse"), ("mouse_trap", "mouse"), ("cars_on_road", "car_(sedan)")}
    assert ex.name_overlaps(root) == want  # whole words: no ("elephant", "ant"); a plural counts
    res = ex.check_name_overlaps(want, root)
    _status(res, "pass", "exactly these 3 pairs", "2 of them are on the builder's allow list")
    spaced = {("computer mouse", "mouse"), ("mouse trap", "mouse"), ("cars on road", "car_(sedan)")}
    _status(ex.check_name_overlaps(spaced, root), "pass")  # spaces for underscores are fine
    substring = want | {("elephant", "ant")}
    _status(ex.check_name_overlaps(substring, root), "fail", "1 pairs the rule does not give", "whole words")
    _all_modes(ex.check_name_overlaps, want - {("mouse_trap", "mouse")}, root)


def test_sketch_positives(synth):
    sk = get_dataset("emojisketch", synth, split="train", domain="sketch", verbose=False)
    ph = get_dataset("emojisketch", synth, split="train", domain="photo", verbose=False)
    cfg = get_preset("emoji-demo")
    kw = dict(sketches_per_batch=3, photos_per_batch=3, image_size=16, seed=0)
    loaders = {
        "class_aligned": paired_loader_from_config(cfg, sk, ph, **kw),
        "random": paired_loader_from_config(cfg.replace(batch_sampler="random"), sk, ph, **kw),
    }
    fractions = {}
    for name, loader in loaders.items():  # counted here from the labels, not by the function under test
        pairs = [
            (b["sketch_label"].tolist(), set(b["photo_label"].tolist())) for _, b in zip(range(4), loader)
        ]
        fractions[name] = sum(x in p for s, p in pairs for x in s) / sum(len(s) for s, _ in pairs)
    assert fractions["class_aligned"] == 1.0 and fractions["random"] < 1.0
    _status(ex.check_sketch_positives(fractions, loaders, 4), "pass", "class_aligned 1.00")
    _all_modes(ex.check_sketch_positives, dict(fractions, random=1.0), loaders, 4)
    _status(ex.check_sketch_positives({"random": 0.5}, loaders, 4), "fail", "expected a dict with keys")


# ---------------------------------------------------------------------------------------------------
# 03
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    """A short run on the synthetic data (cosine schedule), its model, config and one training batch."""
    out = tmp_path_factory.mktemp("run")
    cfg = get_preset(
        "cpu-quick", output_dir=str(out), image_size=24, kdneg=0.0, steps_per_epoch=2, log_every=1
    ).replace(lr_schedule="cosine", w_contrastive=0.1, w_memory=0.5)
    result = train(cfg, data_root=synth, verbose=False)
    model, run_cfg, batch = ex.load_run_and_batch(result.final_checkpoint, data_root=synth)
    return result, model, run_cfg, batch


def test_logged_total(run):
    result, _, cfg, _ = run
    row = [r for r in result.history if r["kind"] == "step"][-1]
    terms = [k for k in ("ce", "kd", "contrastive", "memory") if f"loss_{k}" in row]
    assert {"contrastive", "memory"} <= set(terms)
    right = sum(getattr(cfg, f"w_{k}") * row[f"loss_{k}"] for k in terms)
    _status(ex.check_logged_total(right, row, cfg), "pass", "0.1 × contrastive")
    unweighted = sum(row[f"loss_{k}"] for k in terms)
    _status(ex.check_logged_total(unweighted, row, cfg), "fail", "unweighted sum")
    _all_modes(ex.check_logged_total, right + 0.01, row, cfg)


def test_ce_term(run):
    _, trained, cfg, batch = run
    model = copy.deepcopy(trained)
    with torch.no_grad():  # a few steps leave the FiLM layer near its zero init: make the domain flag matter
        for name, p in model.named_parameters():
            if ".film." in f".{name}":
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    x = torch.cat([batch["sketch"], batch["photo"]])
    y = torch.cat([batch["sketch_label"], batch["photo_label"]])
    dom = torch.cat([torch.zeros(len(batch["sketch"])), torch.ones(len(batch["photo"]))])[:, None]
    with torch.no_grad():
        right = F.cross_entropy(model(x, dom)[0], y)
        swapped = F.cross_entropy(model(x, 1 - dom)[0], y)
    _status(ex.check_ce_term(right, model, batch, cfg), "pass", "the CE term of dsn_losses")
    assert abs(float(swapped) - float(right)) > 1e-2
    _status(ex.check_ce_term(swapped, model, batch, cfg), "fail", "domain flags swapped")
    _all_modes(ex.check_ce_term, float(right) + 0.05, model, batch, cfg)


def test_supcon_inputs_are_what_the_step_gives_supcon(run):
    _, model, cfg, batch = run
    z, labels = ex.supcon_inputs(model, batch, cfg)
    assert z.shape[:2] == (len(labels), cfg.augment_views)
    assert torch.allclose(z.norm(dim=2), torch.ones(z.shape[:2]), atol=1e-5)
    only = cfg.replace(use_kd=False, use_memory=False, use_contrastive=True)
    with torch.no_grad():
        want = dsn_losses(model.eval(), dict(batch), only)["contrastive"]
    assert torch.allclose(SupConLoss(cfg.temperature, 0.07)(z, labels), want, atol=1e-5)


def test_temperature_sweep(run):
    _, model, cfg, batch = run
    z, labels = ex.supcon_inputs(model, batch, cfg)
    temps = [0.05, 0.07, 0.5]
    right = [SupConLoss(t, 0.07)(z, labels).item() for t in temps]
    _status(ex.check_temperature_sweep(right, z, labels, temps), "pass", "all 3 values")
    _status(ex.check_temperature_sweep(torch.tensor(right), z, labels, temps), "pass")
    base_t = [SupConLoss(t, t)(z, labels).item() for t in temps]
    _status(ex.check_temperature_sweep(base_t, z, labels, temps), "fail", "base_temperature")
    _status(ex.check_temperature_sweep(right[:2], z, labels, temps), "fail", "expected 3 numbers")
    _all_modes(ex.check_temperature_sweep, [v * 1.01 for v in right], z, labels, temps)


def test_lr_schedule(run):
    _, _, cfg, _ = run
    k_total = 8  # enough steps for a linear decay to differ from the cosine
    right = [0.5 * (1 + math.cos(math.pi * k / k_total)) for k in range(k_total + 1)]
    _status(ex.check_lr_schedule(right, cfg, k_total), "pass", "1.00 at step 0", "0.00 at the end")
    _status(ex.check_lr_schedule([cfg.lr * v for v in right], cfg, k_total), "fail", "learning rates")
    linear = [1 - k / k_total for k in range(k_total + 1)]
    _all_modes(ex.check_lr_schedule, linear, cfg, k_total)


# ---------------------------------------------------------------------------------------------------
# 04 · evaluation, 06 · domain gap (random features: the answers are computed here by hand)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def retrieval():
    """Queries (3 per class) and a gallery (2 to 6 photos per class) of 4 classes, 8-d, unit length."""
    rng = np.random.default_rng(0)
    ql = np.repeat(np.arange(4), 3)
    gl = np.repeat(np.arange(4), [2, 6, 4, 5])
    centres = rng.normal(size=(4, 8))
    q, g = centres[ql] + rng.normal(size=(len(ql), 8)), centres[gl] + 1.5 * rng.normal(size=(len(gl), 8))
    q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    return q, ql, g, gl


def _ranks(q, ql, g, gl, i):
    order = np.argsort(np.linalg.norm(g - q[i], axis=1), kind="stable")
    return np.flatnonzero(gl[order] == ql[i]) + 1  # 1-based ranks of the positives


def _ap(ranks, interpolated=True):
    prec = np.arange(1, len(ranks) + 1) / ranks
    if interpolated:
        prec = np.maximum.accumulate(prec[::-1])[::-1]
    return prec.mean()


def test_query_ap(retrieval):
    q, ql, g, gl = retrieval
    # a query whose interpolated and plain AP differ, so that the hint can be told apart
    i = next(
        i for i in range(len(q)) if abs(_ap(_ranks(*retrieval, i)) - _ap(_ranks(*retrieval, i), False)) > 1e-3
    )
    right, plain = _ap(_ranks(*retrieval, i)), _ap(_ranks(*retrieval, i), False)
    _status(ex.check_query_ap(right, *retrieval, i), "pass", "positives at ranks")
    _status(ex.check_query_ap(plain, *retrieval, i), "fail", "plain AP")
    _status(ex.check_query_ap("high", *retrieval, i), "fail", "expected a number")
    _all_modes(ex.check_query_ap, right + 0.01, *retrieval, i)


def test_query_precision(retrieval):
    q, ql, g, gl = retrieval
    ranks = _ranks(*retrieval, 4)
    right = {5: (ranks <= 5).sum() / 5, 100: len(ranks) / len(g)}  # the gallery (17) is smaller than 100
    _status(ex.check_query_precision(right, *retrieval, 4), "pass", "gallery of 17")
    _status(ex.check_query_precision({**right, 100: len(ranks) / 100}, *retrieval, 4), "fail", "min(K, 17)")
    n_pos = len(ranks)
    over_positives = {k: (ranks <= min(k, n_pos)).sum() / min(k, n_pos) for k in (5, 100)}
    _status(ex.check_query_precision(over_positives, *retrieval, 4), "fail", "p_at_k_over='positives'")
    _status(ex.check_query_precision({5: right[5]}, *retrieval, 4), "fail", "with keys [5, 100]")
    _all_modes(ex.check_query_precision, {**right, 5: right[5] + 0.2}, *retrieval, 4)


def test_hardest_classes(retrieval):
    q, ql, g, gl = retrieval
    names = ["cat", "dog", "owl", "bee"]
    per_class = {
        names[c]: np.mean([_ap(_ranks(*retrieval, i)) for i in np.flatnonzero(ql == c)]) for c in range(4)
    }
    ranked = sorted(per_class, key=per_class.get)
    res = ex.check_hardest_classes(ranked[:2][::-1], *retrieval, names, 2, predicted=[ranked[0], "unicorn"])
    _status(res, "pass", "the 2 hardest", f"{ranked[0]} ({per_class[ranked[0]]:.3f})", "1 of 2", "unicorn")
    ids = [names.index(c) for c in ranked[:2]]
    _status(ex.check_hardest_classes(ids, *retrieval, names, 2), "pass")  # class ids are fine too
    _status(ex.check_hardest_classes(ranked[-2:], *retrieval, names, 2), "fail", "easiest")
    _status(ex.check_hardest_classes(ranked[:1], *retrieval, names, 2), "fail", "expected 2 distinct")
    _status(ex.check_hardest_classes("cat", *retrieval, names, 2), "fail", "one string")
    _all_modes(ex.check_hardest_classes, [ranked[0], ranked[2]], *retrieval, names, 2)


def test_hardest_classes_accepts_any_tied_choice():
    # classes a and b find their photo first (AP 1); c and d find a photo of the other first (AP 1/2 each)
    q = np.array([[1.0, 0], [0, 1.0], [-1.0, 0.1], [0.1, -1.0]])
    g = np.array([[1.0, 0], [0, 1.0], [-1.0, 0.1], [-1.0, 0.3], [0.1, -1.0], [0.3, -1.0]])
    ql, gl = np.arange(4), np.array([0, 1, 3, 2, 2, 3])
    assert [_ap(_ranks(q, ql, g, gl, i)) for i in range(4)] == [1.0, 1.0, 0.5, 0.5]
    names = ["a", "b", "c", "d"]
    for tied in ("c", "d"):
        _status(ex.check_hardest_classes([tied], q, ql, g, gl, names, 1), "pass")
    _status(ex.check_hardest_classes(["a"], q, ql, g, gl, names, 1), "fail")


def test_itq_loss(retrieval):
    q = retrieval[0]
    itq = itq_fit(q, n_iter=2)  # before convergence: the last update still lowers the loss
    v = (q - q.mean(0)) @ itq.components @ itq.rotation
    right = ((np.where(v >= 0, 1.0, -1.0) - v) ** 2).sum() / len(q)
    assert right < itq.loss_history[-1] - 1e-3  # Gong's update never increases the loss
    _status(ex.check_itq_loss(right, itq, q), "pass", "with the final rotation", "2 iterations, 8 bits")
    _status(ex.check_itq_loss(itq.loss_history[-1], itq, q), "fail", "before the last update")
    _status(ex.check_itq_loss(right * len(q), itq, q), "fail", "divide by their number n")
    _all_modes(ex.check_itq_loss, right * 1.01, itq, q)


@pytest.fixture(scope="module")
def gap_feats():
    """Sketches (one class with a single sketch) and photos of 3 classes, 6-d, not unit length."""
    rng = np.random.default_rng(1)
    ls, lp = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 1, 2, 2, 2])
    centres = rng.normal(size=(3, 6))
    xs = 3.0 * (centres[ls] + rng.normal(size=(6, 6)))
    xp = 2.0 * (centres[lp] + rng.normal(size=(8, 6)))
    return xs, ls, xp, lp


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_centroid_distance(gap_feats):
    xs, ls, xp, lp = gap_feats
    us, up = _unit(xs), _unit(xp)
    diffs = [us[ls == c].mean(0) - up[lp == c].mean(0) for c in range(3)]
    right = np.mean([np.linalg.norm(d) for d in diffs])
    _status(ex.check_centroid_distance(right, *gap_feats), "pass", "mean over 3 classes")
    _status(ex.check_centroid_distance(np.mean([d @ d for d in diffs]), *gap_feats), "fail", "squared")
    global_gap = np.linalg.norm(us.mean(0) - up.mean(0))
    _status(ex.check_centroid_distance(global_gap, *gap_feats), "fail", "overall means")
    raw = np.mean([np.linalg.norm(xs[ls == c].mean(0) - xp[lp == c].mean(0)) for c in range(3)])
    _status(ex.check_centroid_distance(raw, *gap_feats), "fail", "L2-normalise")
    _all_modes(ex.check_centroid_distance, right + 0.01, *gap_feats)


def test_dispersion(gap_feats):
    xs, ls, xp, lp = gap_feats

    def spread(x, lab, skip_single=True):
        x = _unit(x)
        per = [np.linalg.norm(x[lab == c] - x[lab == c].mean(0), axis=1).mean() for c in np.unique(lab)]
        return np.mean([v for v, c in zip(per, np.unique(lab)) if (lab == c).sum() > 1 or not skip_single])

    right = {"sketch": spread(xs, ls), "photo": spread(xp, lp)}
    _status(ex.check_dispersion(right, *gap_feats), "pass", "sketch", "photo")
    with_single = dict(right, sketch=spread(xs, ls, skip_single=False))
    _status(ex.check_dispersion(with_single, *gap_feats), "fail", "one sample count as 0")
    _status(ex.check_dispersion({"sketch": 0.1}, *gap_feats), "fail", "expected a dict")
    _all_modes(ex.check_dispersion, dict(right, photo=right["photo"] + 0.01), *gap_feats)
    # one sketch per class (EmojiSketch v1): no class has a spread, the answer is NaN
    one_each = (xs[[0, 3, 5]], ls[[0, 3, 5]], xp, lp)
    _status(ex.check_dispersion(dict(right, sketch=math.nan), *one_each), "pass", "NaN: no class has two")
    _status(ex.check_dispersion(dict(right, sketch=0.0), *one_each), "fail", "one sample count as 0")


def _mmd2_by_hand(x, y, sigma=None, unbiased=True, two=2.0):
    """MMD² with exp(-d²/(two sigma²)); sigma None: the median distance over distinct pairs."""
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    d2 = ((z[:, None] - z[None]) ** 2).sum(2)
    if sigma is None:
        sigma = np.median(np.sqrt(d2[np.triu_indices(n + m, 1)]))
    k = np.exp(-d2 / (two * sigma**2))
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return (kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean()


def test_mmd2(gap_feats):
    x, y = _unit(gap_feats[0]), _unit(gap_feats[2])
    z = np.concatenate([x, y])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(2))
    pairs = d[np.triu_indices(len(z), 1)]  # 14 points, 91 pairs: an odd count, one middle value
    sigma = np.median(pairs)
    right = _mmd2_by_hand(x, y)
    _status(ex.check_mmd2(right, x, y), "pass", f"sigma = {sigma:.4f}")
    _status(ex.check_mmd2(_mmd2_by_hand(x, y, unbiased=False), x, y), "fail", "biased estimate")
    _status(ex.check_mmd2(_mmd2_by_hand(x, y, two=1.0), x, y), "fail", "exp(-d²/sigma²)")
    _status(ex.check_mmd2(_mmd2_by_hand(x, y, np.median(pairs**2)), x, y), "fail", "median squared")
    _status(ex.check_mmd2(_mmd2_by_hand(x, y, np.sqrt(np.median(d**2))), x, y), "fail", "i = j")
    _all_modes(ex.check_mmd2, right + 0.01, x, y)
    # 4 points, 6 pairs: the median distance (the mean of the middle two, 2.70) is not the root of the
    # median squared distance (rbf_mmd2's sigma, 2.74); both are the median heuristic, both pass
    x4, y4 = np.array([[0.0, 0], [1, 0]]), np.array([[0.0, 2], [3, 3]])
    plain = _mmd2_by_hand(x4, y4)
    root = _mmd2_by_hand(x4, y4, np.sqrt(np.median([1, 4, 5, 10, 13, 18])))
    assert abs(plain - root) > 1e-3
    _status(ex.check_mmd2(plain, x4, y4), "pass", "the median of the distances")
    _status(ex.check_mmd2(root, x4, y4), "pass", "as rbf_mmd2 (median bandwidth sigma = 2.7386")


def test_nn_agreement(gap_feats):
    xs, ls, xp, lp = gap_feats
    us, up = _unit(xs), _unit(xp)
    nearest = lp[np.linalg.norm(us[:, None] - up[None], axis=2).argmin(1)]
    right = (nearest == ls).mean()
    assert 0 < right < 1
    _status(ex.check_nn_agreement(right, *gap_feats), "pass", f"of {len(ls)} sketches")
    _status(ex.check_nn_agreement((nearest == ls).sum(), *gap_feats), "fail", "a count")
    _all_modes(ex.check_nn_agreement, right + 0.01, *gap_feats)


# ---------------------------------------------------------------------------------------------------
# 02 · model and losses (toy tensors: the answers are computed here by hand, with loops)
# ---------------------------------------------------------------------------------------------------
def _supcon_loop(f, y, t, *, with_self=False, same_image_only=False, factor=True):
    """SupCon anchor by anchor, straight from the equation (and the usual slips, on request)."""
    views = [(i, v) for v in range(f.shape[1]) for i in range(f.shape[0])]
    losses = []
    for i, vi in views:
        others = [(j, vj) for j, vj in views if with_self or (j, vj) != (i, vi)]
        log_den = math.log(sum(math.exp(float(f[i, vi] @ f[j, vj]) / t) for j, vj in others))
        pos = [
            (j, vj)
            for j, vj in views
            if (j, vj) != (i, vi) and (j == i if same_image_only else int(y[j]) == int(y[i]))
        ]
        if pos:
            mean = sum(float(f[i, vi] @ f[j, vj]) / t - log_den for j, vj in pos) / len(pos)
            losses.append(-(t / 0.07 if factor else 1.0) * mean)
    return sum(losses) / len(losses)


def test_supcon_by_hand():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(5, 2, 6, generator=g), dim=-1)
    y = torch.tensor([0, 1, 0, 2, 1])
    right = _supcon_loop(f, y, 0.1)
    _status(ex.check_supcon_by_hand(right, f, y, 0.1), "pass", "✓", "SupConLoss(0.1")
    _status(ex.check_supcon_by_hand(torch.tensor(right), f, y, 0.1), "pass")
    slips = {
        "own denominator": _supcon_loop(f, y, 0.1, with_self=True),
        "SimCLR": _supcon_loop(f, y, 0.1, same_image_only=True),
        "T / 0.07 factor": _supcon_loop(f, y, 0.1, factor=False),
    }
    for words, value in slips.items():
        assert abs(value - right) > 1e-3, words  # each slip gives another value on this batch
        _status(ex.check_supcon_by_hand(value, f, y, 0.1), "fail", words)
    _all_modes(ex.check_supcon_by_hand, right * 1.01, f, y, 0.1)


@pytest.fixture()
def toy_bank():
    """Class 0 three sketches, class 1 one, class 2 none; five photos, one of class 2."""
    g = torch.Generator().manual_seed(1)
    sketches, labels = torch.randn(4, 5, generator=g), torch.tensor([0, 0, 1, 0])
    banks = {m: SketchMemory(3, 3, 5, faithful=(m == "faithful")) for m in ("fixed", "faithful")}
    for bank in banks.values():
        bank.update(sketches, labels, sketches[:1], labels[:1])
    return banks, sketches, torch.randn(5, 5, generator=g), torch.tensor([0, 1, 2, 0, 1])


def test_memory_loss(toy_bank):
    banks, sketches, photos, labels = toy_bank
    centres = {0: sketches[[0, 1, 3]].mean(0), 1: sketches[2]}  # the bank's classes, from the sketches
    cos = [
        F.cosine_similarity(p, centres[int(c)], dim=0).item() for p, c in zip(photos, labels) if int(c) < 2
    ]
    right = 1 - sum(cos) / 4
    for bank in banks.values():
        _status(ex.check_memory_loss(right, bank, photos, labels), "pass", "4 of 5 photos")
    bank = banks["fixed"]
    _status(
        ex.check_memory_loss(sum(cos) / 4, bank, photos, labels), "fail", "mean cosine (the loss is 1 - that)"
    )
    _status(ex.check_memory_loss(1 - sum(cos) / 5, bank, photos, labels), "fail", "photos of empty classes")
    per_slot = [
        F.cosine_similarity(p[None], sketches[[0, 1, 3] if int(c) == 0 else [2]]).mean().item()
        for p, c in zip(photos, labels)
        if int(c) < 2
    ]
    _status(ex.check_memory_loss(1 - sum(per_slot) / 4, bank, photos, labels), "fail", "cosine to each slot")
    _all_modes(ex.check_memory_loss, right + 0.01, bank, photos, labels)


def test_replaced_slots():
    e = torch.eye(4)
    banks = {m: SketchMemory(3, 3, 4, faithful=(m == "faithful")) for m in ("faithful", "fixed")}
    stored = torch.stack([e[0], e[0] + e[2], e[3], e[2], e[1] + e[3]])
    for bank in banks.values():
        bank.update(stored, torch.tensor([0, 0, 0, 1, 2]), e[:1], torch.tensor([0]))
    before = {k: b.memory.clone() for k, b in banks.items()}
    args = (banks, e[1][None], torch.tensor([0]), (e[0] + e[1])[None], torch.tensor([0]))
    # against e0 + e1 the slots of class 0 score 0.71, 0.5, 0: slot 2 goes; released: row 2 is overwritten
    right = {"fixed": {(0, 2)}, "faithful": {(2, 0), (2, 1), (2, 2)}}
    _status(ex.check_replaced_slots(right, *args), "pass", "fixed [(0, 2)]")
    _status(ex.check_replaced_slots({k: list(v) for k, v in right.items()}, *args), "pass")
    assert all(torch.equal(before[k], b.memory) for k, b in banks.items())  # checked on copies
    as_fixed = {"fixed": {(0, 2)}, "faithful": {(0, 2)}}
    _status(ex.check_replaced_slots(as_fixed, *args), "fail", "whole row")
    _status(ex.check_replaced_slots(dict(right, fixed={(0, 1)}), *args), "fail", "least similar")
    _status(ex.check_replaced_slots({"fixed": {(0, 2)}}, *args), "fail", "expected a dict with keys")
    _status(ex.check_replaced_slots({"fixed": [1], "faithful": []}, *args), "fail", "(class, slot) pairs")
    _all_modes(ex.check_replaced_slots, dict(right, faithful={(2, 0)}), *args)


def test_memory_gradient(toy_bank):
    banks, sketches, photos, labels = toy_bank
    centres = {0: sketches[[0, 1, 3]].mean(0), 1: sketches[2]}
    fixed = torch.zeros_like(photos)
    for p, c in enumerate(labels.tolist()):
        if c in centres:  # d(1 - mean cos)/df for the 4 counted photos, from the formula
            f, m = photos[p], centres[c]
            cos = (f @ m) / (f.norm() * m.norm())
            fixed[p] = -(m / (f.norm() * m.norm()) - cos * f / f.norm() ** 2) / 4
    right = {"fixed": fixed, "faithful": torch.zeros_like(photos)}
    _status(ex.check_memory_gradient(right, banks, photos, labels), "pass", "faithful 0.0000")
    _status(ex.check_memory_gradient(dict(right, faithful=fixed), banks, photos, labels), "fail", "detached")
    _status(ex.check_memory_gradient(dict(right, fixed=-fixed), banks, photos, labels), "fail", "sign")
    _status(ex.check_memory_gradient(dict(right, fixed=4 * fixed), banks, photos, labels), "fail", "factor 4")
    _status(ex.check_memory_gradient(dict(right, fixed=fixed[:2]), banks, photos, labels), "fail", "shape")
    _all_modes(ex.check_memory_gradient, dict(right, fixed=fixed * 1.1), banks, photos, labels)


# ---------------------------------------------------------------------------------------------------
# 00 · setup, 05 · ablations, 07 · retrieval explorer (answers computed here from the fields, by hand)
# ---------------------------------------------------------------------------------------------------
def test_quirk_in_force():
    configs = {
        "fixed": get_preset("emoji-quick"),
        "faithful": get_preset("emoji-quick", faithful=True),
        "explicit": get_preset("emoji-quick", faithful=True, head_bias="imagenet"),
    }
    right = {"fixed": "imagenet", "faithful": "random", "explicit": "imagenet"}
    _status(ex.check_quirk_in_force(right, configs), "pass", "faithful 'random'")
    _status(ex.check_quirk_in_force(dict(right, fixed=None), configs), "fail", "raw field")
    _status(ex.check_quirk_in_force(dict(right, explicit="random"), configs), "fail", "explicit value wins")
    _status(ex.check_quirk_in_force({"fixed": "imagenet"}, configs), "fail", "expected a dict")
    _all_modes(ex.check_quirk_in_force, dict(right, faithful="imagenet"), configs)


def test_images_per_step():
    dsn = get_preset("cpu-quick", augment_views=3)  # S 4, P 8
    configs = {"dsn": dsn, "sake": dsn.replace(use_contrastive=False, use_memory=False)}
    assert ex.images_per_step(configs["dsn"]) == 12 * 4 and ex.images_per_step(configs["sake"]) == 12
    right = {"dsn": 48, "sake": 12}
    _status(ex.check_images_per_step(right, configs), "pass", "dsn 48; sake 12")
    _status(ex.check_images_per_step(dict(right, sake=48), configs), "fail", "without SupCon")
    _status(ex.check_images_per_step(dict(right, dsn=36), configs), "fail", "once plain")
    _all_modes(ex.check_images_per_step, dict(right, dsn=47), configs)


def test_quirks_differ():
    a, b = get_preset("tuberlin-released"), get_preset("tuberlin-paper")
    right = {
        name
        for name, (released, fixed) in QUIRKS.items()
        if released != fixed and a.quirk(name) != b.quirk(name)
    }
    assert len(right) > len(set(a.diff(b)) - {"output_dir", "preset", "notes"})  # more behaviours than fields
    _status(ex.check_quirks_differ(right, a, b), "pass", f"{len(right)} behaviours differ")
    _status(ex.check_quirks_differ(list(right), a, b), "pass")
    _status(ex.check_quirks_differ(set(a.diff(b)), a, b), "fail", "raw fields")
    _status(ex.check_quirks_differ("head_bias", a, b), "fail", "set of field names")
    _all_modes(ex.check_quirks_differ, right - {"head_bias"}, a, b)


@pytest.fixture()
def ablation_runs():
    """Two rows with three seeds and one with a single seed, as run_ablations returns them."""
    maps = {"base": [0.20, 0.22, 0.27], "+ a": [0.30, 0.25, 0.26], "+ b": [0.24]}
    rows = [
        {"run": r, "seed": s + 1, "mAP@all": v, "P@100": v / 10, "train seconds": 1.0}
        for r, vs in maps.items()
        for s, v in enumerate(vs)
    ]
    return pd.DataFrame(rows), maps


def test_ablation_stats(ablation_runs):
    runs, maps = ablation_runs
    # the checker's statistics are ablation_table's (exercises may not import course: same layer)
    pd.testing.assert_frame_equal(ex.seed_stats(runs), ablation_table(runs)["mAP@all"])
    right = {
        r: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else math.nan) for r, v in maps.items()
    }
    _status(ex.check_ablation_stats(right, runs), "pass", "3 runs (seeds per run: [1, 3])")
    population = {r: (statistics.mean(v), statistics.pstdev(v)) for r, v in maps.items()}
    _status(ex.check_ablation_stats(population, runs), "fail", "sample std")
    _status(ex.check_ablation_stats(dict(right, base=0.24), runs), "fail", "expected (mean, std)")
    _all_modes(ex.check_ablation_stats, dict(right, base=(0.24, right["base"][1])), runs)


def test_best_term(ablation_runs):
    runs, maps = ablation_runs
    table = ablation_table(runs)
    gains = {r: statistics.mean(maps[r]) - statistics.mean(maps["base"]) for r in ("+ a", "+ b")}
    best = max(gains, key=gains.get)
    other = min(gains, key=gains.get)
    assert gains[best] > gains[other]
    res = ex.check_best_term(best, table, "base", ("+ a", "+ b"), predicted=other)
    _status(res, "pass", f"{best} {gains[best]:+.4f}", "prediction '" + other + "': wrong")
    _status(ex.check_best_term("+ c", table, "base", ("+ a", "+ b")), "fail", "expected one of")
    _status(ex.check_best_term(["+ a"], table, "base", ("+ a", "+ b")), "fail", "expected one of")
    _all_modes(ex.check_best_term, other, table, "base", ("+ a", "+ b"))
    tied = ablation_table(runs.assign(**{"mAP@all": 0.5}))
    for row in ("+ a", "+ b"):
        _status(ex.check_best_term(row, tied, "base", ("+ a", "+ b")), "pass")


def test_changed_fields():
    base = get_preset("emoji-quick")
    plus = base.replace(use_memory=False)
    faithful_row = base.replace(memory_grad=False, memory_row_overwrite=True)
    right = {"use_memory", "memory_grad", "memory_row_overwrite"}
    _status(ex.check_changed_fields(right, plus, faithful_row), "pass", "memory_grad: True -> False")
    _status(
        ex.check_changed_fields(right - {"use_memory"}, plus, faithful_row), "fail", "missing ['use_memory']"
    )
    _status(
        ex.check_changed_fields(right | {"faithful"}, plus, faithful_row), "fail", "does not set faithful"
    )
    _all_modes(ex.check_changed_fields, {"memory_grad"}, plus, faithful_row)


@pytest.fixture()
def explorer(retrieval):
    """An explorer over the retrieval fixture: "DSN" its features, "before" a random projection of them."""
    q, ql, g, gl = retrieval
    w = np.random.default_rng(2).normal(size=(8, 8))
    sets = [FeatureSet("DSN", g, q), FeatureSet("before", g @ w, q @ w)]
    return Explorer(sets, gl, ["cat", "dog", "owl", "bee"], query_labels=ql)


def _nearest(q, g):
    return np.array([np.argsort(np.linalg.norm(g - x, axis=1), kind="stable")[0] for x in q])


def test_wrong_top1(explorer, retrieval):
    q, ql, g, gl = retrieval
    right_top1 = gl[_nearest(q, g)] == ql
    assert right_top1.any() and not right_top1.all()
    wrong, right = int(np.flatnonzero(~right_top1)[0]), int(np.flatnonzero(right_top1)[0])
    _status(ex.check_wrong_top1(wrong, explorer), "pass", f"query {wrong} (")
    _status(ex.check_wrong_top1(np.int64(wrong), explorer), "pass")
    _status(ex.check_wrong_top1(len(q), explorer), "fail", "expected a query index")
    _all_modes(ex.check_wrong_top1, right, explorer)


def test_first_hit_rank(explorer, retrieval):
    q, ql, g, gl = retrieval
    i = next(i for i in range(len(q)) if _ranks(*retrieval, i)[0] > 2)  # the first hit not at the top
    right = int(_ranks(*retrieval, i)[0])
    _status(ex.check_first_hit_rank(right, explorer, i), "pass", f"rank {right} of {len(g)}")
    _status(ex.check_first_hit_rank(right - 1, explorer, i), "fail", "Ranks start at 1")
    _all_modes(ex.check_first_hit_rank, right + 1, explorer, i)


def test_top1_accuracy(explorer, retrieval):
    q, ql, g, gl = retrieval
    fs = explorer.sets["before"]
    right = {
        "DSN": (gl[_nearest(q, g)] == ql).mean(),
        "before": (gl[_nearest(fs.queries, fs.gallery)] == ql).mean(),
    }
    assert 0 < right["DSN"] < 1
    _status(ex.check_top1_accuracy(right, explorer), "pass", f"of {len(q)} sketches")
    counts = {k: v * len(q) for k, v in right.items()}
    _status(ex.check_top1_accuracy(counts, explorer), "fail", "a count")
    _status(ex.check_top1_accuracy({"DSN": right["DSN"]}, explorer), "fail", "expected a dict")
    _all_modes(ex.check_top1_accuracy, dict(right, DSN=right["DSN"] + 0.01), explorer)


# ---------------------------------------------------------------------------------------------------
# the notebooks, the solutions, the logic rule
# ---------------------------------------------------------------------------------------------------
def _exercise_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if tnb.EXERCISE_TAG in c.get("metadata", {}).get("tags", [])]


def _solution(name: str) -> nbformat.NotebookNode:
    return jupytext.read(SOLUTIONS / WITH_EXERCISES[name])


@pytest.mark.parametrize("name", list(WITH_EXERCISES))
def test_solutions_answer_the_notebooks_exercises(name):
    """Same exercises, same order; the notebook's skeleton leaves the answer None, the solution sets it."""
    nb, sol = tnb._read(tnb.NB_DIR / name), _solution(name)
    asked, answered = _exercise_cells(nb), _exercise_cells(sol)
    ids = [HEADER.search(c.source).group(1) if HEADER.search(c.source) else None for c in asked]
    assert 3 <= len(asked) <= 5 and None not in ids, (
        f"{name}: exercise cells {ids} (3 to 5, each '# Exercise NN.k')"
    )
    assert [HEADER.search(c.source).group(1) for c in answered] == ids, f"{WITH_EXERCISES[name]} vs {name}"
    assert all(c.cell_type == "code" for c in asked + answered)
    for cell, sol_cell in zip(asked, answered):
        answer = re.search(r"^(\w+) = None  # YOUR CODE HERE", cell.source, re.M)
        assert answer, f"{name}: exercise cell without 'NAME = None  # YOUR CODE HERE': {cell.source[:80]!r}"
        assert "YOUR CODE HERE" not in sol_cell.source
        assert re.search(rf"^\s*{answer.group(1)} = (?!None)", sol_cell.source, re.M), answer.group(1)
    checks = [c.source for c in sol.cells if c.cell_type == "code" and "ex.check_" in c.source]
    assert len(checks) == len(answered) and all("strict=True" in c for c in checks)
    assert not tnb.logic_problems(sol, WITH_EXERCISES[name])  # the rule holds outside the exercise cells


def test_logic_rule_exempts_exercise_cells_only():
    loss = "def my_loss(x):\n    return x\n"
    loop = "for b in data:\n    loss(b).backward()\n"
    for tags, exempt in (
        ([tnb.EXERCISE_TAG], True),
        ([], False),
        (["exercise-check"], False),
        (["parameters"], False),
    ):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in (loss, loop)])
        for cell in nb.cells:
            cell.metadata["tags"] = list(tags)
        assert (tnb.logic_problems(nb, "x") == []) == exempt, tags
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(loss), nbformat.v4.new_code_cell(loop)])
    nb.cells[0].metadata["tags"] = [tnb.EXERCISE_TAG]
    assert [p.split(":")[0] for p in tnb.logic_problems(nb, "x")] == ["x, code cell 1"]


def _with_solutions(name: str) -> nbformat.NotebookNode:
    nb = tnb._read(tnb.NB_DIR / name)
    answers = iter(_exercise_cells(_solution(name)))
    for i, cell in enumerate(nb.cells):
        if tnb.EXERCISE_TAG in cell.get("metadata", {}).get("tags", []):
            nb.cells[i] = nbformat.v4.new_code_cell(next(answers).source, metadata=dict(cell.metadata))
    return nb


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(WITH_EXERCISES))
def test_notebook_runs_with_its_solutions_strict(name, tmp_path, monkeypatch, colab_like):  # noqa: F811
    """The notebook with every exercise cell replaced by its solution, in the Colab-like runtime of
    test_notebooks, strict: a wrong or missing answer fails the run."""
    merged = _with_solutions(name)
    real_read = tnb._read
    monkeypatch.setattr(tnb, "_read", lambda path: merged if Path(path).name == name else real_read(path))
    monkeypatch.setenv(ex.STRICT_ENV, "1")
    tnb._execute_colab_like(name, tmp_path / "runtime", tmp_path / "drive", colab_like, monkeypatch)
