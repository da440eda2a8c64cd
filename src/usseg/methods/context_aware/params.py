"""The context_aware steps' parameters, typed (the schema, context_aware.schema.yaml, has checked them).

Training reads every key of the group but the prediction-only ones, in params.yaml's order
(the order of the JSON the workflow passes); the trained folder's config.json keeps them, so
prediction rebuilds the network from what training used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Views:
    """The two views' augmentations (the photometric part on both, the geometric on the second)."""

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip_prob: float
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    grey_prob: float
    blur_prob: float
    blur_sigma: tuple[float, float]


@dataclass(frozen=True)
class LossWeights:
    within: float
    cross: float
    cell: float
    kl: float


@dataclass(frozen=True)
class TrainParams:
    """`usseg context-aware-train`: the network, the clustering passes, the views and the losses."""

    arch: str  # resnet18 | resnet50 | vit
    checkpoint: str | None  # the ResNet's init file; None: random init
    vit_facet: str
    fpn_dim: int
    dim: int
    image_size: int
    train_split: str  # auto | a split name
    k: int | None  # None: the number of classes
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    seed: int
    device: str  # auto | cpu | cuda
    amp: bool
    workers: int
    keep_checkpoints: int
    log_every: int
    cluster_batch_size: int
    cluster_niter: int
    cluster_init_batches: int
    cluster_points_per_image: int
    views: Views
    loss_weights: LossWeights
    psg: bool
    psg_levels: tuple[int, ...]
    psg_k: int | None  # None: k
    psg_fit_images: int | None  # None: every image
    psg_target_temperature: float
    cae: bool
    cae_window: int
    cae_sigma_spatial: float
    cae_sigma_colour: float
    cae_global: bool


@dataclass(frozen=True)
class PredictParams:
    """`usseg context-aware-predict`: what prediction reads; changing it does not retrain."""

    output: str  # soft | hard
    predict_temperature: float
    cluster_batch_size: int
    workers: int
    device: str
    amp: bool
