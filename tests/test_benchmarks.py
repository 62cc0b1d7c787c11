"""The GPU check runs end to end at toy size on the CPU and prints its whole table."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_estimate_hours_adds_training_validation_and_evaluation() -> None:
    gpu = _load("gpu_check")
    steps = min(55_252 // 32, 68_401 // 64)
    assert steps == 1068
    assert gpu.estimate_hours(1.0, 0.0, 0.0, epochs=1) == pytest.approx(steps / 3600)
    assert gpu.estimate_hours(0.0, 1.0, 36.0, epochs=2) == pytest.approx((2 * 300 * 96 + 36) / 3600)


@pytest.mark.slow
def test_gpu_check_toy_run_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = _load("gpu_check")
    assert gpu.main(["--toy", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| sketchy-s1-")]
    assert len(rows) == 4 and sum("released" in r for r in rows) == 1
    for row in rows:
        s_per_step, images_per_s = (float(c) for c in row.split("|")[2:4])
        assert s_per_step > 0 and math.isclose(images_per_s, 18 / s_per_step, rel_tol=0.05, abs_tol=1)
    assert "estimated hours, one sketchy-s1-released run" in out and "needs CUDA" in out


@pytest.mark.usefixtures("isolated_cache")
def test_emoji_resolution_prints_a_row_per_size(synth, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("bench_emoji_resolution")
    bench.main(["--data-root", str(synth), "--sizes", "32", "48"])
    out = capsys.readouterr().out.splitlines()
    assert "emojisketch val: 6 sketch queries x 6 photos" in out[0]  # 2 val concepts, 3 of each
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["32", "48"]
    for r in rows:
        frozen, head = float(r[1]), float(r[2])
        assert 0.0 < frozen <= 1.0 and 0.0 < head <= 1.0
        assert r[3].startswith("(") and r[-1].endswith("s]")
