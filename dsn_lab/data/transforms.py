"""Image transforms as in the released DSN code: 224x224 resize, ImageNet statistics, contrastive views.

Why separate: the batching, the embedding code and the notebooks must all use exactly the same
normalisation, and the augmentation of the two extra views is part of the method (SupCon needs views).
"""

from __future__ import annotations

import random

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


class ReleasedAffine:
    """The released ``random_transform`` (applied with p 0.7 before all views when ``aug=True``).

    Flip p 0.5; scale x, y in [0.7, 1.3] p 0.5; rotation within ±30° p 0.5; translation within ±10 px p 0.5.
    Difference from the release: empty corners are filled white, not black (black corners on sketches would be
    a domain cue). Uses Python's ``random`` so the batching can seed it per sample.
    """

    def __init__(self, p: float = 0.7, fill: tuple[int, int, int] = (255, 255, 255)) -> None:
        self.p, self.fill = p, fill

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        rng = rng or random
        if rng.random() >= self.p:
            return img
        if rng.random() < 0.5:
            img = TF.hflip(img)
        sx, sy = (rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)) if rng.random() < 0.5 else (1.0, 1.0)
        angle = rng.uniform(-30.0, 30.0) if rng.random() < 0.5 else 0.0
        tx, ty = (rng.uniform(-10, 10), rng.uniform(-10, 10)) if rng.random() < 0.5 else (0.0, 0.0)
        if (sx, sy, angle, tx, ty) == (1.0, 1.0, 0.0, 0.0, 0.0):
            return img
        w, h = img.size
        # anisotropic scale about the centre, then rotation, then translation (an affine warp, like skimage's)
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
