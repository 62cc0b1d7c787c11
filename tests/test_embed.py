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


def test_corrupt_or_mismatched_cache_entry_is_recomputed(synth: Path, tmp_path: Path, monkeypatch) -> None:
    model = Tiny()
    ds = _ds(synth)
    kw = dict(domain=1, image_size=24, cache_dir=tmp_path)
    ref = embed.extract_features(model, ds, **kw)
    (entry,) = embed.cache_entries(tmp_path)
    entry.write_bytes(entry.read_bytes()[:50])  # truncated
    again = embed.extract_features(model, ds, **kw)
    np.testing.assert_array_equal(ref[0], again[0])
    # an entry whose stored key differs (e.g. a file copied over) is not trusted
    key = str(np.load(entry)["key"])
    with open(entry, "wb") as fh:
        np.savez(fh, key=np.array("other"), feats=np.zeros_like(ref[0]), labels=ref[1], meta=np.array("{}"))
    third = embed.extract_features(model, ds, **kw)
    np.testing.assert_array_equal(ref[0], third[0])
    assert str(np.load(entry)["key"]) == key


def test_state_dict_hash_tracks_weights_and_buffers() -> None:
    torch.manual_seed(0)
    a = Tiny()
    h = embed.state_dict_hash(a)
    assert h == embed.state_dict_hash(a)
    a.bn.running_mean.add_(1.0)  # a buffer counts too
    assert embed.state_dict_hash(a) != h


def test_errors_are_clear(synth: Path) -> None:
    ds = _ds(synth)
    with pytest.raises(ValueError, match="image_size"):
        embed.extract_features(Tiny(), ds, domain=1)
    with pytest.raises(ValueError, match="domain"):
        embed.extract_features(Tiny(), ds, domain="drawing", image_size=24)
    with pytest.raises(ValueError, match="output"):
        embed.extract_features(Tiny(), ds, domain=1, image_size=24, output="pool")


def test_results_table_layout() -> None:
    res = {
        "dataset": "sketchy-s1",
        "split": "zero",
        "n_queries": 15229,
        "n_gallery": 17101,
        "hashing_dim": 64,
        "real": {"mAP@all": 0.5, "P@100": 0.6, "mAP@200": 0.55, "P@200": 0.58},
        "binary": {"mAP@all": 0.4, "P@100": 0.5, "mAP@200": 0.45, "P@200": 0.48},
        "paper": embed.PAPER_RESULTS["sketchy-s1"],
    }
    text = embed.format_results_table(res)
    lines = text.splitlines()
    assert "15,229" in lines[0]
    dsn = next(line for line in lines if line.startswith("DSN (paper)"))
    assert "0.583" in dsn and "0.704" in dsn
    assert any(line.startswith("SAKE (paper)") and "0.547" in line for line in lines)
    assert any("binary ITQ (64 bits)" in line and "0.400" in line for line in lines)


def test_evaluate_checkpoint_carries_the_training_environment(synth: Path, tmp_path: Path) -> None:
    """From the checkpoint itself; for a checkpoint without one (older runs), the run folder's
    environment.json; None when neither exists. The evaluating process's record comes along."""
    cfg = get_preset(
        "cpu-quick", output_dir=str(tmp_path / "run"), image_size=24, kdneg=0.0, steps_per_epoch=1
    )
    res = train(cfg, data_root=synth, verbose=False)
    kw = dict(data_root=synth, device="cpu", cache_dir=None, binary=False, progress=False)
    got = embed.evaluate_checkpoint(res.final_checkpoint, **kw)
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
