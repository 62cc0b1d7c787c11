"""DSNConfig: the fidelity fields, how ``faithful`` resolves them, the released and paper presets."""

from __future__ import annotations

import pytest

from dsn_lab.config import ALWAYS_RELEASED, PRESETS, QUIRKS, DSNConfig, get_preset


def test_faithful_sets_every_quirk_to_the_released_value_and_back() -> None:
    released, fixed = DSNConfig(faithful=True), DSNConfig(faithful=False)
    for name, (rel, cor) in QUIRKS.items():
        assert rel != cor, name
        assert released.quirk(name) == rel and fixed.quirk(name) == cor, name
    for name, value in ALWAYS_RELEASED.items():
        assert released.quirk(name) == value == fixed.quirk(name), name


def test_explicit_value_wins_over_faithful_and_replace_keeps_following_it() -> None:
    cfg = DSNConfig(faithful=True, memory_grad=True, affine_fill="white")
    assert cfg.quirk("memory_grad") is True and cfg.quirk("affine_fill") == "white"
    assert cfg.quirk("memory_row_overwrite") is True  # the rest still follows faithful
    # a field left at None keeps following faithful through replace (nothing is frozen at construction)
    paper = get_preset("sketchy-s1-paper")
    assert paper.quirk("memory_grad") is True
    assert paper.replace(faithful=True).quirk("memory_grad") is False


@pytest.mark.parametrize("name", ["sketchy-s1-released", "sketchy-s1-released-512"])
def test_sketchy_released_preset(name: str) -> None:
    cfg = get_preset(name)
    assert cfg.faithful and cfg.epochs == 20 and cfg.seed == 1 and cfg.dataset == "sketchy-s1"
    assert (cfg.sketches_per_batch, cfg.photos_per_batch, cfg.val_batches) == (32, 64, 300)
    rule = cfg.selection_rule()
    assert rule == ("val_paired_map", "best", True, "released")
    assert all(cfg.quirk(k) == rel for k, (rel, _) in QUIRKS.items())
    assert cfg.hashing_dim == (512 if name.endswith("512") else 64)


@pytest.mark.parametrize("name", ["tuberlin-released", "tuberlin-released-512"])
def test_tuberlin_released_preset(name: str) -> None:
    cfg = get_preset(name)
    assert cfg.faithful and cfg.epochs == 16 and cfg.seed == 2021 and cfg.dataset == "tuberlin"
    assert (cfg.sketches_per_batch, cfg.photos_per_batch, cfg.val_batches) == (9, 81, 500)
    assert cfg.selection_rule().keep == "last"
    assert cfg.selection_rule().itq_variant == "released"


@pytest.mark.parametrize("name", [n for n in PRESETS if n.endswith(("-paper", "-paper-512"))])
def test_paper_presets_name_each_fix(name: str) -> None:
    cfg = get_preset(name)
    assert not cfg.faithful
    fixes = cfg.notes["fixes"]
    # the fixes the README's reproduction table lists, as literals (not PAPER_FIXES against itself)
    assert sorted(fixes) == [
        "affine_fill",
        "affine_origin",
        "faithful",
        "head_bias",
        "itq_variant",
        "memory_grad",
        "memory_row_overwrite",
        "selection",
    ]
    for field in fixes:
        if field in QUIRKS:  # each named fix really differs from the released behaviour
            assert cfg.quirk(field) == QUIRKS[field][1] != QUIRKS[field][0], field


def test_selection_rules() -> None:
    assert DSNConfig(selection="last").selection_rule() == ("", "last", False, "gong")
    assert DSNConfig(selection="accuracy").selection_rule().metric == "val_acc"
    assert DSNConfig(selection="paired_map", faithful=True).selection_rule() == (
        "val_paired_map",
        "best",
        False,
        "released",
    )
    assert DSNConfig(dataset="quickdraw", selection="released").selection_rule().keep == "best"


@pytest.mark.parametrize(
    "field, bad",
    [("selection", "accuracy!"), ("kd_domains", "sketch"), ("affine_origin", "middle"), ("cudnn", "fast")],
)
def test_bad_values_are_refused_naming_the_field(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field):
        DSNConfig(**{field: bad})


def test_old_config_dicts_still_load() -> None:
    data = DSNConfig().to_dict()
    for name in (*QUIRKS, *ALWAYS_RELEASED):
        data.pop(name)
    assert DSNConfig.from_dict(data).quirk("selection") == "map"
