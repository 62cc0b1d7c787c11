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
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch
import torch.nn.functional as F

from dsn_lab import exercises as ex
from dsn_lab.config import get_preset
from dsn_lab.data import get_dataset
from dsn_lab.data.batching import paired_loader_from_config
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.losses import SupConLoss
from dsn_lab.step import dsn_losses
from dsn_lab.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_notebooks as tnb  # noqa: E402
from test_notebooks import colab_like  # noqa: E402, F401 - the session fixture of the Colab-like runtime

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "solutions"
# notebook -> its solutions; the notebooks without exercises yet are not listed
WITH_EXERCISES = {
    "01_data_preparation.ipynb": "01_data_preparation_solutions.py",
    "03_training.ipynb": "03_training_solutions.py",
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
