"""Reading images for the codec: any PNG/JPEG mode in, 8-bit RGB out, with a note on what was converted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageReadError

__all__ = ["load_image", "to_rgb", "image_to_tensor", "tensor_to_image"]


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """``image`` as 8-bit RGB, and one note per conversion made (empty if it already was)."""
    notes = []
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale the full range to 8 bits rather than clipping at 255.
        array = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.round(array / top * 255).clip(0, 255).astype(np.uint8), "L")
        notes.append(f"converted {mode} (16-bit grayscale) to 8-bit RGB")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        notes.append("expanded the palette image to RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        notes.append(f"dropped the alpha channel of a {mode} image (composited on white)")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
        notes.append(f"converted grayscale ({mode}) to RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"converted {mode} to RGB")
    return image, notes


def load_image(path: str | Path) -> tuple[Image.Image, list[str]]:
    """Read an image file as 8-bit RGB; returns it and notes on conversions.

    Raises:
        ImageReadError: the file is missing or is not an image PIL can read.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            return to_rgb(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (1, 3, H, W) float tensor in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1] as an 8-bit RGB PIL image (rounded, clamped)."""
    x = x.detach().cpu()
    if x.dim() == 4:
        x = x[0]
    array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, "RGB")
