"""usseg: reproducible unsupervised semantic segmentation on self-supervised ViT features."""

__version__ = "0.1.0"
