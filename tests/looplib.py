"""What the training-loop tests share (test_train, test_checkpoint, test_selection): a short deterministic
cpu-quick run on the synthetic EmojiSketch, and weight comparison."""

from __future__ import annotations

from pathlib import Path

import torch

from dsn_lab.config import DSNConfig, get_preset


def loop_cfg(out: Path, **kw) -> DSNConfig:
    """cpu-quick, 2 epochs x 3 steps at 32 px, a checkpoint every step, deterministic, KD mask off."""
    base = dict(
        output_dir=str(out),
        epochs=2,
        steps_per_epoch=3,
        checkpoint_every=1,
        log_every=1,
        deterministic=True,
        image_size=32,
        kdneg=0.0,
    )
    base.update(kw)
    return get_preset("cpu-quick", **base)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
