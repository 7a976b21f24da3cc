"""Rate-distortion points of whole files, and Bjøntegaard deltas against what a user would pick instead.

    images = [sample(s)[0] for s in split_seeds("test", 100)]
    lic = lic_points("tiny", images)                                # every rate point, real .itc bytes
    webp = [pillow_point(images, "WEBP", q) for q in WEBP_QUALITIES]
    bd_rate_vs(webp, lic)                                          # % rate, negative: the LIC saves bits

Rates are whole files (containers included) in bits per pixel, averaged over
images; PSNR is the mean over images. BD figures use the ``bjontegaard`` package
(pchip) over the curves' overlapping PSNR range, on the monotone part of each curve.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from . import metrics
from .data import image_to_tensor
from .metrics import psnr

__all__ = ["WEBP_QUALITIES", "JPEG_QUALITIES", "pillow_round_trip", "pillow_point", "lic_points", "monotone", "bd_rate_vs",
           "below_curve"]

WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
JPEG_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)


def pillow_round_trip(image: Image.Image, fmt: str, quality: int) -> tuple[int, Image.Image]:
    """(file bytes, decoded RGB image) of ``image`` saved by Pillow as ``fmt`` (WEBP: method 6) at ``quality``."""
    buf = io.BytesIO()
    image.save(buf, fmt, quality=quality, **({"method": 6} if fmt == "WEBP" else {}))
    return buf.tell(), Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def pillow_point(images: list[Image.Image], fmt: str, quality: int) -> dict:
    """Mean whole-file bpp and PSNR of ``images`` saved by Pillow as ``fmt`` (WEBP: method 6) at ``quality``."""
    bpps, psnrs = [], []
    for image in images:
        size, decoded = pillow_round_trip(image, fmt, quality)
        bpps.append(8 * size / (image.width * image.height))
        psnrs.append(psnr(image_to_tensor(image), image_to_tensor(decoded)))
    return {"quality": quality, "bpp": float(np.mean(bpps)), "psnr_db": float(np.mean(psnrs))}


def lic_points(preset, images: list[Image.Image], qualities=None) -> list[dict]:
    """Mean whole-file bpp (``.itc`` bytes, no caption) and PSNR of the decoded image per rate point.

    ``preset`` is a preset name, a YAML path or an :class:`~itc_core.codec.ImageTextCodec`.
    """
    from .codec import ImageTextCodec

    codec = preset if isinstance(preset, ImageTextCodec) else ImageTextCodec.from_preset(preset)
    rows = []
    for q in qualities or codec.config.image_codec.qualities:
        bpps, psnrs = [], []
        for image in images:
            result = codec.encode(image, q, caption=False)
            decoded = codec.decode(result.data, restore=False).reconstruction
            bpps.append(result.bpp)
            psnrs.append(psnr(image_to_tensor(image), image_to_tensor(decoded)))
        rows.append({"quality": q, "bpp": float(np.mean(bpps)), "psnr_db": float(np.mean(psnrs))})
    return rows


def monotone(rows: list[dict], key: str = "psnr_db") -> list[dict]:
    """The points of a curve, by rate, whose quality beats every cheaper point's (:func:`itc_core.metrics.monotone`)."""
    return metrics.monotone(rows, key)


def bd_rate_vs(anchor: list[dict], test: list[dict], key: str = "psnr_db") -> float | None:
    """BD-rate (%) of ``test`` against ``anchor`` over their overlapping quality range; None without overlap.

    :func:`itc_core.metrics.bd_rate` (pchip, monotone part, lower-is-better metrics oriented).
    """
    return metrics.bd_rate(anchor, test, key)


def below_curve(anchor: list[dict], test: list[dict], key: str = "psnr_db") -> list[int]:
    """Qualities of ``test`` under ``anchor``'s curve (linear in log-rate) at the same bpp, within its range."""
    a = sorted(anchor, key=lambda r: r["bpp"])
    rates, quality = np.log([r["bpp"] for r in a]), [r[key] for r in a]
    return [r["quality"] for r in test
            if a[0]["bpp"] <= r["bpp"] <= a[-1]["bpp"] and r[key] < np.interp(np.log(r["bpp"]), rates, quality)]
