"""Step 1 of DatUS²: per image, Louvain communities of the patch-key graph, split into
8-connected components on the patch grid; components of more than tau patches are the
image's valid segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from sknetwork.clustering import Louvain

INVALID = -1
# 8-connectivity inside one community slice, none across slices (see split_components).
_EIGHT_CONNECTED_PER_SLICE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_SLICE[1] = True


def key_graph(keys: np.ndarray, threshold: float = 0.0, center: bool = False) -> sp.csr_matrix:
    """Unweighted graph of the patches: an edge where the key dot product exceeds ``threshold``.

    ``keys`` is (n, channels) or (gh, gw, channels). As in the official code the affinity is
    the raw dot product in float32 and the diagonal (self loops) is kept. ``center``
    subtracts the image's mean key first: DINOv2 keys share a component (the key bias)
    so large that every raw dot product is positive, the graph complete and Louvain
    left with singletons. Vectorised: the official element-wise double loop took ~4.8 s
    per image.
    """
    flat = np.asarray(keys, dtype=np.float32).reshape(-1, keys.shape[-1])
    if center:
        flat = flat - flat.mean(axis=0)
    return sp.csr_matrix((flat @ flat.T > threshold).astype(np.float32))


def louvain(adjacency: sp.csr_matrix, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Community id per node (scikit-network Louvain, modularity 'dugue', nodes not shuffled).

    scikit-network was chosen over networkx: 0.06 s vs 1.9 s on a 784-node graph, and its
    result does not depend on the seed (networkx's does). A graph without any edge has
    each node as its own community (scikit-network rejects empty matrices).
    """
    if adjacency.nnz == 0:
        return np.arange(adjacency.shape[0])
    return np.asarray(Louvain(resolution=resolution, random_state=seed).fit_predict(adjacency))


def split_components(communities: np.ndarray, tau: int) -> tuple[np.ndarray, int]:
    """Split each community into 8-connected components; keep those of more than ``tau`` patches.

    Returns the segment map (valid segments numbered 0.. in community then raster order,
    the official order; ``INVALID`` elsewhere) and the number of components. One
    ``ndimage.label`` call over the one-hot community stack labels every community at once.
    """
    ids, inverse = np.unique(communities, return_inverse=True)
    inverse = inverse.reshape(communities.shape)
    onehot = inverse[None] == np.arange(len(ids))[:, None, None]
    components, count = ndimage.label(onehot, structure=_EIGHT_CONNECTED_PER_SLICE)
    flat = components.max(axis=0)  # each patch lies in exactly one slice
    sizes = np.bincount(flat.ravel(), minlength=count + 1)
    valid = sizes > tau
    valid[0] = False
    renumber = np.full(count + 1, INVALID, dtype=np.int32)
    renumber[valid] = np.arange(int(valid.sum()), dtype=np.int32)
    return renumber[flat], int(count)


@dataclass(frozen=True)
class ImageSegments:
    """One image's communities and valid segments on its patch grid."""

    communities: np.ndarray  # (gh, gw) int32, 0..n_communities-1
    segments: np.ndarray  # (gh, gw) int32, valid segment id or INVALID
    num_components: int

    @property
    def num_segments(self) -> int:
        return int(self.segments.max()) + 1


def segment_image(
    keys: np.ndarray,
    threshold: float = 0.0,
    resolution: float = 1.0,
    seed: int = 0,
    tau: int = 5,
    center: bool = False,
) -> ImageSegments:
    """Patch keys (gh, gw, channels) -> communities and valid segments."""
    gh, gw = keys.shape[:2]
    communities = (
        louvain(key_graph(keys, threshold, center), resolution, seed).reshape(gh, gw).astype(np.int32)
    )
    segments, count = split_components(communities, tau)
    return ImageSegments(communities=communities, segments=segments, num_components=count)
