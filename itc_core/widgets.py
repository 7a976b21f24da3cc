"""ipywidgets explorers for the notebooks. Under papermill they only display; no later cell reads their state."""

from __future__ import annotations

import io

import ipywidgets as W
from PIL import Image

__all__ = ["quality_explorer"]


def _png(image: Image.Image, scale: int = 4) -> bytes:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def quality_explorer(codec, image: Image.Image) -> W.Widget:
    """A slider over the preset's LIC qualities showing the decoded image and its real size."""
    qualities = codec.config.image_codec.qualities
    results = {q: codec.encode(image, q) for q in qualities}
    original = W.Image(value=_png(image), format="png")
    decoded = W.Image(format="png")
    label = W.HTML()
    slider = W.SelectionSlider(options=qualities, value=codec.config.image_codec.quality, description="quality")

    def show(change=None):
        r = results[slider.value]
        decoded.value = _png(r.reconstruction)
        label.value = f"<b>{len(r.data)} bytes</b>, {r.bpp:.4f} bpp (image strings {[len(s) for s in r.payload.strings]})"

    slider.observe(show, names="value")
    show()
    return W.VBox([slider, W.HBox([W.VBox([W.HTML("original"), original]), W.VBox([W.HTML("decoded"), decoded])]), label])
