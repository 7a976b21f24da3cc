"""Training losses for the LIC: rate + λ·(weighted distortion terms), each term a small module.

The semantic-perceptual loss of the paper (Murai, Sun & Katto, VCIP 2024)::

    L = R + λ · (κ0·MSE + κ1·LPIPS + κ2·CLIP-IQA + κ3·(1 − CLIP-I2T(x̂, caption)))

``R`` is the estimated rate in bits per pixel (−log2 of the likelihoods over the
image's pixels), the distortion terms are means over the batch. With only the
MSE term and κ0 = 255², this is CompressAI's ``RateDistortionLoss`` (λ on its
scale, so the zoo's λ values carry over); the forward dict names every term,
so a training log reads them directly::

    loss = CodecLoss(lmbda=0.01, kappa={"mse": 1.0})
    out = loss(net(x), x)          # {"loss", "bpp", "mse", ...}

Terms that need models (LPIPS, CLIP) are built by :func:`build_loss` from the
preset's weights; one whose weights cannot be loaded raises
:class:`~itc_core.errors.WeightsError` naming them, never drops out silently.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["CodecLoss", "MSETerm", "L1Term", "PeriodicErrorTerm", "rate_bpp", "TERMS", "PIXEL_TERMS"]

TERMS = ("mse", "l1", "periodic", "lpips", "clip_iqa", "clip_i2t")
PIXEL_TERMS = ("mse", "l1", "periodic")  # built here, no model to load
MSE_SCALE = 255.0 ** 2  # CompressAI's RateDistortionLoss puts λ on 255²·MSE


def rate_bpp(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel of a batch: Σ −log2 likelihood over every latent, divided by ``num_pixels``."""
    return sum(torch.log(lik).sum() for lik in likelihoods.values()) / (-math.log(2) * num_pixels)


class MSETerm(nn.Module):
    """Mean squared error on [0, 1] pixels times ``scale`` (255²: CompressAI's convention; 1: the paper's)."""

    name = "mse"

    def __init__(self, scale: float = MSE_SCALE):
        super().__init__()
        self.scale = scale

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        return self.scale * nn.functional.mse_loss(x_hat, x)


class L1Term(nn.Module):
    """Mean absolute error in 8-bit levels (``scale`` 255 on [0, 1] pixels).

    Where a codec cannot tell two signals apart, MSE is minimised by their *mean* and absolute error by
    their *median*: a low-rate codec trained on MSE alone paints a faint average of the patterns it is
    unsure of, with some weight on this term it draws the likelier one instead. (In the tiny world it barely
    shrank the dot grid on plain backgrounds: RESULTS.md, "The learned image codec".)
    """

    name = "l1"

    def __init__(self, scale: float = 255.0):
        super().__init__()
        self.scale = scale

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        return self.scale * nn.functional.l1_loss(x_hat, x)


class PeriodicErrorTerm(nn.Module):
    """The part of the error that repeats with a period of ``period`` pixels, as a mean square in 8-bit levels².

    The error x̂ − x is folded onto one ``period`` × ``period`` tile (averaged over every tile of the image), the
    tile's own mean (a colour offset, which MSE already sees) is taken out, and the rest is squared. A faint lattice
    painted over a whole background (a hedge between a plain and a dotted pattern, or a decoder's upsampling
    artefact at its latent stride) is a few levels on a few pixels of each tile: next to nothing in the MSE, but
    all of it lands in this term, while errors that do not repeat (edges of objects) mostly average out of the
    tile. Images whose sides are not multiples of ``period`` are cropped to them.

    ``target_max`` (in the term's units) limits it to images that do not repeat themselves: an image whose own
    folded tile (x alone, as if x̂ were black) exceeds it counts zero, so that a codec is asked not to *invent*
    a pattern on plain backgrounds without being asked to draw every real pattern (stripes, dots) exactly.
    """

    name = "periodic"

    def __init__(self, period: int = 8, scale: float = MSE_SCALE, target_max: float | None = None):
        super().__init__()
        self.period, self.scale, self.target_max = period, scale, target_max

    def tile_energy(self, error: torch.Tensor) -> torch.Tensor:
        """Per image: the mean square of ``error`` folded onto one tile, less the tile's mean (× ``scale``)."""
        p = self.period
        n, c, h, w = error.shape
        h, w = h - h % p, w - w % p
        if not h or not w:
            raise ValueError(f"images of {error.shape[2]}x{error.shape[3]} px are smaller than the period {p}")
        tile = error[:, :, :h, :w].reshape(n, c, h // p, p, w // p, p).mean(dim=(2, 4))
        tile = tile - tile.mean(dim=(2, 3), keepdim=True)
        return self.scale * tile.pow(2).mean(dim=(1, 2, 3))

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        energy = self.tile_energy(x_hat - x)
        if self.target_max is not None:
            energy = energy * (self.tile_energy(x) <= self.target_max)
        return energy.mean()


class CodecLoss(nn.Module):
    """``bpp + λ·Σ κ_t·term_t(x̂, x, captions)`` with every term reported by name.

    Args:
        lmbda: the rate-distortion trade-off λ.
        kappa: weight of each term by name (see :data:`TERMS`); zero-weight terms are not built.
        terms: the term modules by name; the MSE term is built when absent.
        mse_scale: the MSE term's factor (255² keeps λ on CompressAI's scale; the L1 term is in 8-bit levels).
    """

    def __init__(self, lmbda: float, kappa: dict[str, float], terms: dict[str, nn.Module] | None = None,
                 mse_scale: float = MSE_SCALE):
        super().__init__()
        unknown = set(kappa) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; valid: {', '.join(TERMS)}")
        self.lmbda = lmbda
        self.kappa = {name: float(k) for name, k in kappa.items() if k}
        terms = dict(terms or {})
        if "mse" in self.kappa and "mse" not in terms:
            terms["mse"] = MSETerm(mse_scale)
        if "l1" in self.kappa and "l1" not in terms:
            terms["l1"] = L1Term()
        if "periodic" in self.kappa and "periodic" not in terms:
            terms["periodic"] = PeriodicErrorTerm()
        missing = set(self.kappa) - set(terms)
        if missing:
            raise ValueError(f"loss terms {sorted(missing)} have weights but no module")
        self.terms = nn.ModuleDict({name: terms[name] for name in self.kappa})

    def forward(self, output: dict, x: torch.Tensor, captions: list[str] | None = None) -> dict[str, torch.Tensor]:
        n, _, h, w = x.shape
        out = {"bpp": rate_bpp(output["likelihoods"], n * h * w)}
        distortion = 0.0
        for name, term in self.terms.items():
            out[name] = term(output["x_hat"], x, captions)
            distortion = distortion + self.kappa[name] * out[name]
        out["distortion"] = distortion
        out["loss"] = out["bpp"] + self.lmbda * distortion
        return out
