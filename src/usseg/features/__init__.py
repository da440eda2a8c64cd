"""Feature cache: one Zarr store of ViT features per (dataset, backbone)."""
