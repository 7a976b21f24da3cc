"""ipywidgets explorers for the notebooks. Under papermill they only display; no later cell reads their state."""

from __future__ import annotations

import io

import ipywidgets as W
from PIL import Image

__all__ = ["quality_explorer", "caption_editor", "restoration_explorer", "method_comparison"]


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
        label.value = f"<b>{len(r.data)} bytes</b>, {r.bpp:.4f} bpp (latents z {r.bits['z']:.0f} + y {r.bits['y']:.0f} bits)"

    slider.observe(show, names="value")
    show()
    return W.VBox([slider, W.HBox([W.VBox([W.HTML("original"), original]), W.VBox([W.HTML("decoded"), decoded])]), label])


def caption_editor(lm, context_image: Image.Image, text: str = "") -> W.Widget:
    """Type a caption and see every coding method's bits update live (``lmm-ac`` looks at ``context_image``)."""
    from .caption_codec import CaptionCodingError, compare_methods

    box = W.Textarea(value=text, layout=W.Layout(width="100%", height="5em"), continuous_update=False)
    table = W.HTML()

    def show(change=None):
        try:
            payloads = compare_methods(box.value, lm, context_image)
        except CaptionCodingError as err:
            table.value = f"<i>{err}</i>"
            return
        rows = "".join(f"<tr><td>{m}</td><td style='text-align:right'>{p.bits}</td>"
                       f"<td style='text-align:right'>{'' if p.nll_bits is None else f'{p.nll_bits:.1f}'}</td></tr>"
                       for m, p in payloads.items())
        table.value = (f"<table><tr><th>method</th><th>bits</th><th>model NLL bits</th></tr>{rows}</table>"
                       f"<small>{len(box.value)} characters</small>")

    box.observe(show, names="value")
    show()
    return W.VBox([W.HTML("<b>Caption</b> (edit me)"), box, table])


def restoration_explorer(restorer, reconstruction: Image.Image, caption: str, referee=None,
                         original: Image.Image | None = None, quality: int | None = None) -> W.Widget:
    """Sliders for steps, guidance and seed, a colour-fix box and an editable caption; shows the restored image
    (and, given a ``referee``, its reading and distance to ``original``). Edit "red" to "blue" and watch.
    ``quality``, the reconstruction's rate point, sets the guidance slider to the preset's for that point."""
    steps = W.IntSlider(value=restorer.config.steps, min=1, max=20, description="steps")
    guidance = W.FloatSlider(value=restorer.config.guidance_at(quality), min=0.0, max=5.0, step=0.25,
                             description="guidance")
    seed = W.IntText(value=restorer.config.seed, description="seed")
    fix = W.Checkbox(value=restorer.config.colour_fix, description="colour fix")
    box = W.Textarea(value=caption, layout=W.Layout(width="100%", height="4em"), continuous_update=False)
    shown = W.Image(format="png")
    label = W.HTML()

    def show(change=None):
        out = restorer.restore(reconstruction, box.value, steps=steps.value, guidance=guidance.value, seed=seed.value,
                               colour_fix=fix.value)
        shown.value = _png(out)
        if referee is not None:
            reading = referee.read([out])[0]
            dist = f", distance to the original {float(referee.distance([out], [original])[0]):.4f}" if original else ""
            label.value = f"<small>referee reads: <i>{reading}</i>{dist}</small>"

    for w in (steps, guidance, seed, fix, box):
        w.observe(show, names="value")
    show()
    panels = [W.VBox([W.HTML("reconstruction"), W.Image(value=_png(reconstruction), format="png")]),
              W.VBox([W.HTML("restored"), shown])]
    if original is not None:
        panels.insert(0, W.VBox([W.HTML("original"), W.Image(value=_png(original), format="png")]))
    return W.VBox([W.HTML("<b>Caption</b> (edit me)"), box, W.HBox([steps, guidance]), W.HBox([seed, fix]),
                   W.HBox(panels), label])


def _metrics_line(row: dict) -> str:
    parts = []
    if row.get("referee_distance") is not None:
        parts.append(f"distance {row['referee_distance']:.3f}")
    if row.get("referee_exact") is not None:
        parts.append("exact scene" if row["referee_exact"] else "not exact")
    if row.get("psnr") is not None:
        parts.append(f"PSNR {row['psnr']:.1f} dB")
    if row.get("clip_image") is not None:
        parts.append(f"CLIP {row['clip_image']:.3f}")
    return ", ".join(parts)


def method_comparison(outputs, names: list[str] | None = None) -> W.Widget:
    """Pick an image and a rate level: every method's decoded image side by side, with its bpp and key metrics.

    ``outputs`` is a :class:`itc_core.report.MethodOutputs`; each (image, method) is decoded on first view
    and cached, so moving back to a seen image or rate is instant. Level 1 is each method's lowest rate
    point; a method with fewer points shows its highest.
    """
    names = list(names or outputs.names)
    methods = outputs.methods
    image = W.Dropdown(options=names, value=names[0], description="image")
    level = W.IntSlider(value=1, min=1, max=outputs.levels(), description="rate level")
    size = W.Layout(width="128px", height="128px")  # every panel the same size, whatever its label's width
    original = W.Image(format="png", layout=size)
    shown = {m: W.Image(format="png", layout=size) for m in methods}
    labels = {m: W.HTML() for m in methods}

    def show(change=None):
        original.value = _png(outputs.item(image.value).image, scale=2)
        for method, row in outputs.at_level(image.value, level.value - 1).items():
            shown[method].value = _png(row["decoded"], scale=2)
            reading = f"<br><i>reads: {row['reading']}</i>" if row.get("reading") else ""
            labels[method].value = (f"<div style='width:15em'><b>{method} {row['point']}: {row['bpp']:.4f} bpp</b>"
                                    f"<br><small>{_metrics_line(row)}{reading}</small></div>")

    image.observe(show, names="value")
    level.observe(show, names="value")
    show()
    panels = [W.VBox([W.HTML("<b>original</b>"), original])]
    panels += [W.VBox([shown[m], labels[m]]) for m in methods]
    return W.VBox([W.HBox([image, level]), W.HBox(panels, layout=W.Layout(flex_flow="row wrap"))])
