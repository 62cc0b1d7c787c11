"""The released affine augmentation (``Sketchy.py: random_transform``): skimage's warp, origin and fill."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from PIL import Image

from dsn_lab.config import DSNConfig
from dsn_lab.data.transforms import ReleasedAffine, affine_from_config, affine_matrix, warp_like_skimage


def brute_force_warp(img: np.ndarray, sx, sy, rot, tx, ty, cval: float) -> np.ndarray:
    """skimage ``warp(img, AffineTransform(scale, rotation, translation).inverse, preserve_range=True)``
    followed by ``astype('uint8')``, one pixel at a time: skimage's ``_warp_fast`` with order 1 (bilinear,
    neighbours at floor/ceil, mode 'constant': outside pixels read as cval)."""
    m = np.array(
        [
            [sx * math.cos(rot), -sy * math.sin(rot), tx],
            [sx * math.sin(rot), sy * math.cos(rot), ty],
            [0.0, 0.0, 1.0],
        ]
    )
    inv = np.linalg.inv(m)
    h, w, chans = img.shape
    out = np.zeros_like(img)

    def get(r: int, c: int, ch: int) -> float:
        return float(img[r, c, ch]) if 0 <= r < h and 0 <= c < w else cval

    for row in range(h):
        for col in range(w):
            x, y, _ = inv @ np.array([col, row, 1.0])
            r0, c0, r1, c1 = math.floor(y), math.floor(x), math.ceil(y), math.ceil(x)
            dr, dc = y - r0, x - c0
            for ch in range(chans):
                top = (1 - dc) * get(r0, c0, ch) + dc * get(r0, c1, ch)
                bottom = (1 - dc) * get(r1, c0, ch) + dc * get(r1, c1, ch)
                out[row, col, ch] = int((1 - dr) * top + dr * bottom)  # astype: truncation
    return out


def _image(h: int = 13, w: int = 11, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    "params", [(1.0, 1.0, 0.0, 0.0, 0.0), (1.2, 0.8, 0.3, 2.5, -1.5), (0.7, 1.3, -0.5, 0, 4)]
)
@pytest.mark.parametrize("cval", [0.0, 255.0])
def test_warp_matches_brute_force_skimage(params, cval) -> None:
    img = _image()
    got = warp_like_skimage(img, affine_matrix(*params), cval)
    np.testing.assert_array_equal(got, brute_force_warp(img, *params, cval))


def test_released_affine_replays_the_released_draws_exactly() -> None:
    """origin top-left + black fill: flip, then the skimage warp of the parameters drawn in released order."""
    img = _image(17, 15, seed=3)
    affine = ReleasedAffine(origin="top-left", fill="black")
    warped = 0
    for seed in range(40):
        got = np.asarray(affine(Image.fromarray(img), random.Random(seed)))
        rng = random.Random(seed)
        if rng.random() >= 0.7:
            np.testing.assert_array_equal(got, img)
            continue
        ref = img[:, ::-1] if rng.random() < 0.5 else img
        sx, sy = (rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)) if rng.random() < 0.5 else (1.0, 1.0)
        rot = math.radians(rng.uniform(-30.0, 30.0)) if rng.random() < 0.5 else 0.0
        tx, ty = (rng.uniform(-10, 10), rng.uniform(-10, 10)) if rng.random() < 0.5 else (0.0, 0.0)
        np.testing.assert_array_equal(
            got, brute_force_warp(np.ascontiguousarray(ref), sx, sy, rot, tx, ty, 0)
        )
        warped += (sx, sy, rot, tx, ty) != (1.0, 1.0, 0.0, 0.0, 0.0)
    assert warped >= 5


def test_origin_and_fill_both_ways() -> None:
    """A shrink about the top-left keeps pixel (0, 0) and empties the bottom-right; about the centre it
    empties the border all round. The emptied pixels take the fill colour."""
    img = np.full((20, 20, 3), 128, np.uint8)
    img[0, 0] = (10, 20, 30)
    shrink = affine_matrix(0.5, 0.5, 0.0, 0.0, 0.0)
    tl = warp_like_skimage(img, shrink, 0.0)
    assert tuple(tl[0, 0]) == (10, 20, 30) and tuple(tl[-1, -1]) == (0, 0, 0) and tl[5, 5, 0] == 128

    class Fixed(random.Random):  # forces: apply, no flip, scale 0.5, no rotation, no translation
        def __init__(self) -> None:
            super().__init__(0)
            self.seq = iter([0.0, 0.9, 0.0, 0.9, 0.9])

        def random(self) -> float:
            return next(self.seq)

        def uniform(self, a: float, b: float) -> float:
            return 0.5

    centre = np.asarray(ReleasedAffine(origin="center", fill="white")(Image.fromarray(img), Fixed()))
    assert tuple(centre[0, 0]) == (255, 255, 255) and tuple(centre[-1, -1]) == (255, 255, 255)
    assert centre[10, 10, 0] == 128
    tl_white = np.asarray(ReleasedAffine(origin="top-left", fill="white")(Image.fromarray(img), Fixed()))
    assert tuple(tl_white[0, 0]) == (10, 20, 30) and tuple(tl_white[-1, -1]) == (255, 255, 255)


def test_config_resolves_the_affine_through_faithful() -> None:
    assert repr(affine_from_config(DSNConfig(faithful=True))) == repr(
        ReleasedAffine(fill="black", origin="top-left")
    )
    assert repr(affine_from_config(DSNConfig())) == repr(ReleasedAffine(fill="white", origin="center"))
    with pytest.raises(ValueError, match="origin"):
        ReleasedAffine(origin="middle")
