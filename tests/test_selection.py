"""Model selection (dsn_lab.selection): the three rules, in training runs and on their own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from looplib import loop_cfg as _cfg
from looplib import state_equal as _state_equal
from torch import nn

import dsn_lab.selection as S
from dsn_lab.data import get_dataset
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.embed import extract_features
from dsn_lab.metrics import evaluate_retrieval
from dsn_lab.model import build_model
from dsn_lab.selection import LastEpoch, MapSelector, PairedSelector, make_selector
from dsn_lab.train import train


def _data(root: Path) -> dict:
    sk, ph = (
        get_dataset("emojisketch", root, split="train", domain=d, verbose=False) for d in ("sketch", "photo")
    )
    return {"sketch": sk, "photo": ph, "root": root, "classes": list(sk.classes)}


def test_factory_picks_the_rule_and_the_training_sketches(synth: Path, tmp_path: Path) -> None:
    data = _data(synth)
    sel, sketches = make_selector(_cfg(tmp_path), data)
    assert isinstance(sel, MapSelector) and sel.name == "val_mAP@all" and sketches is data["sketch"]
    sel, sketches = make_selector(_cfg(tmp_path, selection="last"), data)
    assert isinstance(sel, LastEpoch) and sel(nn.Identity(), torch.device("cpu")) == {}
    sel, sketches = make_selector(_cfg(tmp_path, selection="accuracy", val_fraction=0.34), data)
    assert isinstance(sel, PairedSelector) and sel.name == "val_acc"
    held = {rel for rel, _ in sel.heldout.samples}
    kept = {rel for rel, _ in sketches.samples}
    assert held and not held & kept and held | kept == {rel for rel, _ in data["sketch"].samples}


def test_paired_rule_redraws_pairs_only_when_asked(synth: Path, tmp_path: Path) -> None:
    data = _data(synth)
    fixed, _ = make_selector(_cfg(tmp_path, selection="accuracy", val_fraction=0.34), data)
    assert fixed.pairs(1) == fixed.pairs(2) == fixed.pairs(1)
    redrawn, _ = make_selector(_cfg(tmp_path, selection="released", faithful=True, val_fraction=0.34), data)
    assert redrawn.rule.redraw_pairs and redrawn.pairs(1) == redrawn.pairs(1) != redrawn.pairs(2)
    for i, j in redrawn.pairs(3):  # each photo with a held-out sketch of its own class
        assert redrawn.heldout.samples[i][1] == redrawn.photos.samples[j][1]


def test_map_rule_is_retrieval_map_of_the_held_out_concepts(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    data = _data(synth)
    sel, _ = make_selector(cfg, data)
    torch.manual_seed(0)
    model = build_model(cfg, len(data["classes"])).train()
    got = sel(model, torch.device("cpu"))
    assert model.training  # mode restored
    kw = dict(image_size=cfg.image_size, device="cpu")
    q, ql = extract_features(model, sel.query, domain=0, **kw)
    g, gl = extract_features(model, sel.gallery, domain=1, **kw)
    want = evaluate_retrieval(q, ql, g, gl, on_missing="skip")
    assert sel.query.split == sel.gallery.split == "val"
    assert got["val_mAP@all"] == pytest.approx(want["mAP@all"], abs=1e-6)


def test_selection_accuracy_uses_held_out_training_sketches(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path / "run",
        epochs=1,
        steps_per_epoch=2,
        selection="accuracy",
        val_fraction=0.34,
        sketches_per_batch=4,
    )
    res = train(cfg, data_root=synth, verbose=False)
    row = [r for r in res.history if r["kind"] == "epoch"][0]
    assert res.selection == "val_acc" and 0.0 <= row["val_acc"] <= 1.0
    assert 0.0 <= row["val_paired_map"] <= 1.0 and res.best_metric == row["val_acc"]


# A validation curve whose best epoch is neither the first nor the last.
CURVE = (0.30, 0.80, 0.50)


@pytest.mark.parametrize(
    ("selection", "metric", "best_epoch"),
    [
        ("map", "val_mAP@all", 2),  # default rule: retrieval mAP of the held-out concepts
        ("released", "val_paired_map", 2),  # released validate_paired: ITQ mAP of sketch/photo pairs
        ("last", "last_epoch", 3),  # released TU-Berlin: no validation, the last epoch
    ],
)
def test_rule_keeps_the_epoch_of_its_best_score_in_best_pt(
    synth: Path, tmp_path: Path, monkeypatch, selection: str, metric: str, best_epoch: int
) -> None:
    """Each rule on a run whose validation curve is set (the selectors' retrieval scoring returns CURVE,
    epoch by epoch, after computing the real one): best.pt must hold the weights of the chosen epoch."""
    calls: list[float] = []
    real = S.evaluate_retrieval

    def scored(*args, **kwargs):
        res = dict(real(*args, **kwargs))  # the selector's real inputs still go through the metric
        res["mAP@all"] = CURVE[len(calls)]
        calls.append(res["mAP@all"])
        return res

    monkeypatch.setattr(S, "evaluate_retrieval", scored)
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def keep_weights(model, epoch, step):
        weights[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {}

    cfg = _cfg(tmp_path / "run", epochs=3, steps_per_epoch=1, selection=selection, val_fraction=0.34)
    res = train(cfg, data_root=synth, callbacks=[keep_weights], verbose=False)
    rows = [r for r in res.history if r["kind"] == "epoch"]
    assert res.selection == metric and res.best_epoch == best_epoch
    if selection == "last":
        assert calls == [] and all(metric not in r for r in rows)  # nothing is validated
    else:
        assert [r[metric] for r in rows] == list(CURVE)
        assert [r["best"] for r in rows] == [0.30, 0.80, 0.80]
        assert res.best_metric == 0.80
    best = torch.load(res.best_checkpoint, map_location="cpu", weights_only=True)
    assert best["position"]["epoch"] == best_epoch and best["best"]["epoch"] == best_epoch
    assert _state_equal(best["model"], weights[best_epoch])
    if best_epoch != 3:  # the weights did move after the chosen epoch: best.pt is not last.pt
        assert not _state_equal(best["model"], weights[3])


def test_released_selection_on_held_out_concepts_with_one_sketch_each(tmp_path: Path) -> None:
    """EmojiSketch has one sketch per concept, so no training sketch can be held out: the released paired
    score is computed on the held-out *concepts* (val sketches paired with val photos), and the classifier's
    accuracy, meaningless for concepts without a logit, is not reported. faithful=True must train there."""
    one = make_synthetic_emojisketch(tmp_path / "one", per_class=1, size=32)
    cfg = _cfg(tmp_path / "run", faithful=True, val_batches=2, sketches_per_batch=3, photos_per_batch=3)
    res = train(cfg, data_root=one, verbose=False)
    rows = [r for r in res.history if r["kind"] == "epoch"]
    assert res.selection == "val_paired_map" and len(rows) == 2
    assert all(0.0 <= r["val_paired_map"] <= 1.0 and "val_acc" not in r for r in rows)
    assert res.best_metric == max(r["val_paired_map"] for r in rows)
