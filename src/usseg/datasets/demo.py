"""The `demo` dataset: generated from a seed, in the prepared form the benchmarks use.

Objects of a few classes (each with its own colour family and texture) on textured
backgrounds, with exact masks, at varied non-square sizes, so the demo exercises the
same resize/upsample paths as real data. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from usseg.artifacts.prepared import IGNORE, PreparedWriter, Sample
from usseg.datasets.params import DatasetParams

CLASSES = ["background", "disc", "box", "triangle", "ring"]
NEEDS_DOWNLOAD = False


@dataclass(frozen=True, kw_only=True)
class DemoParams(DatasetParams):
    seed: int
    min_side: int  # image sides are drawn from [min_side, max_side]
    max_side: int
    splits: dict[str, int]  # split -> image count


PARAMS = DemoParams


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray, kind: int) -> np.ndarray:
    """A colour field with a class-specific pattern, so classes differ beyond flat colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 0:
        pattern = np.sin(xx / 3.0 + phase)
    elif kind == 1:
        pattern = np.sign(np.sin(xx / 4.0 + phase) * np.sin(yy / 4.0 + phase))
    elif kind == 2:
        pattern = np.sin((xx + yy) / 2.5 + phase)
    else:
        pattern = np.cos(np.hypot(xx - w / 2, yy - h / 2) / 2.0 + phase)
    noise = rng.normal(0, 8, size=(h, w, 1))
    img = base[None, None, :] + 28 * pattern[..., None] + noise
    return np.clip(img, 0, 255)


def _shape_mask(cls: int, h: int, w: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if cls == 1:
        return dy**2 + dx**2 <= r**2
    if cls == 2:
        c, s = np.cos(angle), np.sin(angle)
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if cls == 3:
        v = dy + r * 0.5
        return (v >= 0) & (v <= 1.5 * r) & (np.abs(dx) <= (1.5 * r - v) / np.sqrt(3) * 1.15)
    dist = np.hypot(dy, dx)
    return (dist <= r) & (dist >= r * 0.55)


CLASS_COLOURS = {
    1: np.array([200.0, 40.0, 40.0]),
    2: np.array([40.0, 70.0, 200.0]),
    3: np.array([230.0, 200.0, 40.0]),
    4: np.array([40.0, 170.0, 60.0]),
}


def generate(index: int, seed: int, min_side: int, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the demo: deterministic in (seed, index), independent of the rest."""
    rng = np.random.default_rng([seed, index])
    h, w = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    grey = rng.uniform(90, 170)
    background = _texture(rng, h, w, np.array([grey, grey * 0.95, grey * 0.9]), 3)
    image = background
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASSES)))
        r = rng.uniform(0.12, 0.25) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask = _shape_mask(cls, h, w, cy, cx, r, rng.uniform(0, np.pi))
        colour = CLASS_COLOURS[cls] + rng.normal(0, 12, size=3)
        image = np.where(mask[..., None], _texture(rng, h, w, colour, cls - 1), image)
        label[mask] = cls
    # A thin void band on object borders, as VOC marks uncertain pixels.
    edge = np.zeros_like(label, bool)
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    label[edge] = IGNORE
    return image.astype(np.uint8), label


def _samples(split: str, n: int, offset: int, params: DemoParams) -> Iterator[Sample]:
    for i in range(n):
        make = partial(generate, offset + i, params.seed, params.min_side, params.max_side)
        yield Sample(id=f"demo_{split}_{i:04d}", load=make)


def prepare(raw: Path | None, out: Path, params: DemoParams) -> None:
    """Generate the demo's splits straight into the prepared form."""
    source = {"generator": "usseg.datasets.demo", **asdict(params)}
    writer = PreparedWriter(out, "demo", CLASSES, has_background=True, source=source)
    splits = params.splits
    offsets = np.cumsum([0] + list(splits.values()))
    writer.write(
        (split, _samples(split, n, int(off), params)) for (split, n), off in zip(splits.items(), offsets)
    )
