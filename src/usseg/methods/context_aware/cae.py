"""Context-Aware Embedding: fuse each pixel with neighbours close in space AND colour.

g_i = sum_j w_ij f_j over a local window, w_ij proportional to
exp(-|p_i - p_j|^2 / 2 sigma_s^2 - |rgb_i - rgb_j|^2 / 2 sigma_c^2) (a bilateral filter on
the feature map), so context comes from the same surface and not across object edges;
[f_i, g_i, mean(f)] then goes through a 1x1 convolution. Built on ``F.unfold`` so the
whole window is one tensor op; positions outside the image get no weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_offsets(window: int) -> torch.Tensor:
    """(window^2, 2) (dy, dx) offsets in unfold's order (row-major over the window)."""
    r = torch.arange(window) - window // 2
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dy.reshape(-1), dx.reshape(-1)], dim=1)


def bilateral_weights(rgb: torch.Tensor, window: int, sigma_spatial: float, sigma_colour: float) -> torch.Tensor:
    """Normalised weights (B, window^2, h, w) of each pixel's neighbours.

    ``rgb`` is B x 3 x h x w at the feature grid (values in [0, 1]); ``sigma_spatial`` is in
    grid cells. Each pixel's weights sum to 1 over its in-image neighbours.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"cae_window={window}: must be a positive odd number")
    b, c, h, w = rgb.shape
    pad = window // 2
    n = window * window
    neighbours = F.unfold(rgb, window, padding=pad).view(b, c, n, h, w)
    colour = ((neighbours - rgb[:, :, None]) ** 2).sum(1)
    spatial = (window_offsets(window).to(rgb) ** 2).sum(1).view(1, n, 1, 1)
    logits = -spatial / (2 * sigma_spatial**2) - colour / (2 * sigma_colour**2)
    inside = F.unfold(rgb.new_ones(1, 1, h, w), window, padding=pad).view(1, n, h, w) > 0
    return logits.masked_fill(~inside, float("-inf")).softmax(dim=1)


def aggregate(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """g = sum_j w_ij f_j: the weighted neighbourhood average of ``features`` (B, C, h, w)."""
    b, c, h, w = features.shape
    n = weights.shape[1]
    window = round(n**0.5)
    neighbours = F.unfold(features, window, padding=window // 2).view(b, c, n, h, w)
    return (neighbours * weights.to(features.dtype)[:, None]).sum(2)


class ContextAwareEmbedding(nn.Module):
    """[f, bilateral context g, global average] -> 1x1 conv, same channel count as ``f``."""

    def __init__(
        self, channels: int, window: int, sigma_spatial: float, sigma_colour: float, use_global: bool = True
    ) -> None:
        super().__init__()
        self.window = window
        self.sigma_spatial = sigma_spatial
        self.sigma_colour = sigma_colour
        self.use_global = use_global
        self.fuse = nn.Conv2d((3 if use_global else 2) * channels, channels, kernel_size=1)

    def forward(self, features: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` is the network's input (B x 3 x H x W in [0, 1]), pooled to the feature grid."""
        small = F.adaptive_avg_pool2d(rgb.float(), features.shape[-2:])
        weights = bilateral_weights(small, self.window, self.sigma_spatial, self.sigma_colour)
        context = aggregate(features, weights)
        parts = [features, context]
        if self.use_global:
            parts.append(features.mean((2, 3), keepdim=True).expand_as(features))
        return self.fuse(torch.cat(parts, dim=1))
