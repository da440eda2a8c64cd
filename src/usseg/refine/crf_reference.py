"""The reference dense CRF: pydensecrf (Krähenbühl's C++ code), one image per call.

Everything the C extension would choke on (wrong shapes, dtypes, strides, NaN) is
checked here first, so bad input is a UssegError and never a segfault.
"""

from __future__ import annotations

import numpy as np

from usseg.errors import UssegError
from usseg.refine.params import CRFParams, check_kernel_range


def check_crf_inputs(image: np.ndarray, unary: np.ndarray, where: str) -> None:
    """Image (H, W, 3) uint8 and unary (K, H, W) finite float32 of the same H, W."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UssegError(f"{where}: CRF image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    if unary.ndim != 3 or unary.shape[1:] != image.shape[:2]:
        raise UssegError(
            f"{where}: CRF unary {unary.shape} does not match the image {image.shape[0]}x{image.shape[1]}"
        )
    if unary.shape[0] < 1 or unary.shape[0] > 255:
        raise UssegError(f"{where}: CRF needs 1..255 labels, got {unary.shape[0]}")
    if not np.isfinite(unary).all():
        raise UssegError(f"{where}: CRF unary has NaN or infinite values")


def dense_crf(image: np.ndarray, unary: np.ndarray, params: CRFParams, where: str = "image") -> np.ndarray:
    """Mean-field marginals (K, H, W) float32 for ``unary`` = -log p (K, H, W)."""
    import pydensecrf.densecrf as dcrf

    check_crf_inputs(image, unary, where)
    k, h, w = unary.shape
    check_kernel_range(params, h, w, where)
    if k == 1:  # nothing to decide; pydensecrf would only renormalise
        return np.ones((1, h, w), np.float32)
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.require(unary.reshape(k, h * w), np.float32, ["C", "W"]))
    crf.addPairwiseGaussian(sxy=float(params.gaussian_sxy), compat=float(params.gaussian_compat))
    crf.addPairwiseBilateral(
        sxy=float(params.bilateral_sxy),
        srgb=float(params.bilateral_srgb),
        rgbim=np.require(image, np.uint8, ["C", "W"]),  # its memoryview wants writable
        compat=float(params.bilateral_compat),
    )
    q = crf.inference(int(params.iterations))
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)
