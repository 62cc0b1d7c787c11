"""Feature extraction and its on-disk cache: hits, misses, stale entries never used."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from dsn_lab import embed
from dsn_lab.checkpoint import load_trained_model
from dsn_lab.config import get_preset
from dsn_lab.data import get_dataset
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.metrics import evaluate_retrieval
from dsn_lab.model import build_model
from dsn_lab.provenance import ENVIRONMENT_JSON, environment_record
from dsn_lab.train import train


class Out(NamedTuple):
    logits: torch.Tensor
    kd_logits: torch.Tensor
    code: torch.Tensor
    features: torch.Tensor


class Tiny(nn.Module):
    """A model with the DSNModel call signature; the domain flag shifts the code, so it must be passed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm1d(6)
        self.hash = nn.Linear(6, 4)
        self.cls = nn.Linear(4, 3)

    def forward(self, x, domain):
        f = self.bn(self.conv(x).mean((2, 3)))
        code = self.hash(f) + float(domain if isinstance(domain, int) else domain.float().mean())
        return Out(self.cls(code), torch.zeros(len(x), 10), code, f)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_emojisketch(tmp_path_factory.mktemp("data") / "synth", per_class=3, size=24)


def _ds(root: Path, domain: str = "photo"):
    return get_dataset("emojisketch", root, split="zero", domain=domain, verbose=False)


def _reference(model: nn.Module, ds, domain: int, size: int) -> np.ndarray:
    from dsn_lab.data.transforms import eval_transform

    tf = eval_transform(size)
    model.eval()
    with torch.no_grad():
        x = torch.stack([tf(ds.load_image(i)[0]) for i in range(len(ds))])
        code = model(x, domain).code.double()
    return (code / code.norm(dim=1, keepdim=True)).numpy()


def test_features_match_a_direct_forward_in_dataset_order(synth: Path) -> None:
    torch.manual_seed(0)
    model = Tiny().train()
    ds = _ds(synth)
    feats, labels = embed.extract_features(model, ds, domain="photo", batch_size=5, image_size=24)
    assert model.training  # mode restored
    assert feats.dtype == np.float32 and feats.shape == (len(ds), 4)
    assert labels.tolist() == [label for _, label in ds.samples]
    np.testing.assert_allclose(feats, _reference(model, ds, 1, 24), rtol=1e-5, atol=1e-6)
    sk, _ = embed.extract_features(model, ds, domain=0, batch_size=5, image_size=24)
    assert not np.allclose(sk, feats)  # the domain flag reaches the model
    raw, _ = embed.extract_features(model, ds, domain=1, image_size=24, output="features", normalize=False)
    assert raw.shape == (len(ds), 6)


def test_cache_hit_miss_and_stale_entries(synth: Path, tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = Tiny()
    ds = _ds(synth)
    calls = {"n": 0}
    real = embed.compute_features

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(embed, "compute_features", counting)
    kw = dict(domain=1, batch_size=8, image_size=24, cache_dir=tmp_path / "cache")
    first = embed.extract_features(model, ds, **kw)
    assert calls["n"] == 1 and len(embed.cache_entries(tmp_path / "cache")) == 1
    again = embed.extract_features(model, ds, **kw)  # hit: nothing recomputed, same arrays
    assert calls["n"] == 1
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])

    # weights changed: the old entry is stale and must not be used
    with torch.no_grad():
        model.hash.weight.add_(0.5)
    changed = embed.extract_features(model, ds, **kw)
    assert calls["n"] == 2 and not np.allclose(changed[0], first[0])
    np.testing.assert_allclose(changed[0], _reference(model, ds, 1, 24), rtol=1e-5, atol=1e-6)

    # another transform (image size), another domain flag, another output: other entries
    embed.extract_features(model, ds, **{**kw, "image_size": 20})
    embed.extract_features(model, ds, **{**kw, "domain": 0})
    embed.extract_features(model, ds, **kw, output="features")
    assert calls["n"] == 5

    # an image replaced on disk (same name): stale
    path = ds.path(0)
    img_bytes = path.read_bytes()
    from PIL import Image

    Image.new("RGB", (24, 24), (0, 0, 0)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    replaced = embed.extract_features(model, ds, **kw)
    assert calls["n"] == 6 and not np.allclose(replaced[0][0], changed[0][0])
    path.write_bytes(img_bytes)

    # a model_key (a checkpoint hash) replaces the state-dict hash
    embed.extract_features(model, ds, **kw, model_key="ckpt-a")
    embed.extract_features(model, ds, **kw, model_key="ckpt-a")
    embed.extract_features(model, ds, **kw, model_key="ckpt-b")
    assert calls["n"] == 8


def test_state_dict_hash_tracks_weights_and_buffers() -> None:
    torch.manual_seed(0)
    a = Tiny()
    h = embed.state_dict_hash(a)
    assert h == embed.state_dict_hash(a)
    a.bn.running_mean.add_(1.0)  # a buffer counts too
    assert embed.state_dict_hash(a) != h


def test_frozen_feature_cache_keys_the_backbone_not_the_head(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DSN_LAB_DATA", str(tmp_path / "data"))
    from dsn_lab.data import default_root

    cfg = get_preset("cpu-quick")
    model = build_model(cfg, 5)
    got = embed.frozen_feature_cache("emojisketch", cfg.backbone, model)
    assert got["cache_dir"] == default_root("emojisketch").parent / "features"
    assert got["model_key"] == f"frozen-{cfg.backbone}-{embed.state_dict_hash(model.backbone)}"
    with torch.no_grad():
        model.hashing.weight.add_(1.0)  # the head: the pooled feature, and so the key, stay
        assert embed.frozen_feature_cache("emojisketch", cfg.backbone, model) == got
        next(model.backbone.parameters()).add_(1.0)  # the backbone's weights: a new key
    assert embed.frozen_feature_cache("emojisketch", cfg.backbone, model)["model_key"] != got["model_key"]


def test_errors_are_clear(synth: Path) -> None:
    ds = _ds(synth)
    with pytest.raises(ValueError, match="image_size"):
        embed.extract_features(Tiny(), ds, domain=1)
    with pytest.raises(ValueError, match="domain"):
        embed.extract_features(Tiny(), ds, domain="drawing", image_size=24)
    with pytest.raises(ValueError, match="output"):
        embed.extract_features(Tiny(), ds, domain=1, image_size=24, output="pool")


def test_paper_results_are_the_published_numbers() -> None:
    """mAP@all / P@100 on the unseen classes as printed in the papers (DESIGN.md, Fidelity note 6), written
    here as literals: a typo or a swapped column in the package's record fails."""
    assert embed.PAPER_RESULTS == {
        "sketchy-s1": {  # Sketchy-Ext, split 1 (100 seen / 25 unseen classes)
            "SAKE (paper)": {"mAP@all": 0.547, "P@100": 0.692},
            "DSN (paper)": {"mAP@all": 0.583, "P@100": 0.704},
        },
        "tuberlin": {  # TU-Berlin-Ext (220 / 30)
            "SAKE (paper)": {"mAP@all": 0.475, "P@100": 0.599},
            "DSN (paper)": {"mAP@all": 0.484, "P@100": 0.591},
        },
    }


def _result(**kw) -> dict:
    res = {
        "dataset": "sketchy-s1",
        "split": "zero",
        "n_queries": 15229,
        "n_gallery": 17101,
        "hashing_dim": 64,
        "real": {"mAP@all": 0.51234, "P@100": 0.6, "mAP@200": 0.55, "P@200": 0.58},
        "binary": {"mAP@all": 0.4, "P@100": 0.5, "mAP@200": 0.45, "P@200": 0.48},
        "paper": {"Method X (paper)": {"mAP@all": 0.1234, "P@100": 0.9}},
    }
    return {**res, **kw}


def test_results_table_layout() -> None:
    """Every row is as wide as the header and each number sits under its own column, rounded to three
    places; a published row without mAP@200 / P@200 shows dashes; the real row is named after the hashing
    size, the binary row after the ITQ variant."""
    lines = embed.format_results_table(_result()).splitlines()
    assert lines[0] == "sketchy-s1 -- unseen classes (zero split): 15,229 sketch queries, 17,101 photos"
    head = lines[1]
    assert head.split() == ["method", *embed.METRIC_COLUMNS] and set(lines[2]) == {"-"}
    assert [line.split("  ")[0] for line in lines[3:]] == [
        "Method X (paper)",
        "this run, real-valued (64-d)",
        "this run, binary ITQ (64 bits)",
    ]
    assert all(len(line) == len(head) for line in lines[1:])

    def cell(line: str, column: str) -> str:  # the text right-aligned under the column's header
        end = head.index(f" {column}") + 1 + len(column)
        return line[end - 9 : end].strip()

    paper, real, binary = lines[3:]
    assert [cell(paper, c) for c in embed.METRIC_COLUMNS] == ["0.123", "0.900", "-", "-"]
    assert [cell(real, c) for c in embed.METRIC_COLUMNS] == ["0.512", "0.600", "0.550", "0.580"]
    assert [cell(binary, c) for c in embed.METRIC_COLUMNS] == ["0.400", "0.500", "0.450", "0.480"]
    released = embed.format_results_table(_result(itq_variant="released")).splitlines()
    assert released[-1].startswith("this run, binary ITQ (64 bits, released)")
    # no published row (EmojiSketch, any extension): the table says so; binary=False: no binary row
    ext = _result(dataset="emojisketch", paper={})
    del ext["binary"]
    text = embed.format_results_table(ext)
    assert text.splitlines()[-1] == "(no published numbers for this dataset/split: an extension)"
    assert "paper" not in text and "binary" not in text


def test_evaluate_checkpoint_carries_the_training_environment(synth: Path, tmp_path: Path) -> None:
    """From the checkpoint itself; for a checkpoint without one (older runs), the run folder's
    environment.json; None when neither exists. The evaluating process's record comes along."""
    cfg = get_preset(
        "cpu-quick", output_dir=str(tmp_path / "run"), image_size=24, kdneg=0.0, steps_per_epoch=1
    )
    res = train(cfg, data_root=synth, verbose=False)
    kw = dict(data_root=synth, device="cpu", cache_dir=None, binary=False, progress=False)
    got = embed.evaluate_checkpoint(res.final_checkpoint, **kw)
    assert got["dataset"] == "emojisketch" and got["paper"] == {}  # no published row for an extension
    on_disk = json.loads((tmp_path / "run" / ENVIRONMENT_JSON).read_text())
    assert got["environment"] == on_disk
    assert got["eval_environment"]["packages"] == environment_record()["packages"]

    ckpt = torch.load(res.final_checkpoint, weights_only=True)
    del ckpt["environment"]
    old = tmp_path / "run" / "old.pt"
    torch.save(ckpt, old)
    on_disk["python"] = "marker: read from the folder"
    (tmp_path / "run" / ENVIRONMENT_JSON).write_text(json.dumps(on_disk))
    assert embed.evaluate_checkpoint(old, **kw)["environment"]["python"] == "marker: read from the folder"
    (tmp_path / "run" / ENVIRONMENT_JSON).unlink()
    assert embed.evaluate_checkpoint(old, **kw)["environment"] is None


def test_evaluate_checkpoint_scores_the_codes_it_returns(synth: Path, tmp_path: Path) -> None:
    """``features=True`` hands back what was scored: the checkpoint's L2-normalised codes of the split, in
    dataset order, and the metrics are those of exactly these arrays."""
    cfg = get_preset(
        "cpu-quick", output_dir=str(tmp_path / "run"), image_size=24, kdneg=0.0, steps_per_epoch=1
    )
    ckpt = train(cfg, data_root=synth, verbose=False).final_checkpoint
    kw = dict(data_root=synth, device="cpu", binary=False, progress=False)
    got = embed.evaluate_checkpoint(ckpt, features=True, **kw)
    q, ql, g, gl = got["features"]
    model = load_trained_model(ckpt)[0]
    np.testing.assert_allclose(q, _reference(model, _ds(synth, "sketch"), 0, 24), atol=1e-5)
    np.testing.assert_allclose(g, _reference(model, _ds(synth, "photo"), 1, 24), atol=1e-5)
    assert list(ql) == _ds(synth, "sketch").labels and list(gl) == _ds(synth, "photo").labels
    ref = evaluate_retrieval(q, ql, g, gl)
    assert got["real"] == {k: float(ref[k]) for k in embed.METRIC_COLUMNS}
    assert "features" not in embed.evaluate_checkpoint(ckpt, **kw)  # the default result stays JSON


def test_frozen_backbone_scores_the_pooled_imagenet_features(synth: Path) -> None:
    """The frozen-ImageNet floor (``python -m dsn_lab emojisketch --baseline``) scores the same pooled
    features as the demo's frozen row (the untrained DSN model's ``features`` output), ranked by cosine."""
    got = embed.evaluate_frozen_backbone(synth, image_size=32)
    model = build_model(get_preset("emoji-quick"), 6)
    kw = dict(output="features", normalize=False, image_size=32, device="cpu")
    q, ql = embed.extract_features(model, _ds(synth, "sketch"), domain=0, **kw)
    g, gl = embed.extract_features(model, _ds(synth, "photo"), domain=1, **kw)
    for distance, label in (("cosine", "cosine"), ("euclidean", "euclidean, raw features")):
        ref = evaluate_retrieval(q, ql, g, gl, distance=distance)
        for k in ("mAP@all", "mAP@200", "P@100", "P@200"):
            assert got[f"{k} ({label})"] == pytest.approx(ref[k], abs=1e-9)
    assert (got["classes"], got["queries"], got["gallery"]) == (4.0, 12.0, 12.0)
    assert 0.0 < got["mAP@all (random ranking)"] < 1.0
    small = embed.evaluate_frozen_backbone(synth, image_size=32, max_per_split=5)
    assert small["queries"] == small["gallery"] == 5.0
