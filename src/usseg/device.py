"""Choosing the torch device from a `device` parameter (auto | cpu | cuda)."""

from __future__ import annotations

import torch

from usseg.errors import UssegError


def pick_device(name: str, param: str = "device") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one names the parameter."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UssegError(f"params {param} is 'cuda' but no CUDA device is available")
    return torch.device(name)
