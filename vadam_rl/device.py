"""The training device a config or a command names."""

from __future__ import annotations

import torch

from vadam_rl.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a UserError for unknown or absent devices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for, but no CUDA device is available")
    return resolved
