"""Image quality metrics on (N, 3, H, W) tensors in [0, 1]."""

from __future__ import annotations

import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

__all__ = ["psnr", "ssim", "ms_ssim"]


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (inf when identical)."""
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Structural similarity (11×11 Gaussian window); sides must be at least 11 px."""
    return float(_ssim(x.float(), y.float(), data_range=1.0, size_average=True))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Multi-scale SSIM; pytorch_msssim needs the shorter side over 160 px."""
    if min(x.shape[-2:]) <= 160:
        raise ValueError(f"MS-SSIM needs images over 160 px on the shorter side, got {tuple(x.shape[-2:])}; use ssim")
    return float(_ms_ssim(x.float(), y.float(), data_range=1.0, size_average=True))
