"""Image transforms as in the released DSN code: 224x224 resize, ImageNet statistics, contrastive views.

Why separate: the batching, the embedding code and the notebooks must all use exactly the same
normalisation, and the augmentation of the two extra views is part of the method (SupCon needs views).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize() -> T.Normalize:
    return T.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def eval_transform(size: int = 224) -> T.Compose:
    """Resize to size x size (no crop, as released), tensor, ImageNet normalisation."""
    return T.Compose([T.Resize((size, size)), T.ToTensor(), normalize()])


def augment_transform(size: int = 224) -> T.Compose:
    """Released ``contrastive_transform``: flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2."""
    return T.Compose(
        [
            T.Resize((size, size)),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            normalize(),
        ]
    )


AFFINE_ORIGINS = ("top-left", "center")
AFFINE_FILLS = {"black": (0, 0, 0), "white": (255, 255, 255)}


def affine_matrix(sx: float, sy: float, rotation: float, tx: float, ty: float) -> np.ndarray:
    """skimage's ``AffineTransform(scale=(sx, sy), rotation=rotation, translation=(tx, ty)).params``: scale,
    then rotate (radians) about the origin (0, 0) = the top-left pixel's centre, then translate; (x, y) =
    (column, row)."""
    c, s = math.cos(rotation), math.sin(rotation)
    return np.array([[sx * c, -sy * s, tx], [sx * s, sy * c, ty], [0.0, 0.0, 1.0]])


def warp_like_skimage(image: np.ndarray, matrix: np.ndarray, cval: float = 0.0) -> np.ndarray:
    """``skimage.transform.warp(image, AffineTransform(matrix).inverse, preserve_range=True).astype(uint8)``.

    Each output pixel (x, y) reads the input at ``inv(matrix) @ (x, y, 1)`` with bilinear interpolation;
    neighbours outside the image count as ``cval`` (mode "constant"); the float result is truncated to
    uint8, as ``astype`` does. ``image``: uint8 [H, W] or [H, W, C].
    """
    img = np.asarray(image, dtype=np.float64)
    chans = img[..., None] if img.ndim == 2 else img
    h, w = chans.shape[:2]
    inv = np.linalg.inv(matrix)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    x = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
    y = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
    x0, y0 = np.floor(x), np.floor(y)
    dx, dy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)

    def pixel(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        vals = chans[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
        return np.where(inside[..., None], vals, cval)

    # skimage reads the neighbours at floor and ceil; where a coordinate is whole, its weight is 0 anyway
    x1 = np.ceil(x).astype(np.int64)
    y1 = np.ceil(y).astype(np.int64)
    top = (1 - dx) * pixel(y0, x0) + dx * pixel(y0, x1)
    bottom = (1 - dx) * pixel(y1, x0) + dx * pixel(y1, x1)
    out = np.clip((1 - dy) * top + dy * bottom, min(chans.min(), cval), max(chans.max(), cval))
    out = out.astype(np.uint8)
    return out[..., 0] if img.ndim == 2 else out


class ReleasedAffine:
    """The released ``random_transform`` (applied with p 0.7 before all views when ``aug=True``).

    Flip p 0.5; scale x, y in [0.7, 1.3] p 0.5; rotation within ±30° p 0.5; translation within ±10 px p 0.5
    (the draws in the released order; Python's ``random`` so the batching can seed it per sample).

    ``origin="top-left"`` (released): skimage's ``AffineTransform`` + ``warp`` exactly
    (:func:`warp_like_skimage`): scale and rotation about the top-left corner, bilinear, truncated to uint8.
    ``origin="center"``: scale about the centre (resize and paste), then rotation and translation about the
    centre with torchvision (the corrected default, so content stays in view). ``fill``: "black" (released:
    skimage's cval 0) or "white" (the default: black corners on white sketches would be a domain cue).
    """

    def __init__(self, p: float = 0.7, fill: str = "white", origin: str = "center") -> None:
        if origin not in AFFINE_ORIGINS:
            raise ValueError(f"ReleasedAffine: origin must be one of {AFFINE_ORIGINS}, got {origin!r}.")
        if fill not in AFFINE_FILLS:
            raise ValueError(f"ReleasedAffine: fill must be one of {tuple(AFFINE_FILLS)}, got {fill!r}.")
        self.p, self.origin, self.fill_name = p, origin, fill
        self.fill = AFFINE_FILLS[fill]

    def __repr__(self) -> str:
        return f"ReleasedAffine(p={self.p}, fill={self.fill_name!r}, origin={self.origin!r})"

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        rng = rng or random
        if rng.random() >= self.p:
            return img
        if rng.random() < 0.5:
            img = TF.hflip(img)
        sx, sy = (rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)) if rng.random() < 0.5 else (1.0, 1.0)
        angle = rng.uniform(-30.0, 30.0) if rng.random() < 0.5 else 0.0
        tx, ty = (rng.uniform(-10, 10), rng.uniform(-10, 10)) if rng.random() < 0.5 else (0.0, 0.0)
        if self.origin == "top-left":  # released: warped even when the parameters are the identity
            matrix = affine_matrix(sx, sy, math.radians(angle), tx, ty)
            arr = warp_like_skimage(np.asarray(img.convert("RGB")), matrix, float(self.fill[0]))
            return Image.fromarray(arr)
        if (sx, sy, angle, tx, ty) == (1.0, 1.0, 0.0, 0.0, 0.0):
            return img
        w, h = img.size
        # anisotropic scale about the centre, then rotation, then translation
        img = img.resize((max(1, round(w * sx)), max(1, round(h * sy))), Image.BILINEAR)
        canvas = Image.new("RGB", (w, h), self.fill)
        canvas.paste(img, ((w - img.size[0]) // 2, (h - img.size[1]) // 2))
        return TF.affine(
            canvas,
            angle=angle,
            translate=[int(round(tx)), int(round(ty))],
            scale=1.0,
            shear=[0.0],
            fill=list(self.fill),
        )


def affine_from_config(cfg: Any) -> ReleasedAffine:
    """The base affine step of a config: its ``affine_origin`` and ``affine_fill`` in force."""
    return ReleasedAffine(fill=cfg.quirk("affine_fill"), origin=cfg.quirk("affine_origin"))
