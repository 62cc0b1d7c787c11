"""DistributedDataParallel: 2 CPU processes (gloo) under torchrun match one process on tiny data.

BatchNorm statistics are per process (each sees half of the global batch, as with the released
nn.DataParallel), so the test model has its BatchNorm layers removed: then the batch content, SupCon over the
gathered codes, the memory bank fed with gathered features and the averaged gradient must all agree with one
process to float precision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dsn_lab.data.fixtures import make_synthetic_emojisketch

REPO = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent(
    """
    import sys
    import torch
    import dsn_lab.train
    from dsn_lab.config import get_preset
    from dsn_lab.train import train

    build = dsn_lab.train.build_model

    def build_without_batchnorm(cfg, num_classes):
        # BatchNorm statistics are per process under DDP (as under the released nn.DataParallel): the one
        # thing that may differ. Without it, one and two processes must agree to float precision.
        model = build(cfg, num_classes)
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                    setattr(module, name, torch.nn.Identity())
        return model

    dsn_lab.train.build_model = build_without_batchnorm  # the name the trainer calls

    root, out = sys.argv[1], sys.argv[2]
    cfg = get_preset("cpu-quick", output_dir=out, epochs=1, steps_per_epoch=3, image_size=32, kdneg=0.0,
                     sketches_per_batch=4, photos_per_batch=8, deterministic=True, log_every=1, lr=1e-3)
    train(cfg, data_root=root, verbose=False)
    """
)


def _run(args: list[str], tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=3, size=32)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    _run([sys.executable, str(driver), str(root), str(tmp_path / "one")], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(driver),
            str(root),
            str(tmp_path / "two"),
        ],
        tmp_path,
    )
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert one["position"] == {**two["position"], "elapsed": one["position"]["elapsed"]}

    hist1 = [r for r in json.loads(one["history"]) if r["kind"] == "step"]
    hist2 = [r for r in json.loads(two["history"]) if r["kind"] == "step"]
    assert len(hist1) == len(hist2) == 3
    for a, b in zip(hist1, hist2):
        for key in ("loss_ce", "loss_contrastive", "loss_memory"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key

    # weights: the updates (final - initial) agree; both runs start from the same seeded initialisation
    from dsn_lab.checkpoint import checkpoint_config, seed_all
    from dsn_lab.model import build_model

    cfg = checkpoint_config(one)
    seed_all(cfg.seed)
    init = build_model(cfg, one["num_classes"]).state_dict()  # BatchNorm keys unused below
    num = den = 0.0
    for k, v in one["model"].items():
        if v.is_floating_point():
            d1, d2 = v - init[k], two["model"][k] - init[k]
            num += float((d1 - d2).pow(2).sum())
            den += float(d1.pow(2).sum())
    rel = (num / den) ** 0.5
    print(f"relative difference of the weight updates: {rel:.4f}")
    assert den > 0 and rel < 1e-3, f"relative difference of the weight updates {rel:.4f}"
    # the memory bank is filled from all ranks: the same bank as one process
    assert torch.equal(one["memory"]["fill"], two["memory"]["fill"])
    # bank entries are features of the two runs' models, whose updates agree to 1e-3 (above): same tolerance
    torch.testing.assert_close(one["memory"]["memory"], two["memory"]["memory"], rtol=1e-3, atol=1e-4)
