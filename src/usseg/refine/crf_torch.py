"""Batched dense-CRF mean-field inference in PyTorch, on the GPU when there is one.

Same energy and the same filters as pydensecrf (Krähenbühl's densecrf v2): both the
Gaussian and the bilateral pairwise terms are evaluated with a permutohedral lattice
(Adams et al. 2010) built exactly as densecrf builds it (same elevation, rounding,
barycentric weights, 1-0.5-0.5 blur along the d+1 lattice axes, slicing with alpha),
Potts compatibility (a message ``+compat * filtered Q``), NORMALIZE_SYMMETRIC kernel
normalisation and the lattice's own self weight (densecrf does not subtract the pixel
itself). Because the filter is the same approximation, not merely the same Gaussian,
the label maps agree with pydensecrf's to float rounding (see docs/refine.md).

The lattice is hashed with one sort of int64 vertex codes that carry the image index, so
a batch of images is one lattice; splat, blur and slice are CSR matrices built once and
reused by every iteration (MKL on a CPU, cuSPARSE on a GPU).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from usseg.errors import UssegError
from usseg.refine.params import CRFParams, check_kernel_range

MAX_CODE = 2**62


class Permutohedral:
    """A permutohedral lattice over a batch of point sets; ``filter`` is its Gaussian blur."""

    def __init__(self, features: torch.Tensor, batch: torch.Tensor, num_batches: int) -> None:
        """``features`` (P, d) float32 already divided by the kernel widths; ``batch`` (P,)."""
        points, d = features.shape
        device = features.device
        # Elevate onto the hyperplane sum(x) = 0 in d+1 dimensions (densecrf's loop, vectorised,
        # summing in the same order so float rounding matches).
        i = torch.arange(d, device=device, dtype=torch.float64)
        scale = (math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt((i + 2) * (i + 1))).float()
        cf = features * scale
        suffix = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])  # sum_{k>=i} cf_k
        tail = torch.cat([suffix[:, 1:], torch.zeros_like(suffix[:, :1])], 1)
        j = torch.arange(1, d + 1, device=device, dtype=torch.float32)
        elevated = torch.cat([suffix[:, :1], tail - j * cf], 1)  # (P, d+1)
        # Nearest remainder-0 point: each coordinate rounded to a multiple of d+1 (ties down).
        v = elevated * (1.0 / (d + 1))
        up, down = torch.ceil(v), torch.floor(v)
        a = torch.where((d + 1) * up - elevated < elevated - (d + 1) * down, up, down)
        total = a.sum(1).long()
        # Rank of each coordinate's residual, ties broken as densecrf breaks them.
        diff = elevated - (d + 1) * a
        # densecrf: rank_i = #{j > i: diff_j > diff_i} + #{j < i: diff_j >= diff_i}, which is
        # the position of i in a stable descending sort.
        positions = torch.arange(d + 1, device=device).expand(points, -1)
        order = torch.sort(diff, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, positions) + total[:, None]
        a = a.long()
        low, high = rank < 0, rank > d
        rank = torch.where(low, rank + d + 1, torch.where(high, rank - d - 1, rank))
        a = torch.where(low, a + 1, torch.where(high, a - 1, a))
        # Barycentric weights of the d+1 enclosing vertices.
        w = (elevated - (d + 1) * a.float()) * (1.0 / (d + 1))
        bary = torch.zeros(points, d + 2, device=device)
        bary.scatter_add_(1, d - rank, w)
        bary.scatter_add_(1, d - rank + 1, -w)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        bary = bary[:, : d + 1]
        # Vertex r of a point has key (d+1)(a - [rank > d-r]) + r on its first d coordinates
        # (the last is implied): all share the residue r, so it is coded as (image, r, q)
        # in mixed radix, and a neighbour's code is the vertex's code plus a constant.
        qmin = a[:, :d].amin(0) - 2  # margins: vertices reach a-1, their neighbours a-2..a+1
        radix = (a[:, :d].amax(0) - qmin + 2).tolist()
        strides = [1]
        for size in reversed(radix):
            strides.insert(0, strides[0] * size)
        stride_r, self._strides = strides[0], strides[1:]
        if num_batches * (d + 1) * stride_r >= MAX_CODE:
            raise UssegError(
                "CRF lattice too large to index: the kernel widths (sxy, srgb) are too small "
                "for these images"
            )
        stride = torch.tensor(self._strides, device=device)
        base = batch.long() * ((d + 1) * stride_r) + ((a[:, :d] - qmin) * stride).sum(1)
        # Vertex r lowers the coordinates ranked above d-r: subtract their strides, taken
        # in rank order (the implied last coordinate has none).
        by_rank = torch.empty_like(rank).scatter_(1, rank, positions)
        lowered = torch.cumsum(torch.flip(torch.cat([stride, stride.new_zeros(1)])[by_rank], [1]), 1)
        lowered = torch.cat([lowered.new_zeros(points, 1), lowered[:, :d]], 1)  # ranks > d-r
        r = torch.arange(d + 1, device=device)
        codes = base[:, None] + r * stride_r - lowered  # (P, d+1)
        # One sort hashes the lattice: unique vertices, and the splat matrix in vertex order.
        sorted_codes, perm = torch.sort(codes.reshape(-1))
        self.vertices, inverse, counts = torch.unique_consecutive(
            sorted_codes, return_inverse=True, return_counts=True
        )
        self.size = m = self.vertices.numel()
        alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self.splat = _sparse_csr(
            _crow(counts), torch.div(perm, d + 1, rounding_mode="floor"), bary.reshape(-1)[perm], (m, points)
        )
        offset = torch.empty_like(inverse).scatter_(0, perm, inverse)
        vertex_r = torch.empty(m, dtype=torch.long, device=device).scatter_(0, offset, r.repeat(points))
        offset = offset.reshape(points, d + 1)
        offset, order = torch.sort(offset, 1)
        self.slice = _sparse_csr(
            torch.arange(0, points * (d + 1) + 1, d + 1, device=device),
            offset.reshape(-1),
            (torch.gather(bary, 1, order) * alpha).reshape(-1),
            (points, m),
        )
        self.blur = [self._blur_matrix(k, vertex_r, d, stride_r) for k in range(d + 1)]

    def _blur_matrix(self, axis: int, vertex_r: torch.Tensor, d: int, stride_r: int) -> torch.Tensor:
        """Blur along lattice axis ``axis``: x_i + 0.5 (x_n1 + x_n2), as a CSR matrix.

        n1 = key - 1 except key[axis] + d, and n2 is its inverse step. In code space the
        step is a constant that depends only on whether the residue wraps round (r = 0).
        """
        explicit = self._strides[axis] if axis < d else 0
        plain, wrapped = explicit - stride_r, d * stride_r - (sum(self._strides) - explicit)
        m = self.size
        cols, found = [], []
        for code in (
            self.vertices + torch.where(vertex_r == 0, wrapped, plain),  # n1 of this vertex
            self.vertices - torch.where(vertex_r == d, wrapped, plain),  # n2: n1(n2) = this
        ):
            idx = torch.searchsorted(self.vertices, code).clamp_(max=m - 1)
            found.append(self.vertices[idx] == code)
            cols.append(idx)
        index = torch.arange(m, device=vertex_r.device)
        table = torch.stack([cols[0], index, cols[1]], 1)
        mask = torch.stack([found[0], torch.ones_like(found[0]), found[1]], 1)
        # CSR wants each row's columns ascending.
        table, order = torch.sort(torch.where(mask, table, m), 1)
        mask = torch.gather(mask, 1, order)
        vals = torch.tensor([0.5, 1.0, 0.5], device=vertex_r.device).expand(m, 3)
        return _sparse_csr(_crow(mask.sum(1)), table[mask], torch.gather(vals, 1, order)[mask], (m, m))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat (P, C) values onto the lattice, blur along each axis, slice back."""
        grid = self.splat @ values
        for blur in self.blur:
            grid = blur @ grid
        return self.slice @ grid


def _sparse_csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix, without torch's one-off "beta" and "invariant checks" warnings.

    int32 indices where they fit: MKL's SpMM wants them and would convert on every call.
    """
    if col.numel() < 2**31 - 1 and max(shape) < 2**31 - 1:
        crow, col = crow.int(), col.int()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
        return torch.sparse_csr_tensor(crow, col, val, shape)


def _crow(counts: torch.Tensor) -> torch.Tensor:
    """CSR row pointers from the number of entries per row."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


class _Kernel:
    """One pairwise term: its lattice, symmetric normalisation and Potts weight."""

    def __init__(self, features: torch.Tensor, batch: torch.Tensor, num_batches: int, compat: float) -> None:
        self.lattice = Permutohedral(features, batch, num_batches)
        ones = torch.ones(features.shape[0], 1, device=features.device)
        self.norm = 1.0 / torch.sqrt(self.lattice.filter(ones) + 1e-20)
        self.compat = float(compat)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        return self.compat * self.norm * self.lattice.filter(q * self.norm)


def _features(images: torch.Tensor, sxy: float, srgb: float | None) -> torch.Tensor:
    """densecrf's feature vectors: (x/sxy, y/sxy[, rgb/srgb]) per pixel, float32."""
    b, h, w = images.shape[:3]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=torch.float32),
        torch.arange(w, device=images.device, dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([xs / sxy, ys / sxy], -1).reshape(1, h * w, 2).expand(b, -1, -1)
    if srgb is None:
        return pos.reshape(-1, 2)
    rgb = images.reshape(b, h * w, 3).float() / srgb
    return torch.cat([pos, rgb], -1).reshape(-1, 5)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over labels of (P, K), computed label-major: ~10x faster on a CPU for small K."""
    return torch.softmax(logits.t(), 0).t().contiguous()


def dense_crf_batch(
    images: np.ndarray | torch.Tensor,
    unary: np.ndarray | torch.Tensor,
    params: CRFParams,
    device: torch.device,
) -> torch.Tensor:
    """Mean-field marginals (B, K, H, W) for images (B, H, W, 3) uint8 and unary (B, K, H, W).

    ``unary`` is the negative log-probability (already clipped and validated by the caller).
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # decoded images are read-only; torch warns on those
    images = torch.as_tensor(images, device=device)
    unary = torch.as_tensor(unary, device=device, dtype=torch.float32)
    b, k, h, w = unary.shape
    if images.shape != (b, h, w, 3):
        raise UssegError(f"CRF: images {tuple(images.shape)} do not match unary {tuple(unary.shape)}")
    check_kernel_range(params, h, w, "CRF batch")
    batch = torch.arange(b, device=device).repeat_interleave(h * w)
    kernels = [
        _Kernel(_features(images, params.gaussian_sxy, None), batch, b, params.gaussian_compat),
        _Kernel(
            _features(images, params.bilateral_sxy, params.bilateral_srgb), batch, b, params.bilateral_compat
        ),
    ]
    neg_unary = -unary.permute(0, 2, 3, 1).reshape(b * h * w, k)
    q = _softmax(neg_unary)
    for _ in range(params.iterations):
        logits = neg_unary.clone()
        for kernel in kernels:
            logits += kernel.message(q)
        q = _softmax(logits)
    return q.reshape(b, h, w, k).permute(0, 3, 1, 2)


def batches(
    sizes: Sequence[tuple[int, int]], batch_size: int, labels: int, max_elements: int = 2**28
) -> list[list[int]]:
    """Indices grouped by image size into batches of at most ``batch_size`` images and
    ``max_elements`` pixel x label values (1 GiB per float32 tensor), first-seen order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    out = []
    for (h, w), idx in groups.items():
        n = max(1, min(batch_size, max_elements // max(1, h * w * labels)))
        out.extend(idx[s : s + n] for s in range(0, len(idx), n))
    return out
