"""Numbers the notebooks quote in their text agree with the package: code sizes, batch sizes, loss weights,
benchmark and EmojiSketch counts, preset settings.

Each fact is anchored: a regex over one notebook's markdown (``notebooks/NN_name.py``, jupytext percent
format; whitespace collapsed, so a re-wrapped line still matches) whose groups are compared with values read
from ``dsn_lab``. A sentence that is reworded no longer matches and fails too, naming the fact to update.
EmojiSketch's counts come from the built dataset (its manifest); the notebooks are checked against the
README's card, and the card against the full build when this machine has it (as ``test_train`` uses it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import jupytext
import pytest

from dsn_lab.config import PRESETS, DSNConfig, get_preset
from dsn_lab.data import SPECS
from dsn_lab.data.emojisketch import SPLITS, default_emojisketch_root, is_current, read_manifest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
README = ROOT / "README.md"
NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?")


# ---- what the notebooks are checked against -----------------------------------------------------------
@cache
def _text(notebook: str, kind: str = "markdown") -> str:
    """A notebook's markdown cells (or its whole source, for comments in code), whitespace collapsed."""
    path = NB_DIR / f"{notebook}.py"
    if kind == "markdown":
        cells = jupytext.read(path).cells
        text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", text)


@cache
def _readme_card() -> dict[str, dict[str, int]]:
    """The README's EmojiSketch card as ``{split: {"classes", "sketch", "photo"}}`` (the manifest's keys)."""
    text = README.read_text(encoding="utf-8")
    m = re.search(
        r"^\| split \| concepts \| sketches \| photos \| what \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M
    )
    assert m, "README.md lost its EmojiSketch card ('| split | concepts | sketches | photos | what |')"
    card = {}
    for row in m.group(1).splitlines():
        split, classes, sketches, photos = (c.strip() for c in row.strip("|").split("|")[:4])
        card[split] = {
            k: int(v.replace(",", ""))
            for k, v in zip(("classes", "sketch", "photo"), (classes, sketches, photos))
        }
    assert list(card) == list(SPLITS), f"README card rows {list(card)}, expected {list(SPLITS)}"
    return card


def _card(split: str, key: str) -> int:
    if split == "total":
        return sum(_card(s, key) for s in SPLITS)
    return _readme_card()[split][key]


def _one_sketch_each() -> int:
    """The concept count, after checking that every concept has exactly one sketch (v1's card)."""
    for s in SPLITS:
        assert _card(s, "sketch") == _card(s, "classes"), f"EmojiSketch {s}: sketches != concepts"
    return _card("total", "classes")


def _emoji(field: str) -> Any:
    """One field of every ``emoji-*`` preset; the text says "the emoji-* presets", so they must agree."""
    values = {getattr(cfg, field) for name, cfg in PRESETS.items() if name.startswith("emoji-")}
    assert len(values) == 1, f"the emoji-* presets disagree on {field}: {values}"
    return values.pop()


def _paper(field: str) -> Any:
    """A field shared by the 64-d ``*-paper`` presets (Sketchy split 1 and TU-Berlin share loss weights)."""
    values = {getattr(PRESETS[n], field) for n in ("sketchy-s1-paper", "tuberlin-paper")}
    assert len(values) == 1, f"the *-paper presets disagree on {field}: {values}"
    return values.pop()


def _paper_dims() -> tuple[int, ...]:
    return tuple(sorted({cfg.hashing_dim for name, cfg in PRESETS.items() if "-paper" in name}))


def _sketchy_steps() -> int:
    """Optimiser steps of one released Sketchy epoch: the shorter of the zipped sketch/photo loaders."""
    cfg, spec = get_preset("sketchy-s1-released"), SPECS["sketchy-s1"]
    return min(
        spec.expected["train", "sketch"] // cfg.sketches_per_batch,
        spec.expected["train", "photo"] // cfg.photos_per_batch,
    )


def _ablations() -> dict[str, dict[str, Any]]:
    """Notebook 05's ``ABLATIONS`` parameter, read from its source without running it."""
    tree = ast.parse((NB_DIR / "05_ablations.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ABLATIONS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("notebooks/05_ablations.py has no ABLATIONS = {...} assignment")


def _zero_photos_per_concept() -> float:
    return _card("zero", "photo") / _card("zero", "classes")


def _one_in_batch(classes: int, photos: int) -> float:
    """Chance that a sketch's class is among ``photos`` photos drawn independently over ``classes``."""
    return 1 - (1 - 1 / classes) ** photos


def _first_code_ints(notebook: str, pattern: str) -> tuple[int, ...]:
    m = re.search(pattern, _text(notebook, "source"))
    assert m, f"notebooks/{notebook}.py: no code matches {pattern!r}"
    return tuple(int(g) for g in m.groups())


def _readme_ladder() -> tuple[float, ...]:
    """The best val mAP@all of each row of the README's recipe ladder (bench_emoji_recipe.py), in order."""
    text = README.read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| (?:released settings|\+ [^|]+) \| \d+ \| [\d. ]+ \| \*\*([\d.]+)\*\* \|$", text, re.M
    )
    assert len(rows) == 4, f"README.md's recipe ladder: expected 4 rows, found {len(rows)}"
    return tuple(float(r) for r in rows)


def _config_comment(pattern: str) -> tuple[float, ...]:
    """Numbers quoted in a comment of dsn_lab/config.py (the measurements behind the presets)."""
    text = re.sub(r"\s*#\s*", " ", (ROOT / "dsn_lab" / "config.py").read_text(encoding="utf-8"))
    m = re.search(pattern, text)
    assert m, f"dsn_lab/config.py: no comment matches {pattern!r}"
    return tuple(float(g) for g in m.groups())


def _steps(preset: str) -> int:
    """Optimiser steps of a preset with a fixed step count."""
    cfg = get_preset(preset)
    return cfg.epochs * cfg.steps_per_epoch


def _sci(x: float) -> str:
    """A learning rate as the notebooks write it: 1e-4."""
    return f"{x:.0e}".replace("e-0", "e-")


# ---- the facts -----------------------------------------------------------------------------------------
class Fact(NamedTuple):
    notebook: str
    pattern: str  # one group per quoted value, matched against the whitespace-collapsed text
    expected: Callable[[], tuple[Any, ...]]  # the package's values, one per group
    kind: str = "markdown"  # or "source": a comment in a code cell


FACTS: list[Fact] = [
    # 00: the presets
    Fact("00_setup", r"Sketchy split 1, TU-Berlin; (\d+)-d and (\d+)-d codes", _paper_dims),
    Fact(
        "00_setup",
        r"`emoji-course`, `emoji-demo`, `emoji-quick`: (\d+)-d codes, ([\w-]+) batches of (\d+) sketches "
        r"\+ (\d+) photos",
        lambda: (
            _emoji("hashing_dim"),
            _emoji("batch_sampler").replace("_", "-"),
            _emoji("sketches_per_batch"),
            _emoji("photos_per_batch"),
        ),
    ),
    # 01: EmojiSketch's card, the benchmarks' splits, the batches
    Fact(
        "01_data_preparation",
        r"the (\d+) concepts that match a Sketchy class are the unseen test classes",
        lambda: (_card("zero", "classes"),),
    ),
    Fact(
        "01_data_preparation",
        r"has ([\d,]+) concepts with one sketch each and ([\d,]+) photos: ([\d,]+) training concepts "
        r"\(([\d,]+) photos\), ([\d,]+) training concepts held out for model selection \(([\d,]+) photos\) "
        r"and the ([\d,]+) unseen ones \(([\d,]+) photos, about (\d+) per concept\)",
        lambda: (
            _one_sketch_each(),
            _card("total", "photo"),
            _card("train", "classes"),
            _card("train", "photo"),
            _card("val", "classes"),
            _card("val", "photo"),
            _card("zero", "classes"),
            _card("zero", "photo"),
            _zero_photos_per_concept(),
        ),
    ),
    Fact(
        "01_data_preparation",
        r'VARIANT = "tiny" if QUICK else "full" # EmojiSketch size; full: "full" \(([\d,]+) concepts, '
        r"([\d,]+) images\)",
        lambda: (_card("total", "classes"), _card("total", "sketch") + _card("total", "photo")),
        kind="source",
    ),
    Fact(
        "01_data_preparation",
        r"Sketchy: (\d+) \+ (\d+); the `emoji-\*` presets: (\d+) \+ (\d+); here (\d+) \+ (\d+)",
        lambda: (
            get_preset("sketchy-s1-paper").sketches_per_batch,
            _paper_photos("sketchy-s1-paper"),
            _emoji("sketches_per_batch"),
            _emoji("photos_per_batch"),
            *_first_code_ints(
                "01_data_preparation", r"sketches_per_batch=(\d+), photos_per_batch=(\d+), image_size=96"
            ),
        ),
    ),
    Fact(
        "01_data_preparation",
        r"With Sketchy's (\d+) classes and (\d+) photos per step, a sketch finds a photo of its class in "
        r"the batch about half the time \(\$1 - ([\d.]+)\^\{(\d+)\} \\approx ([\d.]+)\$\)",
        lambda: (
            SPECS["sketchy-s1"].n_seen,
            _paper_photos("sketchy-s1-paper"),
            1 - 1 / SPECS["sketchy-s1"].n_seen,
            _paper_photos("sketchy-s1-paper"),
            _one_in_batch(SPECS["sketchy-s1"].n_seen, _paper_photos("sketchy-s1-paper")),
        ),
    ),
    Fact(
        "01_data_preparation",
        r"with EmojiSketch's (\d+) training concepts and (\d+) photos, about (\d+)% of the time "
        r"\(\$1 - \((\d+)/(\d+)\)\^\{(\d+)\} \\approx ([\d.]+)\$\)",
        lambda: (
            _card("train", "classes"),
            _emoji("photos_per_batch"),
            100 * _one_in_batch(_card("train", "classes"), _emoji("photos_per_batch")),
            _card("train", "classes") - 1,
            _card("train", "classes"),
            _emoji("photos_per_batch"),
            _one_in_batch(_card("train", "classes"), _emoji("photos_per_batch")),
        ),
    ),
    Fact(
        "01_data_preparation",
        r"Sketchy split 2 picks (\d+) classes",
        lambda: (len(SPECS["sketchy-s2"].unseen),),
    ),
    Fact(
        "01_data_preparation",
        r"Split 1's test set: ([\d,]+) sketches and ([\d,]+) photos",
        lambda: (
            SPECS["sketchy-s1"].expected["zero", "sketch"],
            SPECS["sketchy-s1"].expected["zero", "photo"],
        ),
    ),
    Fact(
        "01_data_preparation",
        r"TU-Berlin-Ext: .*? Its test set: ([\d,]+) sketches and ([\d,]+) photos",
        lambda: (SPECS["tuberlin"].expected["zero", "sketch"], SPECS["tuberlin"].expected["zero", "photo"]),
    ),
    Fact(
        "01_data_preparation",
        r"\*plus\* \$([\d.]+)\\times\$ the WordNet relevance",
        lambda: (_paper("kdneg"),),
    ),
    Fact(
        "01_data_preparation",
        r"Sketchy split 1's (\d+) training classes",
        lambda: (SPECS["sketchy-s1"].n_seen,),
    ),
    # 02: loss weights and hyper-parameters
    Fact(
        "02_model_and_losses",
        r"\\mathcal\{L\}_\{CE\} \+ ([\d.]+)\\,\\mathcal\{L\}_\{KD\} \+ ([\d.]+)\\,\\mathcal\{L\}_\{SupCon\} "
        r"\+ ([\d.]+)\\,\\mathcal\{L\}_\{mem\}\$\$ \(the course's CPU presets, `emoji-\*`, raise the SupCon "
        r"weight to ([\d.]+)",
        lambda: (_paper("w_kd"), _paper("w_contrastive"), _paper("w_memory"), _emoji("w_contrastive")),
    ),
    Fact(
        "02_model_and_losses",
        r"`w_kd = ([\d.]+)`, `w_contrastive = ([\d.]+)`, `w_memory = ([\d.]+)` \(the `emoji-\*` presets: "
        r"`w_contrastive = ([\d.]+)`\)",
        lambda: (DSNConfig().w_kd, DSNConfig().w_contrastive, DSNConfig().w_memory, _emoji("w_contrastive")),
    ),
    Fact("02_model_and_losses", r"temperature \$\\tau = ([\d.]+)\$", lambda: (_paper("temperature"),)),
    Fact(
        "02_model_and_losses",
        r"\\lambda = ([\d.]+),\\ \\beta = ([\d.]+)\$\$",
        lambda: (_paper("kd_lambda"), _paper("kdneg")),
    ),
    Fact("02_model_and_losses", r"up to `slots` \((\d+)\)", lambda: (_paper("memory_slots"),)),
    Fact("02_model_and_losses", r"The paper reports \$d = (\d+)\$ and \$d = (\d+)\$", _paper_dims),
    # 03: the released schedules
    Fact(
        "03_training",
        r"Sketchy trains (\d+) epochs × ([\d,]+) steps \(seed (\d+)\)",
        lambda: (
            get_preset("sketchy-s1-released").epochs,
            _sketchy_steps(),
            get_preset("sketchy-s1-released").seed,
        ),
    ),
    Fact(
        "03_training",
        r"TU-Berlin trains (\d+) epochs \(seed (\d+)\)",
        lambda: (get_preset("tuberlin-released").epochs, get_preset("tuberlin-released").seed),
    ),
    # 04: code sizes and the P@100 caveat
    Fact(
        "04_evaluation",
        r"ITQ binary codes \(one bit per code dimension: `cfg.hashing_dim` bits, (\d+) for the `emoji-\*` "
        r"presets, (\d+) or (\d+) for the paper's\)",
        lambda: (_emoji("hashing_dim"), *_paper_dims()),
    ),
    Fact(
        "04_evaluation",
        r"\$b\$ = `cfg.hashing_dim` \((\d+) for the `emoji-\*` presets, (\d+) or (\d+) for the paper's\)",
        lambda: (_emoji("hashing_dim"), *_paper_dims()),
    ),
    Fact(
        "04_evaluation",
        r"Paper values \(mAP@all / P@100, (\d+)-d real-valued codes",
        lambda: (get_preset("sketchy-s1-paper").hashing_dim,),
    ),
    Fact(
        "04_evaluation",
        r"checkpoint \(its `cfg.hashing_dim`-d codes: (\d+)-d for the `emoji-\*` presets\)",
        lambda: (_emoji("hashing_dim"),),
    ),
    Fact(
        "04_evaluation",
        r"EmojiSketch has about (\d+) per unseen concept\).*? "
        r"([\d,]+) / ([\d,]+) / 100 ≈ ([\d.]+) on average",
        lambda: (
            _zero_photos_per_concept(),
            _card("zero", "photo"),
            _card("zero", "classes"),
            _zero_photos_per_concept() / 100,
        ),
    ),
    # 05: the ladder's settings and the P@100 caveat
    Fact(
        "05_ablations",
        r"w = ([\d.]+) in the paper presets, ([\d.]+) in the `emoji-\*` ones",
        lambda: (_paper("w_contrastive"), _emoji("w_contrastive")),
    ),
    Fact("05_ablations", r"CE \+ KD \+ ([\d.]+)·memory", lambda: (_both("w_memory"),)),
    Fact(
        "05_ablations",
        r"a (\d+)-d code instead of the preset's `hashing_dim` \((\d+) vs (\d+) for the `emoji-\*` presets; "
        r"(\d+) vs (\d+), the paper's two rows",
        lambda: (
            _ablations()["full DSN, 512-d"]["hashing_dim"],
            _emoji("hashing_dim"),
            _ablations()["full DSN, 512-d"]["hashing_dim"],
            *_paper_dims(),
        ),
    ),
    Fact(
        "05_ablations",
        r"EmojiSketch has only about (\d+) photos per unseen concept, so P@100 cannot exceed ([\d,]+) / "
        r"([\d,]+) / 100 ≈ ([\d.]+) on average",
        lambda: (
            _zero_photos_per_concept(),
            _card("zero", "photo"),
            _card("zero", "classes"),
            _zero_photos_per_concept() / 100,
        ),
    ),
    Fact(
        "05_ablations",
        r"SupCon weight ([\d.]+), frozen BatchNorm statistics and a cosine classifier "
        r"\(`classifier_scale=(\d+)`\); they also train with ([\w-]+) batches \(notebook 01\) "
        r"and (\d+)-d codes",
        lambda: (
            _emoji("w_contrastive"),
            _emoji("classifier_scale") if _emoji("freeze_bn") else "freeze_bn is off",
            _emoji("batch_sampler").replace("_", "-"),
            _emoji("hashing_dim"),
        ),
    ),
    Fact(
        "05_ablations",
        r"The faithful row sets exactly two fields, `memory_grad=(\w+)` and "
        r"`memory_row_overwrite=(\w+)`; .*? "
        r"\(`head_bias` stays `\"(\w+)\"`\)",
        lambda: (
            str(_ablations()["full DSN, faithful memory"]["memory_grad"]),
            str(_ablations()["full DSN, faithful memory"]["memory_row_overwrite"]),
            get_preset("emoji-course")
            .replace(**_ablations()["full DSN, faithful memory"])
            .quirk("head_bias"),
        ),
    ),
    # 03: the CPU recipe against the paper's settings, and its measured ladder
    Fact(
        "03_training",
        r"\| input, code \| (\d+) px; (\d+)-d or (\d+)-d codes \| (\d+) px; (\d+)-d codes \|",
        lambda: (_paper("image_size"), *_paper_dims(), _emoji("image_size"), _emoji("hashing_dim")),
    ),
    Fact(
        "03_training",
        r"\| batch \| (\d+) sketches \+ (\d+) photos, drawn independently \| ([\w-]+) batches of (\d+) "
        r"sketches \+ (\d+) photos: (\d+) concepts, each with its sketch and (\d+) photos \| "
        r"with (\d+) concepts",
        lambda: (
            get_preset("sketchy-s1-paper").sketches_per_batch,
            _paper_photos("sketchy-s1-paper"),
            _emoji("batch_sampler").replace("_", "-"),
            _emoji("sketches_per_batch"),
            _emoji("photos_per_batch"),
            _emoji("sketches_per_batch"),
            _emoji("photos_per_batch") / _emoji("sketches_per_batch"),
            _card("train", "classes"),
        ),
    ),
    Fact(
        "03_training",
        r"\| optimiser \| Adam, lr ([\de-]+) for everything, lr × ([\d.]+)\^\(epoch/epochs\) \| AdamW, "
        r"head lr ([\de-]+), backbone lr × ([\d.]+) \(`emoji-demo`: × ([\d.]+), last row\), (\w+) over the "
        r"run's steps",
        lambda: (
            _sci(_paper("lr")),
            _paper("lr_decay") if _paper("lr_schedule") == "exp" else "not exp",
            _sci(_emoji("lr")) if _emoji("optimizer") == "adamw" else "not adamw",
            get_preset("emoji-course").backbone_lr_mult,
            get_preset("emoji-demo").backbone_lr_mult,
            _emoji("lr_schedule"),
        ),
    ),
    Fact(
        "03_training",
        r"\| SupCon weight \| ([\d.]+) \| ([\d.]+) \| .*? \| ([\d.]+) → \*\*([\d.]+)\*\* \|",
        lambda: (_paper("w_contrastive"), _emoji("w_contrastive"), *_readme_ladder()[:2]),
    ),
    Fact(
        "03_training",
        r"\| BatchNorm \| trained .*? \| (\d+) images of (\d+) concepts give poor batch statistics.*? \| "
        r"([\d.]+) → \*\*([\d.]+)\*\* \|",
        lambda: (
            _emoji("sketches_per_batch") + _emoji("photos_per_batch"),
            _emoji("sketches_per_batch") if _emoji("freeze_bn") and not _paper("freeze_bn") else "freeze_bn",
            *_readme_ladder()[1:3],
        ),
    ),
    Fact(
        "03_training",
        r"\| classifier \| `nn.Linear` on the raw code \| cosine classifier, `classifier_scale=(\d+)` \| "
        r".*? \| ([\d.]+) → \*\*([\d.]+)\*\* \|",
        lambda: (
            _emoji("classifier_scale") if _paper("classifier_scale") is None else "paper is not linear",
            *_readme_ladder()[2:],
        ),
    ),
    Fact(
        "03_training",
        r"a CPU step about ([\d.]+)× faster",
        lambda: _config_comment(r"channels_last makes a CPU step ~([\d.]+)x faster"),
    ),
    Fact(
        "03_training",
        r"`emoji-course`: a linear probe .*?`head_init=\"(\w+)\"`.*?`emoji-quick` keeps the SVD head "
        r"\(`head_init=\"(\w+)\"`\).*? \| best val mAP@all ([\d.]+) → \*\*([\d.]+)\*\* \|",
        lambda: (
            get_preset("emoji-course").head_init,
            get_preset("emoji-quick").head_init,
            *_config_comment(r"best val mAP@all ([\d.]+) from the SVD head, ([\d.]+) from the probe"),
        ),
    ),
    Fact(
        "03_training",
        r"\| trained stages, views \| .*? `emoji-demo` \(`make demo`\): the stem and the first (\d+) "
        r"stages keep their ImageNet weights \(`frozen_stages=(\d+)`\), one extra view, backbone lr × "
        r"([\d.]+), (\d+) steps "
        r"\| .*? \| best val mAP@all ([\d.]+) \((\d+) steps\) → \*\*([\d.]+)\*\* \((\d+) steps\) \|",
        lambda: (
            get_preset("emoji-demo").frozen_stages - 1,  # the stem is the first
            get_preset("emoji-demo").frozen_stages,
            get_preset("emoji-demo").backbone_lr_mult,
            _steps("emoji-demo"),
            _config_comment(r"([\d.]+) from the probe")[0],
            _steps("emoji-course"),
            _config_comment(r"this preset's \d+ steps reach best val mAP@all ([\d.]+)")[0],
            _steps("emoji-demo"),
        ),
    ),
]


def _paper_photos(name: str) -> int:
    return get_preset(name).photos_per_batch


def _both(field: str) -> Any:
    """A field the text states once for both the paper and the emoji presets."""
    assert _paper(field) == _emoji(field), f"{field}: paper {_paper(field)} vs emoji-* {_emoji(field)}"
    return _paper(field)


# ---- checking ------------------------------------------------------------------------------------------
def _same(quoted: str, expected: Any) -> bool:
    """A quoted number equals the package's value to the precision it is quoted with (0.056 for 0.0562,
    6 for 5.6); anything else compares as text."""
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and NUMBER.fullmatch(quoted):
        decimals = len(quoted.split(".")[1]) if "." in quoted else 0
        return abs(float(quoted.replace(",", "")) - expected) <= 0.5 * 10**-decimals + 1e-12
    return quoted == str(expected)


def _problems(fact: Fact, text: str) -> list[str]:
    m = re.search(fact.pattern, text)
    if m is None:
        return [
            f"notebooks/{fact.notebook}.py: no {fact.kind} matches {fact.pattern!r} (reworded? update FACTS)"
        ]
    expected = fact.expected()
    assert len(expected) == len(m.groups()), f"FACTS: {fact.pattern!r} has {len(m.groups())} groups"
    return [
        f"notebooks/{fact.notebook}.py quotes {q!r} where the package gives {e!r} (in {m.group(0)!r})"
        for q, e in zip(m.groups(), expected)
        if not _same(q, e)
    ]


FACT_PARAMS = [pytest.param(f, id=f"{f.notebook[:2]}-{i}") for i, f in enumerate(FACTS)]


@pytest.mark.parametrize("fact", FACT_PARAMS)
def test_quoted_number_agrees_with_the_package(fact: Fact) -> None:
    problems = _problems(fact, _text(fact.notebook, fact.kind))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("fact", FACT_PARAMS)
def test_a_wrong_number_fails(fact: Fact) -> None:
    """Every quoted value, changed in a copy of the text, is caught (the checks above can fail)."""
    text = _text(fact.notebook, fact.kind)
    m = re.search(fact.pattern, text)
    assert m, fact.pattern
    for g in range(1, len(m.groups()) + 1):
        quoted = m.group(g)
        wrong = str(int(float(quoted.replace(",", ""))) + 7) if NUMBER.fullmatch(quoted) else quoted + "x"
        planted = text[: m.start(g)] + wrong + text[m.end(g) :]
        assert _problems(fact, planted), f"{fact.pattern!r}: {quoted!r} -> {wrong!r} was not caught"


def test_every_code_size_in_the_text_is_a_preset_code_size() -> None:
    """Beyond the anchored facts: any "N-d code(s)" or "N bits" in any notebook is a preset's hashing_dim."""
    dims = {cfg.hashing_dim for cfg in PRESETS.values()}
    pattern = re.compile(r"\b(\d+)(?:-d (?:codes?|real-valued codes)\b| bits\b)")
    wrong = [
        (p.stem, m.group(0))
        for p in sorted(NB_DIR.glob("0*_*.py"))
        for m in pattern.finditer(_text(p.stem))
        if int(m.group(1)) not in dims
    ]
    assert not wrong, f"code sizes no preset has (preset hashing_dim values: {sorted(dims)}): {wrong}"
    assert pattern.search("a 128-d code") and not pattern.search("4-d features")  # the scan can fail


def test_faithful_ablation_changes_only_the_memory_quirks() -> None:
    """Notebook 05's faithful row, on top of the presets it runs on, changes exactly the two memory quirks
    (the text says so, and that head_bias keeps its value); on a *-released preset the rows coincide."""
    row = _ablations()["full DSN, faithful memory"]
    for name in ("emoji-course", "emoji-quick", "sketchy-s1-paper"):
        base = get_preset(name)
        full, faithful = base.quirks(), base.replace(**row).quirks()
        changed = {k for k in full if full[k] != faithful[k]}
        assert changed == {"memory_grad", "memory_row_overwrite"}, (
            f"{name}: the faithful row changes {changed}"
        )
    released = get_preset("sketchy-s1-released")
    assert released.quirks() == released.replace(**row).quirks()
    changes = ", ".join(f"{k}={v}" for k, v in row.items())
    assert f"| `{changes}` |" in _text("05_ablations"), f"05's table must list the row's changes `{changes}`"


def test_readme_card_matches_the_built_dataset() -> None:
    """The README card (which the notebooks quote) holds the counts of the full EmojiSketch build."""
    root = default_emojisketch_root("full")
    manifest = read_manifest(root)
    if manifest is None or not is_current(root, "full"):
        pytest.skip(f"no current full EmojiSketch build at {root} (python -m dsn_lab data fetch emojisketch)")
    assert _readme_card() == {s: manifest["counts"][s] for s in SPLITS}
