"""Opening Zarr stores that Snakemake produced as directory outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import xarray as xr


def open_zarr(path: str | Path) -> xr.Dataset:
    """Open lazily; ignores the .snakemake_timestamp file Snakemake leaves in directory outputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp")
        return xr.open_zarr(path, consolidated=False)
