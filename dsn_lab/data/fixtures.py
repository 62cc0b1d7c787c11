"""A synthetic dataset in the EmojiSketch layout, for unit tests: no network, well under a second.

Each class is a shape (and a variant: count, hatch or frame); its photos are the shape filled with a colour
on a tinted background, its sketches black outlines of the same shape on white. Position and size jitter, so
retrieval is learnable but not trivial.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "arrow")
VARIANTS = ("", "_double", "_framed", "_dotted")
PALETTE = ((220, 40, 40), (40, 140, 220), (40, 170, 70), (230, 170, 20), (150, 60, 200), (240, 110, 30))


def class_names(n: int) -> list[str]:
    if n > len(SHAPES) * len(VARIANTS):
        raise ValueError(f"At most {len(SHAPES) * len(VARIANTS)} synthetic classes.")
    return [SHAPES[k % len(SHAPES)] + VARIANTS[k // len(SHAPES)] for k in range(n)]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(k: int, radius: float, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(phase + 2 * math.pi * i / k),
                cy + radius * math.sin(phase + 2 * math.pi * i / k),
            )
            for i in range(k)
        ]

    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return ring(3, r)
    if shape == "diamond":
        return ring(4, r)
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a = r * 0.35
        return [
            (cx - a, cy - r),
            (cx + a, cy - r),
            (cx + a, cy - a),
            (cx + r, cy - a),
            (cx + r, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + r),
            (cx - a, cy + r),
            (cx - a, cy + a),
            (cx - r, cy + a),
            (cx - r, cy - a),
            (cx - a, cy - a),
        ]
    if shape == "arrow":
        a = r * 0.3
        return [
            (cx - r, cy - a),
            (cx, cy - a),
            (cx, cy - r),
            (cx + r, cy),
            (cx, cy + r),
            (cx, cy + a),
            (cx - r, cy + a),
        ]
    raise ValueError(shape)


def _draw(
    name: str, size: int, rng: random.Random, sketch: bool, colour: tuple[int, int, int]
) -> Image.Image:
    shape = next(s for s in SHAPES if name.startswith(s))
    variant = name[len(shape) :]
    bg = (255, 255, 255) if sketch else tuple(int(230 + rng.random() * 25) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.22, 0.32)
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1) * size, size / 2 + rng.uniform(-0.1, 0.1) * size
    width = max(1, size // 24)
    centres = [(cx - r * 0.5, cy), (cx + r * 0.5, cy)] if variant == "_double" else [(cx, cy)]
    rr = r * (0.55 if variant == "_double" else 1.0)
    for x, y in centres:
        if shape == "circle":
            box = [x - rr, y - rr, x + rr, y + rr]
            draw.ellipse(box, outline=(0, 0, 0), width=width) if sketch else draw.ellipse(box, fill=colour)
        else:
            pts = _polygon(shape, x, y, rr)
            if sketch:
                draw.line(pts + pts[:1], fill=(0, 0, 0), width=width)
            else:
                draw.polygon(pts, fill=colour)
    if variant == "_framed":
        m = size * 0.06
        draw.rectangle([m, m, size - m, size - m], outline=(0, 0, 0) if sketch else colour, width=width)
    if variant == "_dotted":
        for k in range(4):
            x, y = size * (0.15 + 0.7 * (k % 2)), size * (0.15 + 0.7 * (k // 2))
            d = size * 0.04
            draw.ellipse([x - d, y - d, x + d, y + d], fill=(0, 0, 0) if sketch else colour)
    return img


def make_synthetic_emojisketch(
    root: Path | str,
    n_train: int = 6,
    n_val: int = 2,
    n_zero: int = 4,
    per_class: int = 3,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a synthetic EmojiSketch-layout dataset at ``root`` (atomically) and return ``root``.

    Splits: ``train`` (n_train classes), ``val`` (n_val), ``zero`` (n_zero), disjoint; ``per_class`` sketches
    and ``per_class`` photos per class. An existing folder built with the same arguments is reused.
    """
    root = Path(root)
    params = dict(n_train=n_train, n_val=n_val, n_zero=n_zero, per_class=per_class, size=size, seed=seed)
    manifest = root / "manifest.json"
    if manifest.is_file():
        if json.loads(manifest.read_text()).get("params") == params:
            return root
        raise FileExistsError(
            f"{root} holds a synthetic dataset built with other arguments. Fix: use a new folder."
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty. Fix: use a new folder.")
    names = class_names(n_train + n_val + n_zero)
    splits = {
        "train": names[:n_train],
        "val": names[n_train : n_train + n_val],
        "zero": names[n_train + n_val :],
    }
    rng = random.Random(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        (tmp / "splits").mkdir()
        counts: dict[str, dict[str, int]] = {}
        for split, classes in splits.items():
            (tmp / "splits" / f"classes_{split}.txt").write_text("".join(c + "\n" for c in classes))
            lines: dict[str, list[str]] = {"sketch": [], "photo": []}
            for label, cname in enumerate(classes):
                colour = PALETTE[names.index(cname) % len(PALETTE)]
                for domain in ("sketch", "photo"):
                    folder = tmp / domain / cname
                    folder.mkdir(parents=True)
                    for i in range(per_class):
                        img = _draw(cname, size, rng, domain == "sketch", colour)
                        img.save(folder / f"{cname}_{i}.png")
                        lines[domain].append(f"{domain}/{cname}/{cname}_{i}.png {label}\n")
            for domain, rows in lines.items():
                (tmp / "splits" / f"{domain}_{split}.txt").write_text("".join(rows))
            counts[split] = {d: len(rows) for d, rows in lines.items()}
        (tmp / "ATTRIBUTION.md").write_text(
            "Synthetic images drawn by dsn_lab.data.fixtures; no third-party content.\n"
        )
        (tmp / "manifest.json").write_text(
            json.dumps({"synthetic": True, "params": params, "counts": counts, "classes": splits}, indent=2)
        )
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
