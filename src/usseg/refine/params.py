"""The refine group of params.yaml, checked once and turned into typed settings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from usseg.artifacts.label_maps import NO_CRF
from usseg.errors import UssegError

IMPLS = ("pydensecrf", "torch")
DEVICES = ("auto", "cpu", "cuda")
CRF_KEYS = (
    "iterations",
    "gaussian_sxy",
    "gaussian_compat",
    "bilateral_sxy",
    "bilateral_srgb",
    "bilateral_compat",
)
KEYS = (
    "crf",
    "impl",
    "presets",
    "unary_clip",
    "label_confidence",
    "fill_unlabelled",
    "save_probs",
    "device",
    "batch_size",
)


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


def crf_params(name: str, values: Mapping[str, Any]) -> CRFParams:
    """Check one preset's values: a bad kernel width would crash inside the C extension."""
    missing = [k for k in CRF_KEYS if k not in values]
    extra = sorted(set(values) - set(CRF_KEYS))
    if missing or extra:
        raise UssegError(f"params refine.presets.{name}: missing {missing}, unknown {extra}")
    iterations = values["iterations"]
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise UssegError(f"params refine.presets.{name}.iterations: {iterations!r} is not an integer >= 0")
    for key in CRF_KEYS[1:]:
        v = values[key]
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise UssegError(f"params refine.presets.{name}.{key}: {v!r} is not a number")
        if key.endswith(("sxy", "srgb")) and v <= 0:
            raise UssegError(f"params refine.presets.{name}.{key}: kernel width {v} must be > 0")
    return CRFParams(**{k: values[k] for k in CRF_KEYS})


def settings(params: Mapping[str, Any]) -> RefineSettings:
    """Validate the refine group (the same rules as its JSON schema, for CLI callers)."""
    missing = [k for k in KEYS if k not in params]
    extra = sorted(set(params) - set(KEYS))
    if missing or extra:
        raise UssegError(f"params refine: missing {missing}, unknown {extra}")
    crf = params["crf"]
    presets = params["presets"]
    if crf is False or crf == "off":  # YAML 1.1 reads a bare off as false; DVC's rewrite drops the quotes
        raise UssegError(f"params refine.crf: {crf!r}: write none for no CRF (off is a YAML boolean)")
    if crf != NO_CRF and crf not in presets:
        raise UssegError(f"params refine.crf: {crf!r} is neither {NO_CRF!r} nor a preset ({sorted(presets)})")
    if params["impl"] not in IMPLS:
        raise UssegError(f"params refine.impl: {params['impl']!r} (choose from {list(IMPLS)})")
    if params["device"] not in DEVICES:
        raise UssegError(f"params refine.device: {params['device']!r} (choose from {list(DEVICES)})")
    clip = float(params["unary_clip"])
    if not 0 < clip < 1:
        raise UssegError(f"params refine.unary_clip: {clip} must be in (0, 1)")
    confidence = float(params["label_confidence"])
    if not 0 < confidence <= 1:
        raise UssegError(f"params refine.label_confidence: {confidence} must be in (0, 1]")
    batch_size = params["batch_size"]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UssegError(f"params refine.batch_size: {batch_size!r} must be an integer >= 1")
    return RefineSettings(
        crf=crf,
        crf_params=None if crf == NO_CRF else crf_params(crf, presets[crf]),
        impl=params["impl"],
        unary_clip=clip,
        label_confidence=confidence,
        fill_unlabelled=bool(params["fill_unlabelled"]),
        save_probs=bool(params["save_probs"]),
        device=params["device"],
        batch_size=batch_size,
    )
