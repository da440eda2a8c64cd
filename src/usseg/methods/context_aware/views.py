"""The two siamese views: photometric jitter on both, a crop + flip on the second.

The geometric transform is a crop box (normalised [x0, y0, x1, y1] of the source
frame) and a horizontal flip. The same box and flip resample the first view's feature
map into the second view's frame, which is what aligns the two feature maps: for an
equivariant network, ``apply_geometric(f(x), g) == f(apply_geometric(x, g))``.
Everything is batched tensor arithmetic driven by one ``torch.Generator``, so a seed
fixes every view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from usseg.methods.context_aware.params import Views

# ITU-R BT.601 luma, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Geometric:
    """Per-image crop boxes (B x 4: x0, y0, x1, y1 in [0, 1]) and horizontal flips (B,)."""

    boxes: torch.Tensor
    flips: torch.Tensor


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def sample_geometric(
    n: int,
    gen: torch.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_prob: float,
) -> Geometric:
    """Random resized crops (area fraction in ``scale``, aspect in ``ratio``) and flips."""
    area = _uniform(n, scale[0], scale[1], gen)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    x0 = torch.rand(n, generator=gen) * (1 - w)
    y0 = torch.rand(n, generator=gen) * (1 - h)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
    flips = torch.rand(n, generator=gen) < flip_prob
    return Geometric(boxes=boxes, flips=flips)


def source_grid(geo: Geometric, size: tuple[int, int]) -> torch.Tensor:
    """For every output pixel centre, its source position in grid_sample's [-1, 1] frame.

    Output pixel u in [0, 1] reads source x = x0 + u * (x1 - x0) (u -> 1 - u when flipped);
    in [-1, 1] coordinates that is the affine map below (align_corners=False).
    """
    boxes = geo.boxes.float()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    sign = torch.where(geo.flips, -1.0, 1.0)
    theta = torch.zeros(len(boxes), 2, 3)
    theta[:, 0, 0] = sign * w
    theta[:, 0, 2] = 2 * boxes[:, 0] + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * boxes[:, 1] + h - 1
    return F.affine_grid(theta, [len(boxes), 1, *size], align_corners=False)


def apply_geometric(x: torch.Tensor, geo: Geometric, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Crop, flip and resize a batch (images or feature maps) to ``size`` (default: its own)."""
    grid = source_grid(geo, size or (x.shape[-2], x.shape[-1])).to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * luma).sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (0 = identity), as one grouped conv."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    radius = min(radius, (min(h, w) - 1) // 2) or 1
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    safe = sigma.clamp(min=1e-3).to(x)[:, None]
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * safe**2))
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel = torch.where((sigma > 0).to(x.device)[:, None], kernel, (offsets == 0).to(x.dtype)[None])
    kernel = kernel.repeat_interleave(c, dim=0)  # one kernel per (image, channel)
    flat = x.reshape(1, b * c, h, w)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c
    )
    return flat.reshape(b, c, h, w)


def photometric(x: torch.Tensor, gen: torch.Generator, cfg: Views) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation), random grey and Gaussian blur.

    ``x`` is B x 3 x H x W in [0, 1]; the random numbers come from ``gen`` on the CPU so
    the views are the same on any device.
    """
    n = len(x)
    jitter = torch.rand(n, generator=gen) < cfg.jitter_prob

    def factor(strength: float) -> torch.Tensor:
        f = _uniform(n, max(0.0, 1 - strength), 1 + strength, gen)
        return torch.where(jitter, f, torch.ones(n)).to(x).view(n, 1, 1, 1)

    brightness, contrast, saturation = factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation)
    grey_mask = (torch.rand(n, generator=gen) < cfg.grey_prob).to(x.device).view(n, 1, 1, 1)
    blur_on = torch.rand(n, generator=gen) < cfg.blur_prob
    sigma = torch.where(blur_on, _uniform(n, *cfg.blur_sigma, gen), torch.zeros(n))

    x = (x * brightness).clamp(0, 1)
    mean = _grey(x).mean((2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    grey = _grey(x)
    x = ((x - grey) * saturation + grey).clamp(0, 1)
    x = torch.where(grey_mask, _grey(x).expand_as(x), x)
    if bool(blur_on.any()):
        x = _blur(x, sigma)
    return x.clamp(0, 1)
