"""Stand-in pictures: the demo's shapes on textures, with each benchmark's own class ids."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from usseg.artifacts.prepared import IGNORE
from usseg.datasets import demo

MIN_SIDE, MAX_SIDE = 160, 240  # pixels; the features stage warps to each dataset's size anyway


def picture(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, shape map: 0 background, 1..4 shapes, 255 on borders), deterministic."""
    return demo.generate(index, seed, MIN_SIDE, MAX_SIDE)


def relabel(shapes: np.ndarray, background: int, objects: list[int], void: int | None = IGNORE) -> np.ndarray:
    """A shape map in a benchmark's ids: shape c -> objects[c - 1], borders -> ``void``
    (or the background when the benchmark has no void label)."""
    lut = np.full(256, background, np.uint8)
    lut[1 : 1 + len(objects)] = objects
    lut[IGNORE] = background if void is None else void
    return lut[shapes]


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(label: np.ndarray, palette: list[list[int]] | None = None) -> bytes:
    """A grey PNG, or a palette PNG whose indices are the ids (as VOC ships its masks)."""
    im = Image.fromarray(label, "L")
    if palette is not None:
        im.putpalette([v for colour in palette for v in colour])
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def bmp(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "BMP")
    return buf.getvalue()
