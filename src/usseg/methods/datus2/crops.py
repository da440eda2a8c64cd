"""Step 2 of DatUS²: one masked box crop per valid segment, prepared for the ViT's CLS.

Official code: the image is resized (bicubic) to the feature image size, patches outside
the segment are zeroed, the segment's bounding box is cropped, then
Resize(256, bicubic) -> CenterCrop(224) -> ToTensor -> ImageNet normalisation. The
official pipeline fed BGR pixels at the key stage; here every stage sees RGB.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILLS = ("zero", "mean")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp an HxWx3 uint8 image to ``size`` = (H, W), bicubic, as the key grid saw it."""
    height, width = size
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def fill_value(fill: str) -> np.ndarray:
    """Pixel value for patches outside the segment: black (official) or the ImageNet mean."""
    if fill == "zero":
        return np.zeros(3, dtype=np.uint8)
    return np.round(np.asarray(IMAGENET_MEAN) * 255).astype(np.uint8)


def segment_crops(
    image: np.ndarray, segments: np.ndarray, patch_size: int, fill: str = "zero"
) -> list[np.ndarray]:
    """Masked bounding-box crop of every valid segment, in segment-id order.

    ``image`` is already warped to (gh * patch_size, gw * patch_size); ``segments`` is the
    (gh, gw) segment map (negative = no valid segment).
    """
    gh, gw = segments.shape
    if image.shape[:2] != (gh * patch_size, gw * patch_size):
        raise ValueError(f"image {image.shape[:2]} does not match grid {gh}x{gw} of {patch_size}px patches")
    pixels = segments.repeat(patch_size, axis=0).repeat(patch_size, axis=1)
    background = fill_value(fill)
    crops = []
    for seg in range(int(segments.max()) + 1):
        rows, cols = np.nonzero(segments == seg)
        y0, y1 = rows.min() * patch_size, (rows.max() + 1) * patch_size
        x0, x1 = cols.min() * patch_size, (cols.max() + 1) * patch_size
        inside = pixels[y0:y1, x0:x1] == seg
        crops.append(np.where(inside[..., None], image[y0:y1, x0:x1], background))
    return crops


def crop_transform(resize: int = 256, size: int = 224) -> transforms.Compose:
    """The official CLS_extractor transform (torchvision, PIL bicubic), on RGB crops."""
    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def crops_to_batch(crops: list[np.ndarray], transform: transforms.Compose) -> torch.Tensor:
    """Stack transformed crops into one (n, 3, size, size) float tensor."""
    return torch.stack([transform(Image.fromarray(crop)) for crop in crops])
