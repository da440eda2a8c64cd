"""The refine group of params.yaml as typed settings (its rules: refine.schema.yaml)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from usseg.artifacts.label_maps import NO_CRF
from usseg.errors import UssegError
from usseg.params import check_group


@dataclass(frozen=True)
class CRFParams:
    """pydensecrf's parameters: ``addPairwiseGaussian(sxy, compat)`` and
    ``addPairwiseBilateral(sxy, srgb, rgbim, compat)``, then ``iterations`` of mean field."""

    iterations: int
    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float


def _lattice_extent(extents: list[float]) -> float:
    """Bound on |permutohedral lattice coordinate| for features in [0, extents] (densecrf's
    elevation: scale_i = sqrt(2/3) (d+1) / sqrt((i+1)(i+2)))."""
    d = len(extents)
    scaled = [e * math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2)) for i, e in enumerate(extents)]
    return sum(scaled) + d * max(scaled) + d + 1


def check_kernel_range(params: CRFParams, height: int, width: int, where: str) -> None:
    """pydensecrf keys its lattice with int16: too fine kernels on a big image overflow it
    (garbage or a crash in C), and float32 elevation loses the lattice long before."""
    side = max(height, width) - 1
    gaussian = _lattice_extent([side / params.gaussian_sxy] * 2)
    bilateral = _lattice_extent([side / params.bilateral_sxy] * 2 + [255.0 / params.bilateral_srgb] * 3)
    if max(gaussian, bilateral) >= 2**15 - 1:
        raise UssegError(
            f"{where}: CRF kernel widths too small for a {width}x{height} image (gaussian_sxy "
            f"{params.gaussian_sxy}, bilateral_sxy {params.bilateral_sxy}, bilateral_srgb "
            f"{params.bilateral_srgb}): the lattice exceeds pydensecrf's 16-bit coordinates"
        )


@dataclass(frozen=True)
class RefineSettings:
    crf: str
    crf_params: CRFParams | None  # None when crf is "none"
    impl: str
    unary_clip: float
    label_confidence: float
    fill_unlabelled: bool
    save_probs: bool
    device: str
    batch_size: int

    def describe(self) -> dict[str, Any]:
        """What index.json records about how the maps were made."""
        return {
            "crf": self.crf,
            "crf_params": asdict(self.crf_params) if self.crf_params else None,
            "impl": self.impl,
            "unary_clip": self.unary_clip,
            "label_confidence": self.label_confidence,
            "fill_unlabelled": self.fill_unlabelled,
        }


def settings(params: Mapping[str, Any]) -> RefineSettings:
    """The refine group as typed settings, checked against its schema (refine.schema.yaml)."""
    check_group("refine", params)
    crf = params["crf"]
    return RefineSettings(
        crf=crf,
        crf_params=None if crf == NO_CRF else CRFParams(**params["presets"][crf]),
        impl=params["impl"],
        unary_clip=float(params["unary_clip"]),
        label_confidence=float(params["label_confidence"]),
        fill_unlabelled=params["fill_unlabelled"],
        save_probs=params["save_probs"],
        device=params["device"],
        batch_size=params["batch_size"],
    )
